"""The Gradescope autograder bundle (``ftcourse autograder``): its zip, its setup.sh, and its run_autograder run end
to end against a fake ``/autograder`` tree, with ``results.json`` checked against Gradescope's documented format."""

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from ftcourse import cli
from ftcourse.grading import course_secret, gradescope
from test_grade import RIGHT, WRONG, notebook

# Gradescope's results.json, as its specification describes it
# (https://gradescope-autograders.readthedocs.io/en/latest/specs/#output-format).
FORMATS = ["text", "html", "simple_format", "md", "ansi"]
VISIBILITY = ["hidden", "after_due_date", "after_published", "visible"]
RESULTS_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": {"enum": FORMATS},
        "test_output_format": {"enum": FORMATS},
        "test_name_format": {"enum": FORMATS},
        "visibility": {"enum": VISIBILITY},
        "stdout_visibility": {"enum": VISIBILITY},
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "score": {"type": "number"}, "max_score": {"type": "number"},
                "status": {"enum": ["passed", "failed"]}, "name": {"type": "string"},
                "name_format": {"enum": FORMATS}, "number": {"type": "string"}, "output": {"type": "string"},
                "output_format": {"enum": FORMATS}, "tags": {"type": "array", "items": {"type": "string"}},
                "visibility": {"enum": VISIBILITY}, "extra_data": {"type": "object"}},
            "additionalProperties": False}},
        "leaderboard": {"type": "array"},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """An autograder zip for assignment 02, exercise 02.1 worth 2 points, and the secret it was made with."""
    folder = tmp_path_factory.mktemp("teacher")
    secret = folder / "course.secret"
    course_secret.create(secret)
    out = folder / "autograder-02.zip"
    assert cli.main(["autograder", "02", "--secret-file", str(secret), "--out", str(out), "--weight", "02.1=2",
                     "--visibility", "after_published"]) == 0
    return out, secret


def autograder_tree(tmp_path: Path, bundle: Path) -> Path:
    """Gradescope's layout: the zip extracted in source/, run_autograder beside it, submission/ and results/."""
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    with zipfile.ZipFile(bundle) as z:
        z.extractall(root / "source")  # as Gradescope's unzip would: modes are not kept
    (root / "run_autograder").write_bytes((root / "source" / "run_autograder").read_bytes())
    (root / "run_autograder").chmod(0o755)
    return root


