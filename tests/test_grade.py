"""`ftcourse grade` against hostile submissions: each must score 0, leave honest classmates graded right and their
files unchanged, write nothing outside its sandbox, and never stop the run."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import ftcourse
from ftcourse import capstone, cli
from ftcourse.grading import grade, sandbox, table

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(ftcourse.__file__).resolve().parent
RIGHT = """def freeze_first(model, k):
    for name in model.stage_names[:k]:
        model.stage(name).requires_grad_(False)
    return model

def train_mode(model, frozen):
    import torch
    model.train()
    for name in frozen:
        getattr(model, name).requires_grad_(False)
        for module in getattr(model, name).modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
    return model
"""
WRONG = RIGHT.replace("stage_names[:k]", "stage_names[:k + 1]")
NOTHING = "def freeze_first(model, k):\n    return model\n\ndef train_mode(model, frozen):\n    return model\n"
CHECKS = ["from ftcourse import checks", "checks.check_freeze_first(freeze_first)",
          "checks.check_train_mode(train_mode)"]
namespaces = pytest.mark.skipif(sandbox.isolation() != "namespaces",
                                reason="only the namespaces sandbox hides the machine from a submission")


def notebook(path: Path, *cells: str, assignment="02", code=NOTHING):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (code, *cells, *CHECKS)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if assignment:
        nb.metadata["ftcourse"] = {"assignment": assignment}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def frame(payload: str, writer: str = "frames") -> str:
    """Code that writes a frame holding ``payload`` (an expression) to the answers descriptor: in the worker's own
    format (``frames``), as a ``torch.save`` pickle, or as a raw pickle (neither of which the grader reads)."""
    save = {"frames": "from ftcourse.grading import frames\n_data = frames.encode(_payload)[8:]",
            "torch": "import io, torch\n_buffer = io.BytesIO()\ntorch.save(_payload, _buffer)\n"
                     "_data = _buffer.getvalue()",
            "pickle": "import pickle\n_data = pickle.dumps(_payload)"}[writer]
    return f"""import os, struct
_payload = {payload}
{save}
os.write(int(os.environ["FTCOURSE_ANSWERS_FD"]), struct.pack(">Q", len(_data)) + _data)"""


# The grader, with its own memory watched: the peak of its anonymous memory (RssAnon, sampled every 20 ms: what
# decoding or building what a student sent would fill) and VmHWM (all it ever had resident, the shared libraries'
# pages included: about 0.33 GB of it is torch's code, mapped from its files).
MEASURED_GRADER = """import sys, threading, time
from ftcourse import cli
peak = [0]
def watch():
    while True:
        for line in open('/proc/self/status'):
            if line.startswith('RssAnon:'):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
