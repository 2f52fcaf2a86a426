"""The sandbox itself (ftcourse.grading.sandbox), probed by small programs that try to get out of it.

The namespace tests run where this machine offers user namespaces (Linux; CI does); the limits apply everywhere.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ftcourse
from ftcourse.grading import sandbox

namespaces = pytest.mark.skipif(sandbox.isolation() != "namespaces",
                                reason="this machine offers no user namespaces; the sandbox runs in processes mode")


def run(code: str, *, files=None, limits=sandbox.Limits(), hide=(), mode=None, seconds=60) -> tuple[int, str, bytes]:
    """Run ``code`` with ``python -c`` in a sandbox; returns its exit code, its output and what it wrote as answers."""
    box = sandbox.start(["python", "-I", "-c", code], files or {"notebook.ipynb": b"{}"}, limits=limits,
                        hide=hide, mode=mode)
    try:
        box.process.wait(timeout=seconds)
        box.end()  # whatever it left running is gone, so its output ends
        output = box.process.stdout.read()
        answers = b""
        while chunk := os.read(box.answers_fd, 65536):
            answers += chunk
        return box.process.returncode, output.decode(errors="replace"), answers
    finally:
        box.kill()


@namespaces
def test_the_sandbox_sees_its_own_files_python_and_the_package_read_only_and_nothing_else(tmp_path):
    secret = tmp_path / "submissions" / "alice.ipynb"
    secret.parent.mkdir()
    secret.write_text("alice's work")
    package = Path(ftcourse.__file__).resolve().parent
    code = f"""
import os, sys
print("files", sorted(os.listdir(".")))
print("uid", os.getuid())
for path in [{str(package / 'checks.py')!r}, {str(secret)!r}, {str(Path.home() / 'x')!r}, "/etc/shadow",
             "../escape", os.path.expanduser("~/mine"), "/tmp/mine", "here.txt"]:
    try:
        with open(path, "a") as f:
            f.write("x")
        print("wrote", path)
    except OSError as e:
        print("refused", path, e.strerror)
print("alice exists", os.path.exists({str(secret)!r}))
import ftcourse.checks
print("package readable", ftcourse.checks.__name__)
"""
    code_, out, _ = run(code, hide=(secret.parent,))
    assert code_ == 0, out
    assert "files ['home', 'notebook.ipynb']" in out
    assert "uid 1000" in out  # an ordinary user inside; root owns nothing it can reach
    assert f"refused {package / 'checks.py'} Read-only file system" in out
    assert "alice exists False" in out  # the submissions folder does not exist inside
    for inside in ("/sandbox/home/mine", "/tmp/mine", "here.txt"):
        assert f"wrote {inside}" in out
    assert "refused ../escape" in out and "refused /etc/shadow" in out
    assert secret.read_text() == "alice's work"
    assert not (Path.home() / "x").exists() and "package readable ftcourse.checks" in out


@namespaces
def test_no_network_no_privileges_and_a_clean_environment(monkeypatch):
    monkeypatch.setenv("TEACHERS_TOKEN", "s3cret")
    code = """
import os, socket, subprocess
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3); print("network yes")
except OSError as e:
    print("network no")
r = subprocess.run(["mount", "-o", "remount,rw", "/"], capture_output=True)
print("remount", r.returncode)
print("token" , "TEACHERS_TOKEN" in os.environ, os.environ["HOME"], os.environ["TMPDIR"])
"""
    _, out, _ = run(code)
    assert "network no" in out and "remount 0" not in out and "token False /sandbox/home /tmp" in out


@namespaces
def test_a_daemon_that_left_the_session_dies_with_the_sandbox(tmp_path):
    token = f"ftcourse-daemon-{os.getpid()}-{time.time_ns()}"
    code = f"""
import subprocess, sys
subprocess.Popen(["setsid", sys.executable, "-c", "import time\\nwhile True: time.sleep(0.1)", {token!r}],
                 start_new_session=True)
print("started")
"""
    _, out, _ = run(code)
    assert "started" in out
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", token], capture_output=True, text=True).stdout.split()
    assert not alive, f"processes outlived the sandbox: {alive}"


def test_a_fork_loop_is_bounded_and_everything_is_killed_at_the_end():
    code = """
import os, time
made = 0
try:
    for _ in range(5000):
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
        made += 1
except OSError:
    pass