def run_autograder(root: Path, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "FTCOURSE_PYTHON": sys.executable}
    return subprocess.run(["bash", str(root / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=root)


def test_the_zip_holds_the_two_scripts_at_its_root_the_secret_the_settings_and_ftcourse(bundle):
    out, secret = bundle
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the secret
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in z.infolist()}
        config = json.loads(z.read(gradescope.CONFIG))
        assert z.read("course.secret") == secret.read_bytes()
        wheel = next(n for n in names if n.endswith(".whl"))
        (Path(out.parent) / wheel).write_bytes(z.read(wheel))
    assert {"setup.sh", "run_autograder", "course.secret", gradescope.CONFIG} <= set(names)
    assert all("/" not in n for n in names)  # at the zip's root, as Gradescope looks for them
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755 and modes["course.secret"] == 0o600
    assert config["assignment"] == "02" and config["weights"] == {"02.1": 2.0}
    assert config["visibility"] == "after_published"
    assert config["secret"] == course_secret.fingerprint(course_secret.read(secret))
    with zipfile.ZipFile(out.parent / wheel) as w:
        assert "ftcourse/grading/gradescope.py" in w.namelist()
        assert not any("__pycache__" in n for n in w.namelist())
    for script in ("setup.sh", "run_autograder"):
        with zipfile.ZipFile(out) as z:
            text = z.read(script).decode()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0, script


def test_a_bundle_is_refused_for_an_unknown_assignment_weight_or_visibility(tmp_path, bundle, capsys):
    _, secret = bundle
    for argv, said in ([["06"], "no assignment '06'"], [["02", "--weight", "03.1=2"], "not exercises of"],
                       [["02", "--wheel", str(secret)], "give an ftcourse wheel"]):
        assert cli.main(["autograder", *argv, "--secret-file", str(secret), "--out", str(tmp_path / "x.zip")]) == 2
        assert said in capsys.readouterr().err
    loose = tmp_path / "loose.secret"
    loose.write_bytes(secret.read_bytes())
    loose.chmod(0o644)
    assert cli.main(["autograder", "02", "--secret-file", str(loose), "--out", str(tmp_path / "x.zip")]) == 2
    assert "chmod 600" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_setup_installs_torch_cpu_and_the_bundled_ftcourse_in_a_venv_and_locks_the_secret_away(tmp_path, bundle):
    root = autograder_tree(tmp_path, bundle[0])
    log, fake = tmp_path / "log", tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(  # stands in for the image's python3: records, and makes a venv that records
        '#!/bin/sh\necho "python3 $*" >> "$LOG"\n'
        'if [ "$1" = "-m" ] && [ "$2" = "venv" ] && [ "$3" != "--help" ]; then\n'
        '  mkdir -p "$3/bin"\n  printf \'#!/bin/sh\\necho "venv $*" >> "$LOG"\\n\' > "$3/bin/python"\n'
        '  chmod 700 "$3/bin/python"\nfi\n')
    (fake / "python3").chmod(0o755)
    venv = tmp_path / "opt" / "ftcourse"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LOG": str(log), "AUTOGRADER_ROOT": str(root),
           "FTCOURSE_VENV": str(venv)}
    result = subprocess.run(["bash", str(root / "source" / "setup.sh")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    import torch
    import torchvision

    torch_line = next(line for line in lines if "torch==" in line)
    assert f"--index-url {gradescope.TORCH_CPU_INDEX}" in torch_line
    assert f"torch=={torch.__version__.split('+')[0]}" in torch_line
    assert f"torchvision=={torchvision.__version__.split('+')[0]}" in torch_line
    wheel = next(p.name for p in (root / "source").glob("ftcourse-*.whl"))
    assert any(line.startswith("venv -m pip install") and line.endswith(wheel) for line in lines), lines
    assert lines[-1] == f"venv -m ftcourse.grading.gradescope --check {root}"
    assert lines[0] == f"python3 -m venv {venv}"
    assert stat.S_IMODE(os.stat(venv / "bin" / "python").st_mode) & 0o005 == 0o005  # nobody may run it
    assert stat.S_IMODE((root / "source").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "source" / "course.secret").stat().st_mode) == 0o600


def test_run_autograder_grades_the_submission_and_writes_results_in_gradescopes_format(tmp_path, bundle):
    root = autograder_tree(tmp_path, bundle[0])
    (root / "source" / "course.secret").chmod(0o644)  # as unzipped: run_autograder makes it private again
    notebook(root / "submission" / "02_freezing.ipynb", code=RIGHT)
    notebook(root / "submission" / "old" / "03.ipynb", assignment="03")  # another assignment: looked at, not graded
    (root / "submission" / ".ipynb_checkpoints").mkdir()
    notebook(root / "submission" / ".ipynb_checkpoints" / "02_freezing-checkpoint.ipynb", code=WRONG)
    check = subprocess.run([sys.executable, "-m", "ftcourse.grading.gradescope", "--check", str(root)],
                           capture_output=True, text=True, timeout=300)  # what setup.sh runs last
    assert check.returncode != 0 and "chmod 600" in check.stderr  # the secret as unzipped is refused...
    result = run_autograder(root)
    assert result.returncode == 0, result.stdout + result.stderr  # ...and run_autograder locks it first
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == 3 and [t["max_score"] for t in results["tests"]] == [2, 1]
    assert [t["number"] for t in results["tests"]] == ["02.1", "02.2"]
    assert all(t["status"] == "passed" and t["output"].startswith("passed.") for t in results["tests"])
    assert all(t["visibility"] == "after_published" for t in results["tests"])
    assert "old/03.ipynb: a notebook of assignment 03, not 02; not graded" in results["output"]
    secret = course_secret.read(root / "source" / "course.secret")
    assert str(secret) not in json.dumps(results)
    assert results["extra_data"]["secret"] == course_secret.fingerprint(secret)

    (root / "submission" / "02_freezing.ipynb").unlink()  # a wrong answer: its hint, no points
    notebook(root / "submission" / "mine.ipynb", code=WRONG)
    assert run_autograder(root).returncode == 0
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    first = results["tests"][0]
    assert first["status"] == "failed" and first["score"] == 0 and "Hint:" in first["output"]


def test_a_submission_without_the_assignments_notebook_scores_zero_and_says_what_to_hand_in(tmp_path, bundle):
    root = autograder_tree(tmp_path, bundle[0])
    (root / "submission" / "answers.ipynb").write_text("{ not json")
    result = run_autograder(root, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == 0 and all(t["status"] == "failed" for t in results["tests"])
    assert all(t["output"].startswith("not submitted") for t in results["tests"])
    assert "answers.ipynb: broken notebook" in results["output"]
    assert "No notebook of assignment 02" in results["output"]


def test_a_grader_that_cannot_grade_writes_no_results_so_gradescope_reports_it(tmp_path, bundle):
    root = autograder_tree(tmp_path, bundle[0])
    (root / "source" / "course.secret").unlink()
    notebook(root / "submission" / "02.ipynb", code=RIGHT)
    result = run_autograder(root, timeout=120)
    assert result.returncode == 1
    assert "No course secret" in result.stderr
    assert not (root / "results" / "results.json").exists()  # not a zero the student did not earn


def test_the_capstone_earns_its_graded_share_of_its_points_on_gradescope():
    """The capstone is not all or nothing: results.json gives it the table's ``capstone score`` times its weight."""
    from ftcourse.grading import table

    row = table.assignment_row("ann", "10", {"10.1": ("passed", "PASSED 10.1: test accuracy 0.600", 0.75)},
                               status="ok", weights={"10.1": 4})
    assert (row["points"], row["possible"], row["capstone score"]) == (3, 4, 0.75)
    results = gradescope.results_json(row, "10", {"10.1": 4}, visibility="visible", seconds=1.0, notes=[])
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == 3 and results["tests"][0]["score"] == 3 and results["tests"][0]["max_score"] == 4