code = cli.main(sys.argv[1:])
hwm = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))
print(f'grader peak memory {peak[0]} KiB anonymous, {hwm} KiB resident')
sys.exit(code)"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run over honest students and every hostile probe; returns (rows, output, paths)."""
    tmp = tmp_path_factory.mktemp("grading")
    folder, out = tmp / "submissions", tmp / "out" / "grades.csv"
    out.parent.mkdir()
    home_marker = Path.home() / f"ftcourse-pwned-{os.getpid()}"
    secret_file = tmp / "secret.txt"
    secret_file.write_text("the exam's answers")
    token = f"ftcourse-daemon-{os.getpid()}-{time.time_ns()}"
    alice = notebook(folder / "alice" / "assignment.ipynb", code=RIGHT)
    notebook(folder / "bob.ipynb", code=WRONG)
    probes = {
        "forger": [  # print PASSED, replace the checks and their judges, claim every exercise
            "from ftcourse import checks\nfor e in checks.GRADED.values(): print(f'PASSED exercise {e.id}')",
            "checks.GRADED.clear(); checks.judge_freeze_first = lambda *a: 'ok'; checks.plain = lambda v: 1",
        ],
        "frames": [  # forge the answers channel: a claim of passing, then a pickle that would run code
            frame("{'kind': 'ready', 'errors': []}"),
            frame("{'kind': 'answers', 'exercises': {'02.1': {'passed': True}, '02.2': {'value': 'PASSED'}}}"),
            "class Evil:\n    def __reduce__(self):\n        return (os.system, ('touch /tmp/pwned',))\n"
            + frame("Evil()", writer="pickle"),
        ],
        "patcher": ["import ftcourse.train\nftcourse.train.evaluate = lambda *a, **k: {'accuracy': 1.0}",
                    f"open({str(PACKAGE / 'checks.py')!r}, 'a').write('\\nGRADED.clear()\\n')"],
        "vandal": [f"import shutil\nshutil.rmtree({str(folder)!r}, ignore_errors=True)",
                   f"open({str(alice)!r}, 'w').write('gone')",
                   "open('../alice/assignment.ipynb', 'w').write('gone')",
                   f"open({str(out)!r}, 'w').write('student,total\\nvandal,99\\n')"],
        "escaper": [f"open({str(home_marker)!r}, 'w').write('x')",
                    "import os\nopen(os.path.expanduser('~/.bashrc'), 'a').write('echo pwned')",
                    "open('../pwned', 'w').write('x')"],
        "daemon": [f"""import subprocess, sys
subprocess.Popen(["setsid", sys.executable, "-c", '''import time
while True:
    try:
        open({str(out)!r}, "w").write("student,total\\\\nbob,99\\\\n")
    except OSError:
        pass
    time.sleep(0.2)''', {token!r}], start_new_session=True)"""],
        "killer": ["import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
                   f"os.kill({os.getpid()}, signal.SIGKILL)", "os.kill(-1, signal.SIGKILL)"],
        "forker": ["import os, time\nfor _ in range(100000):\n    if os.fork() == 0:\n        time.sleep(600)\n"
                   "        os._exit(0)"],
        "glutton": ["hoard = bytearray(2 * 2**30)\nhoard[::4096] = b'x' * len(hoard[::4096])"],
        "shouter": ["import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 2**20)"],
        "looper": ["while True:\n    pass"],
        "stubborn": ["while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n"
                     "        pass"],
        "=HYPERLINK(\"x\";\"click\")": [],
        # The second round: what comes out of a sandbox is decoded with bounds, and read by the grader's own code.
        "nester": [frame("{'kind': 'ready', 'errors': []}"),  # an error that is a list nested 25 deep
                   frame("{'kind': 'answers', 'exercises': {'02.1': [{'error': _deep}] * 3, '02.2': [{'value': 1}] * 2}}"
                         ).replace("_payload = ", "_deep = []\nfor _ in range(25):\n    _deep = [_deep]\n_payload = ")],
        "parser": [frame("{'kind': 'ready', 'errors': []}"),  # JSON nested 100,000 deep
                   "import os, struct\nfrom safetensors.torch import save\n"
                   "_data = save({}, metadata={'message': '[' * 100_000 + ']' * 100_000})\n"
                   "os.write(int(os.environ['FTCOURSE_ANSWERS_FD']), struct.pack('>Q', len(_data)) + _data)"],
        "bomber": [  # a pickle whose dict key is a tuple graph 64 levels deep: hashing it would never end
            "import pickle\n_node = ()\nfor _ in range(64):\n    _node = (_node, _node)\n"
            "_bomb = b'\\x80\\x02}' + pickle.dumps(_node, protocol=2)[2:-1] + b'K\\x01s.'\n"
            + frame("0").replace("_data = _buffer.getvalue()", "_data = _bomb").replace(
                "from ftcourse.grading import frames\n_data = frames.encode(_payload)[8:]", "_data = _bomb")],
        "inflater": [  # a tensor header that claims 2**34 floats and sends 16 bytes
            "import json, os, struct, torch\nfrom safetensors.torch import save\n"
            "_good = save({'t0': torch.zeros(4)}, metadata={'message': json.dumps({'$tensor': 't0'})})\n"
            "_n = int.from_bytes(_good[:8], 'little')\n_header = json.loads(_good[8:8 + _n])\n"
            "_header['t0']['shape'] = [2**34]\n_text = json.dumps(_header).encode()\n_text += b' ' * (-len(_text) % 8)\n"
            "_data = len(_text).to_bytes(8, 'little') + _text + _good[8 + _n:]\n"
            "os.write(int(os.environ['FTCOURSE_ANSWERS_FD']), struct.pack('>Q', len(_data)) + _data)"],
        "painter": ["import os, sys\nprint('\\x1b[2K\\ralice: 2/2 (1 s) ok \\x1b[31m')\nsys.stdout.flush()\n"
                    "os._exit(3)"],
        # graded beside a classmate (--jobs 2): looks for other sandboxes' notebooks and processes, and says what
        # it found in the error its function raises (the only channel a student has to the table)
        "peeker": ["import glob, os, time\ntime.sleep(2)\n"
                   "_files = glob.glob('/tmp/**/*.ipynb', recursive=True) + glob.glob('/sandbox/**/*.ipynb', "
                   f"recursive=True) + glob.glob({str(folder)!r} + '/*')\n"
                   "_files = [p for p in _files if p != '/sandbox/notebook.ipynb']\n"
                   "_workers = [p for p in os.listdir('/proc') if p.isdigit() and b'grading.worker' in "
                   "open(f'/proc/{p}/cmdline', 'rb').read()]\n"
                   "def train_mode(model, frozen):\n    raise ValueError(f'peeked: {len(_files)} files, "
                   "{len(_workers)} workers')"],
    }
    for name, cells in probes.items():
        notebook(folder / f"{name}.ipynb", *cells)
    capstone_probes = {  # the capstone: a model that names a huge network; a recipe that reads the class names
        "kate": "def recipe(train, budget):\n    from ftcourse import capstone\n    model = capstone.network()\n"
                "    model.config = {'num_classes': 5, 'width': 4096, 'blocks': (16, 16, 16, 16), 'stem_stride': 1}\n"
                "    return model",
        "liam": "def recipe(train, budget):\n    raise ValueError('classes: ' + ', '.join(train.classes))"}
    for name, code in capstone_probes.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["ftcourse"] = {"assignment": "10"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    for copy in ("a", "b", "c"):  # one student, three tries at one assignment: none is graded
        notebook(folder / "sly" / f"try_{copy}.ipynb", code=RIGHT)
    notebook(folder / "\x1b[31mred.ipynb", code=RIGHT)  # a file name that would colour the teacher's terminal
    tagged = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(RIGHT),
                                             *[nbformat.v4.new_code_cell(c) for c in CHECKS]])
    tagged.metadata.update({"ftcourse": {"assignment": "02"}, "kernelspec": [1, 2]})
    tagged.cells.append(nbformat.v4.new_markdown_cell("my justification"))
    tagged.cells[-1].metadata["tags"] = 5  # not a list: nbformat reads it with a warning
    (folder / "tara.ipynb").write_text(json.dumps(tagged))
    (folder / "eve.ipynb").symlink_to(secret_file)
    (folder / "ghost.ipynb").symlink_to(tmp / "nowhere.ipynb")
    notebook(folder / "nina.ipynb", code=RIGHT)
    notebook(folder / "nina" / "work.ipynb", code=WRONG)
    notebook(folder / ".ipynb_checkpoints" / "alice-checkpoint.ipynb", code=RIGHT)
    notebook(folder / "olaf.ipynb", code=RIGHT, assignment=None)  # not an exercise notebook: no assignment id
    (folder / "notes.txt").write_text("not a notebook")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}
    package_before = {p: p.read_bytes() for p in PACKAGE.rglob("*.py")}
    start = time.monotonic()
    measured = MEASURED_GRADER
    result = subprocess.run([sys.executable, "-c", measured, "grade", str(folder), "--out", str(out), "--jobs", "2",
                             "--timeout", "25", "--cell-timeout", "5"], capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - start
    time.sleep(1)  # give a surviving daemon the chance to show itself
    rows = {r["student"]: r for r in csv.DictReader(out.open())}
    return {"rows": rows, "result": result, "seconds": seconds, "before": before, "package_before": package_before,
            "home_marker": home_marker, "token": token, "out": out, "folder": folder}


@namespaces
@pytest.mark.slow  # one grading run of 20 submissions, a few of which run until their time limits
def test_honest_students_are_graded_right_whatever_their_classmates_did(graded):
    rows, result = graded["rows"], graded["result"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert rows["alice"]["02.1"] == rows["alice"]["02.2"] == "passed", rows["alice"]
    assert (rows["alice"]["points"], rows["alice"]["possible"], rows["alice"]["assignment"]) == ("2", "2", "02")
    assert (rows["bob"]["02.1"], rows["bob"]["02.2"], rows["bob"]["points"]) == ("wrong", "passed", "1")
    assert "loop over model.stage_names[:k]" in rows["bob"]["messages"]  # the hint, in kind
    assert "expected" not in rows["bob"]["messages"] and "trainable stages are" not in rows["bob"]["messages"]
    assert rows["tara"]["points"] == "2", rows["tara"]  # odd metadata types cost an honest student nothing


@namespaces
@pytest.mark.slow
@pytest.mark.parametrize("probe", ["forger", "frames", "patcher", "vandal", "escaper", "daemon", "killer", "forker",
                                   "glutton", "shouter", "looper", "stubborn", "nester", "parser", "bomber",
                                   "inflater", "painter", "sly", "kate", "liam"])
def test_every_hostile_submission_scores_zero(graded, probe):
    row = graded["rows"][probe]
    assert row["points"] == "0", row


@namespaces
@pytest.mark.slow
def test_the_reasons_are_in_the_table(graded):
    rows = graded["rows"]
    assert "more than 20 MB of output" in rows["shouter"]["status"]
    assert "timed out while the notebook ran" in rows["stubborn"]["status"]
    assert "refused eve.ipynb: a symbolic link" in rows["eve"]["status"]
    assert "refused ghost.ipynb: a symbolic link" in rows["ghost"]["status"]
    assert "no ftcourse assignment id" in rows["olaf"]["status"]
    assert "3 notebooks for assignment 02" in rows["sly"]["status"] and "none of them graded" in rows["sly"]["status"]
    for probe in ("parser", "bomber", "inflater"):
        assert "sent something that is not an answer" in rows[probe]["status"], rows[probe]
    assert "02.1" in rows["nester"]["messages"] and rows["nester"]["points"] == "0", rows["nester"]
    assert rows["kate"]["10.1"] == "wrong" and "not the lab's network" in rows["kate"]["messages"], rows["kate"]
    assert rows["kate"]["justification untouched"] == "yes"  # no justification cell at all
    assert rows["sly"]["02.1"] == "not graded" and rows["olaf"]["assignment"] == ""
    assert rows["stubborn"]["02.1"] == "crashed" and rows["bob"]["02.1"] == "wrong"
    assert "peeked: 0 files, 1 workers" in rows["peeker"]["messages"], rows["peeker"]  # alone, though not graded alone
    assert "classes: class 0, class 1, class 2, class 3, class 4" in rows["liam"]["messages"], rows["liam"]
    assert rows["nina (nina.ipynb)"]["points"] == "2" and rows["nina (nina/)"]["points"] == "1"
    assert "name clash" in rows["nina (nina.ipynb)"]["status"]
    assert "exam" not in graded["out"].read_text()  # the symlinked secret was never read into the table
    assert not any("checkpoint" in s for s in rows)


@namespaces
@pytest.mark.slow
def test_nothing_outside_the_sandboxes_changed_and_nothing_survived(graded):
    for path, content in graded["before"].items():
        assert path.read_bytes() == content, f"{path} was changed"
    for path, content in graded["package_before"].items():
        assert path.read_bytes() == content, f"the installed package's {path.name} was changed"
    assert not graded["home_marker"].exists()
    assert not (graded["folder"].parent / "pwned").exists() and not Path("/tmp/pwned").exists()
    alive = subprocess.run(["pgrep", "-f", graded["token"]], capture_output=True, text=True).stdout.split()
    assert not alive, f"a daemon outlived its sandbox: {alive}"
    rows = graded["rows"]
    assert rows["bob"]["points"] == "1" and "vandal" in rows  # the table is the grader's, not the daemon's


@namespaces
@pytest.mark.slow
def test_every_entry_gives_a_row_or_a_reason_and_formulas_are_escaped(graded):
    rows, stdout = graded["rows"], graded["result"].stdout
    print(stdout, f"{graded['seconds']:.0f} s")
    assert "skipped, because:" in stdout and "notes.txt: not a notebook" in stdout
    assert ".ipynb_checkpoints: hidden" in stdout
    assert "'=HYPERLINK(\"x\";\"click\")" in rows  # the name is text, not a formula
    text = graded["out"].read_text()
    assert "\n=" not in text and ",=" not in text


def test_out_is_checked_before_anyone_is_graded(tmp_path, capsys):
    folder = tmp_path / "submissions"
    notebook(folder / "alice.ipynb", code=RIGHT)
    assert cli.main(["grade", str(folder), "--out", str(tmp_path / "no" / "such" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["grade", str(folder), "--out", str(folder / "grades.csv")]) == 2
    assert "inside the submissions folder" in capsys.readouterr().err


def test_discovery_reads_assignments_from_metadata_not_file_names(tmp_path):
    folder = tmp_path / "submissions"
    notebook(folder / "01_x.ipynb", assignment="02")  # a misleading name changes nothing
    notebook(folder / "zoe" / "anything.ipynb", assignment="05")
    found, skipped = grade.discover(folder)
    assignments = {s.student: [grade.assignment_of(grade.read_notebook(p)) for p in s.notebooks] for s in found}
    assert assignments == {"01_x": ["02"], "zoe": ["05"]} and skipped == []


def test_csv_cells_that_look_like_formulas_are_escaped(tmp_path):
    out = tmp_path / "t.csv"
    grade.write_table([{"student": "=1+1", "points": 2, "messages": "@SUM(A1)", "status": "-2+3"}],
                      ["student", "points", "messages", "status"], out)
    row = next(csv.DictReader(out.open()))
    assert row == {"student": "'=1+1", "points": "2", "messages": "'@SUM(A1)", "status": "'-2+3"}


@pytest.mark.slow  # grades three students, then again with --resume
def test_a_rerun_with_resume_keeps_finished_rows_and_regrades_changed_notebooks(tmp_path):
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    notebook(folder / "alice.ipynb", code=RIGHT)
    notebook(folder / "bob.ipynb", code=WRONG)
    assert cli.main(["grade", str(folder), "--out", str(out), "--timeout", "60"]) == 0
    notebook(folder / "bob.ipynb", code=RIGHT)  # bob fixed his notebook
    rows = grade.grade(folder, out, timeout=60, resume=True, verbose=False)
    assert {r["student"]: str(r["points"]) for r in rows} == {"alice": "2", "bob": "2"}
    with out.open() as f:
        assert {r["student"]: r["points"] for r in csv.DictReader(f)} == {"alice": "2", "bob": "2"}


@pytest.mark.slow  # trains the capstone's recipes in sandboxes
def test_the_capstone_is_judged_on_a_secret_and_a_lookup_or_scratch_recipe_fails(tmp_path):
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    folder.mkdir()
    shutil.copy(ROOT / "solutions" / "10_capstone.ipynb", folder / "erin.ipynb")
    shutil.copy(ROOT / "exercises" / "10_capstone.ipynb", folder / "frank.ipynb")
    lookup = """def recipe(train, budget):  # memorise the practice test set: the answer key of another target
    import torch
    from ftcourse import capstone, models, train as engine
    _, test = capstone.practice()
    model = models.replace_head(models.pretrained("lab"), len(test.classes))
    engine.fit(model, test, steps=100, lr=0.01, batch_size=32, progress=False)
    return model"""
    scratch = """def recipe(train, budget):  # from scratch, and hide the compute from the image counter
    import torch
    from ftcourse import capstone, train as engine
    torch.nn.modules.module._global_forward_hooks.clear()
    model = capstone.network()  # the course's network, untrained
    engine.fit(model, train, steps=budget // 32, lr=0.05, batch_size=32, augment=True, progress=False)
    return model"""
    slow = "def recipe(train, budget):\n    import time\n    time.sleep(100_000)"
    deaf = frame("{'kind': 'ready', 'errors': []}") + "\nimport time\ntime.sleep(100_000)"  # never reads the request
    for name, code in (("gina", lookup), ("hank", scratch), ("ivan", slow), ("jack", deaf)):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["ftcourse"] = {"assignment": "10"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    assert capstone.definition(12345)["kind"] == "shape"  # where training from scratch fails
    rows = {r["student"]: r for r in grade.grade(folder, out, timeout=300, secret=12345, verbose=False)}
    assert rows["erin"]["10.1"] == "passed" and "PASSED 10.1: test accuracy" in rows["erin"]["messages"], rows["erin"]
    assert 0.5 < float(rows["erin"]["capstone score"]) == rows["erin"]["points"], rows["erin"]  # above the pass mark
    assert rows["erin"]["rubric"].startswith("source: ") and rows["hank"]["capstone score"] == 0
    assert rows["erin"]["status"] == "erin.ipynb: ok", rows["erin"]  # every cell of the worked solution ran cleanly
    assert "Your justification" in rows["erin"]["justification"]
    assert rows["erin"]["justification untouched"] == "yes"  # the worked solution leaves the template's text
    assert rows["frank"]["10.1"] == "not attempted" and "not done yet" in rows["frank"]["messages"]
    assert rows["frank"]["status"] == "frank.ipynb: not attempted", rows["frank"]  # the untouched exercise notebook
    assert rows["frank"]["justification untouched"] == "yes"  # still the template's text
    assert rows["gina"]["10.1"] == "wrong" and "test accuracy" in rows["gina"]["messages"], rows["gina"]
    assert rows["hank"]["10.1"] == "wrong" and "test accuracy" in rows["hank"]["messages"], rows["hank"]
    assert rows["ivan"]["10.1"] == "crashed" and "time limit" in rows["ivan"]["status"], rows["ivan"]
    assert rows["jack"]["10.1"] == "crashed", rows["jack"]  # it stopped reading, and the grader went on


def _workers_running() -> bool:
    """Whether a grading worker (``python -I -m ftcourse.grading.worker``) runs on this machine: the worker itself,
    not the ``unshare`` that starts it (whose command line holds the worker's as text)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"\x00-m\x00ftcourse.grading.worker\x00" in cmdline.read_bytes():
                return True
        except OSError:  # the process ended meanwhile
            pass
    return False


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler in this process for the test, and what was there before afterwards.

    A test run started in the background (``pytest &``, ``nohup``, some CI runners) has Ctrl-C ignored, and so does
    every process it starts: that, not the grader, made this file's Ctrl-C test hang in full-suite runs."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)


def _default_ctrl_c():
    """In a child before exec: Ctrl-C at its default, as for a command typed in a terminal, so that Python installs
    its handler (a child inherits an ignored signal, and Python leaves an ignored Ctrl-C ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_first_ctrl_c_is_deferred_to_a_check_and_a_second_one_interrupts_at_once(python_ctrl_c):
    import signal

    before = signal.getsignal(signal.SIGINT)
    with grade.CtrlC() as ctrl_c:
        ctrl_c.check()  # not pressed: nothing happens
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler has run by now: it only noted the press
        assert ctrl_c.pressed
        with pytest.raises(grade.Interrupted):
            ctrl_c.check()
        with pytest.raises(KeyboardInterrupt):  # the second press: the previous handler, at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_an_ignored_ctrl_c_stays_ignored(python_ctrl_c):
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with grade.CtrlC() as ctrl_c:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        ctrl_c.check()  # not pressed, as far as the grader knows
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


@pytest.mark.slow  # grades until the first row is written, then presses Ctrl-C while the second notebook runs
def test_ctrl_c_keeps_every_finished_row_and_a_resume_finishes_the_rest(tmp_path):
    import signal

    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    notebook(folder / "alice.ipynb", code=RIGHT)
    notebook(folder / "bob.ipynb", "import time\ntime.sleep(600)", code=WRONG)
    process = subprocess.Popen([sys.executable, "-m", "ftcourse.cli", "grade", str(folder), "--out", str(out),
                                "--cell-timeout", "900", "--jobs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # a stack dump if it hangs (below)
                               preexec_fn=_default_ctrl_c)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out.exists() and "alice" in out.read_text()):
        time.sleep(0.5)
    while time.monotonic() < deadline and not _workers_running():  # bob's notebook has started in its sandbox
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it ignored Ctrl-C: where is it stuck? faulthandler prints every thread
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate(timeout=30)
        pytest.fail("the grader did not stop within 60 s of Ctrl-C; its threads:\n" + err[-6000:])
    assert process.returncode == 130, (process.returncode, err[-3000:])
    assert "--resume" in err and "Traceback" not in err, err[-3000:]
    with out.open() as f:
        assert [r["student"] for r in csv.DictReader(f)] == ["alice"]
    notebook(folder / "bob.ipynb", code=WRONG)
    rows = grade.grade(folder, out, resume=True, verbose=False)
    assert [(r["student"], str(r["points"])) for r in rows] == [("alice", "2"), ("bob", "1")]


@namespaces
@pytest.mark.slow
def test_no_control_character_reaches_the_terminal_or_the_table_and_memory_stays_under_a_gigabyte(graded):
    """The painter's last line (an erase-line and a carriage return that would print "alice: 2/2 ok" over its
    own line) and a file name holding an escape reach the table and the terminal as text; and the grader's own
    memory, having decoded every hostile frame above, peaked under 1 GB."""
    rows, stdout, text = graded["rows"], graded["result"].stdout, graded["out"].read_text()
    assert "\x1b" not in stdout and "\x1b" not in text and "\r" not in stdout.replace("\r\n", "\n")
    assert "\\x1b[2K\\x0dalice: 2/2" in rows["painter"]["status"], rows["painter"]["status"]
    assert rows["\\x1b[31mred"]["points"] == "2"
    anonymous, resident = (int(word) for word in stdout.split("grader peak memory ")[1].split()[:4:3])
    print(f"grader peak memory over {len(rows)} rows: {anonymous / 2**20:.2f} GiB anonymous, "
          f"{resident / 2**20:.2f} GiB resident with the shared libraries")
    assert anonymous < 2**20, f"the grader's own memory peaked at {anonymous / 2**20:.2f} GiB"


def test_a_bug_in_the_grader_gives_one_internal_error_row_and_resume_tries_it_once_more(tmp_path, monkeypatch):
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    notebook(folder / "alice.ipynb", code=RIGHT)
    notebook(folder / "bob.ipynb", code=RIGHT)
    calls = []

    def grade_notebook(path, nb, assignment, settings, student="", digest=""):
        calls.append(student)
        if student == "bob":
            raise RuntimeError("a bug the grader hit")
        return {e: ("passed", f"PASSED {e}") for e in grade.exercises_of(assignment)}, "ok"

    monkeypatch.setattr(grade, "grade_notebook", grade_notebook)
    monkeypatch.setattr(grade, "check_sandbox", lambda settings: None)
    rows = {r["student"]: r for r in grade.grade(folder, out, verbose=False)}
    assert rows["alice"]["points"] == 2 and rows["bob"]["points"] == 0
    assert rows["bob"]["status"].startswith("internal error (try 1 of 2): RuntimeError: a bug the grader hit")
    rows = {r["student"]: r for r in grade.grade(folder, out, resume=True, verbose=False)}
    assert calls == ["alice", "bob", "bob"]  # alice kept; bob tried once more
    assert rows["bob"]["status"].startswith("internal error (try 2 of 2)") and "report it" in rows["bob"]["status"]
    grade.grade(folder, out, resume=True, verbose=False)
    assert calls == ["alice", "bob", "bob"]  # the second failure is kept
    assert oct(out.stat().st_mode & 0o777) == oct(table.TABLE_MODE)


def test_odd_metadata_is_read_without_an_exception():
    weird = {"metadata": [1, 2], "cells": [{"cell_type": "markdown", "metadata": {"tags": 5}, "source": "x"},
                                         {"cell_type": "markdown", "metadata": [], "source": 3},
                                         {"cell_type": "markdown", "metadata": {"tags": ["justification"]},
                                          "source": ["because ", "reasons"]}, "not a cell"]}
    assert grade.assignment_of(weird) is None and grade.assignment_of([]) is None
    assert grade.justification_of(weird) == "because reasons"


def test_each_student_and_each_version_of_a_submission_gets_its_own_questions():
    settings = grade.Settings(secret=7)
    amy, ben, amy_again = (settings.inputs("03.2", s, d) for s, d in (("amy", "d1"), ("ben", "d1"), ("amy", "d2")))
    assert len(amy) == 4 and repr(amy) != repr(ben) and repr(amy) != repr(amy_again)
    assert repr(amy) == repr(settings.inputs("03.2", "amy", "d1"))  # the same submission: the same questions


def test_control_characters_are_shown_as_escapes_and_spreadsheet_formulas_as_text():
    assert grade.printable("ok\x1b[2K\r\n\u202eevil\u0007 é") == "ok\\x1b[2K\\x0d\\x0a\\u202eevil\\x07 é"
    for start in (" =1+1", "\n=1", "\uff1d1+1", "\uff0bx", "\t=1"):
        assert grade.escape(start) == "'" + start
    assert grade.escape("plain") == "plain" and grade.escape(3) == 3


def test_the_sandbox_must_import_the_ftcourse_that_grades(tmp_path):
    settings = grade.Settings(secret=1)
    grade.check_sandbox(settings)  # this machine's grader: the same package, nothing raised
    with pytest.raises(RuntimeError, match="does not run the ftcourse this grader runs.*Every student would score zero"):
        grade.check_sandbox(settings, expected=(str(tmp_path / "elsewhere" / "ftcourse" / "__init__.py"),
                                                ftcourse.__version__))