print("forked", made)
"""
    _, out, _ = run(code, limits=sandbox.Limits(processes=32))
    made = int(out.split("forked")[1].split()[0])
    assert made < 64, out


def test_memory_cpu_and_file_size_are_limited():
    grab = "b = bytearray(2 * 2**30)\nprint('got 2 GB')"
    code_, out, _ = run(grab, limits=sandbox.Limits(memory_mb=1024))
    assert "got 2 GB" not in out and "MemoryError" in out
    code_, out, _ = run("open('big', 'wb').write(b'x' * (8 * 2**20))", limits=sandbox.Limits(file_mb=4))
    assert code_ != 0  # SIGXFSZ, or an OSError
    start = time.monotonic()
    code_, out, _ = run("while True: pass", limits=sandbox.Limits(cpu_seconds=2))
    assert code_ != 0 and time.monotonic() - start < 30


def test_the_answers_descriptor_carries_what_the_program_writes():
    code_, out, answers = run("import os\nos.write(int(os.environ['FTCOURSE_ANSWERS_FD']), b'42')")
    assert code_ == 0 and answers == b"42", out


def _runs_as(python: str, user) -> bool:
    """Whether ``user`` (name, uid, gid) may run the interpreter ``python``."""
    try:
        return subprocess.run([python, "-I", "-c", "pass"], user=user[1], group=user[2], extra_groups=[],
                              capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


@pytest.fixture
def processes_python(monkeypatch):
    """Processes mode under root runs the code as ``nobody``: these tests then need an interpreter that ``nobody``
    may run (this one, or the system's; the programs they run need the standard library only)."""
    user = sandbox.sandbox_user()
    if user is None:
        return sys.executable
    for python in (sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if python and _runs_as(python, user):
            monkeypatch.setattr(sys, "executable", python)
            return python
    pytest.skip(f"the grader runs as root and user {user[0]} may run no Python here")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="the grader does not run as root here")
def test_processes_mode_under_root_runs_the_code_as_an_unprivileged_user(tmp_path, processes_python):
    """Gradescope runs the grader as root in a container without user namespaces: the student's code must not run
    as root, so that it cannot read the course secret or write where the grader keeps its results."""
    name, uid, gid = sandbox.sandbox_user()
    place = tmp_path / "autograder"
    place.mkdir()
    os.chmod(tmp_path, 0o711)
    os.chmod(place, 0o755)  # readable by all, writable by root only, like /autograder/results
    secret = place / "course.secret"
    secret.write_text("42")
    os.chmod(secret, 0o600)
    code = f"""
import os
print("ids", os.getuid(), os.getgid(), os.getgroups())
for path in [{str(secret)!r}, {str(place / 'results.json')!r}, "mine.txt", os.environ["HOME"] + "/mine"]:
    try:
        with open(path, "a") as f:
            f.write("x")
        print("wrote", path)
    except OSError as e:
        print("refused", path)
try:
    os.setuid(0)
    print("became root")
except PermissionError:
    print("stayed", os.getuid())
print("no_new_privs", [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1])
"""
    code_, out, _ = run(code, mode="processes")
    assert code_ == 0, out
    assert f"ids {uid} {gid} []" in out
    assert f"refused {secret}" in out and f"refused {place / 'results.json'}" in out
    assert "wrote mine.txt" in out and "/home/mine" in out.split("wrote ")[-1]
    assert f"stayed {uid}" in out and "no_new_privs 1" in out
    assert secret.read_text() == "42" and not (place / "results.json").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="the grader does not run as root here")
def test_processes_mode_under_root_says_when_the_unprivileged_user_cannot_run_python(tmp_path, monkeypatch):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python"
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o700)
    monkeypatch.setattr(sys, "executable", str(python))
    with pytest.raises(RuntimeError, match=r"runs as user \w+ \(the grader runs as root\).*every\s+user may read"):
        sandbox.start(["python", "-c", "pass"], {}, mode="processes")
    monkeypatch.setenv("FTCOURSE_SANDBOX_USER", "root")
    with pytest.raises(RuntimeError, match="never runs as root"):
        sandbox.start(["python", "-c", "pass"], {}, mode="processes")
    monkeypatch.setenv("FTCOURSE_SANDBOX_USER", "no-such-user-here")
    with pytest.raises(RuntimeError, match="no such user"):
        sandbox.start(["python", "-c", "pass"], {}, mode="processes")


def test_processes_mode_kills_what_is_left_and_keeps_the_teachers_environment_out(monkeypatch, processes_python):
    monkeypatch.setenv("TEACHERS_TOKEN", "s3cret")
    token = f"ftcourse-orphan-{os.getpid()}-{time.time_ns()}"
    code = f"""
import os, subprocess, sys
print("token", "TEACHERS_TOKEN" in os.environ, os.environ["HOME"].endswith("home"))
subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.1)", {token!r}],
                 start_new_session=True)
"""
    _, out, _ = run(code, mode="processes")
    assert "token False True" in out
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", token], capture_output=True, text=True).stdout.split()
    assert not alive, f"processes outlived the sandbox: {alive}"


@pytest.mark.parametrize("mode", ["processes", None])
def test_a_sandbox_that_ends_leaves_the_one_beside_it_running(mode, request):
    """``grade --jobs``: the first sandbox ends (and kills the orphans it left) while the second still runs; the
    second must go on and report its own exit code."""
    if mode == "processes":
        request.getfixturevalue("processes_python")
    first = sandbox.start(["python", "-I", "-c", "pass"], {}, mode=mode)
    second = sandbox.start(["python", "-I", "-c", "import time, sys; time.sleep(2); sys.exit(7)"], {}, mode=mode)
    try:
        first.process.wait(timeout=60)
        first.kill()
        assert second.process.poll() is None  # still running
        assert second.process.wait(timeout=60) == 7
    finally:
        first.kill()
        second.kill()


def test_isolation_is_one_of_the_documented_modes():
    assert sandbox.isolation() in ("namespaces", "processes")
    assert sys.platform.startswith("linux") or sandbox.isolation() == "processes"


def test_a_container_runs_without_network_capabilities_or_a_writable_image(monkeypatch):
    monkeypatch.setenv("FTCOURSE_CONTAINER_IMAGE", "school/grader:1")
    limits = sandbox.Limits(memory_mb=1000, processes=40)
    command = sandbox.container_command("podman", "ftcourse-x", Path("/tmp/in"), ["python", "-m", "w"], limits, {})
    assert command[:3] == ["podman", "run", "--rm"]
    for flag in ("--network=none", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
                 "--user=1000:1000", "--memory=1000m", "--pids-limit=40", "--volume=/tmp/in:/submission:ro",
                 "--env=FTCOURSE_ANSWERS_FD=stdout", "school/grader:1"):
        assert flag in command, flag
    assert command[-3:] == ["python", "-m", "w"]


def test_in_a_container_the_worker_answers_on_stdout_and_the_notebook_prints_on_stderr(tmp_path):
    import json

    from ftcourse.grading import frames

    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["print('hello')"]}]}))
    env = {**os.environ, "FTCOURSE_ANSWERS_FD": "stdout"}
    result = subprocess.run([sys.executable, "-m", "ftcourse.grading.worker", str(path), "5"], env=env,
                            capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    assert "hello" in result.stderr.decode() and b"hello" not in result.stdout
    length = frames.HEADER.unpack(result.stdout[:frames.HEADER.size])[0]
    assert frames.decode(result.stdout[frames.HEADER.size:frames.HEADER.size + length])["kind"] == "ready"


def test_the_memory_of_the_whole_sandbox_is_capped_where_a_memory_cgroup_can_be_made():
    groups = sandbox._make_cgroups(sandbox.Limits())
    for group in groups:
        sandbox._kill_cgroup(group)
    if not any("memory" in str(g) for g in groups):
        pytest.skip("this user may not make a memory cgroup here")
    code = """
import os, time
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        b = bytearray(300 * 2**20)
        b[::4096] = b"x" * len(b[::4096])
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
print("killed", sum(os.waitpid(pid, 0)[1] != 0 for pid in kids))
"""
    _, out, _ = run(code, limits=sandbox.Limits(memory_mb=512, work_mb=64))  # 640 MB for all of it together
    assert "killed" in out and int(out.split("killed")[1].split()[0]) >= 1, out


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_killed_grader_leaves_nothing_running_and_the_next_one_removes_its_folders(tmp_path):
    code = ("import sys, time\nfrom ftcourse.grading import sandbox\n"
            "box = sandbox.start(['python', '-c', 'import time; time.sleep(600)'], {'notebook.ipynb': b'my work'})\n"
            "print(box.folder, box.process.pid, flush=True)\ntime.sleep(600)")
    grader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    folder, pid = grader.stdout.readline().split()
    folder, pid = Path(folder), int(pid)
    assert (folder / "inbox" / "notebook.ipynb").read_bytes() == b"my work"
    mine = sandbox.start(["python", "-c", "import time; time.sleep(600)"], {})  # a live grader's: left alone
    try:
        grader.kill()
        grader.wait()
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid), "the sandbox outlived the grader that started it"
        removed = sandbox.remove_stale()
        assert folder in removed and not folder.exists()
        assert mine.folder.exists() and mine.folder not in removed
    finally:
        mine.kill()
