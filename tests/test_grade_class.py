"""Grading a class: the course secret, points and weights, outcomes, --only, --jobs, feedback files and the Canvas
export. Most tests replace the sandboxed run of a notebook with a stand-in (each exercise's outcome given), so that
what is tested is the table; `tests/test_grade.py` grades real notebooks in real sandboxes."""

import csv
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import nbformat
import pytest

from ftcourse import capstone, cli
from ftcourse.grading import course_secret, grade, table

ROOT = Path(__file__).resolve().parent.parent


def exercise_notebook(path: Path, assignment: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"# {path.stem}")])
    nb.metadata["ftcourse"] = {"assignment": assignment}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


class StandIn:
    """Replaces ``grade.grade_notebook``: each student's outcomes come from ``plan`` (default: all passed), and it
    records how many ran at once."""

    def __init__(self, plan=None, seconds=0.0):
        self.plan, self.seconds = plan or {}, seconds
        self.calls, self.running, self.most = [], 0, 0
        self.lock = threading.Lock()

    def __call__(self, path, notebook, assignment, settings, student="", digest=""):
        with self.lock:
            self.calls.append(student)
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        outcome = self.plan.get(student, "passed")
        messages = {"passed": "PASSED {e}: right", "wrong": "{e}: not right on the grader's questions. Hint: loop",
                    "not attempted": "{e}: not done yet", "crashed": "{e}: ValueError: boom"}
        return ({e: (outcome, messages[outcome].format(e=e)) for e in grade.exercises_of(assignment)},
                "not attempted" if outcome == "not attempted" else "ok")


@pytest.fixture
def stand_in(monkeypatch):
    def make(plan=None, seconds=0.0):
        fake = StandIn(plan, seconds)
        monkeypatch.setattr(grade, "grade_notebook", fake)
        monkeypatch.setattr(grade, "check_sandbox", lambda settings: None)
        return fake

    return make


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "teacher" / "course.secret"
    path.parent.mkdir()
    course_secret.create(path)
    return path


# --- the course secret ---------------------------------------------------------------------------------------------

def test_the_course_secret_is_the_teachers_alone_and_is_never_replaced_by_mistake(tmp_path, capsys):
    path = tmp_path / "course.secret"
    assert cli.main(["secret", "new", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = course_secret.read(path)
    assert f"fingerprint {course_secret.fingerprint(secret)}" in capsys.readouterr().out
    assert cli.main(["secret", "new", str(path)]) == 2 and "--replace" in capsys.readouterr().err
    assert course_secret.read(path) == secret  # kept
    assert cli.main(["secret", "new", str(path), "--replace"]) == 0 and course_secret.read(path) != secret
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        course_secret.read(path)
    path.chmod(0o600)
    path.write_text("12345\n")
    with pytest.raises(ValueError, match="not a course secret"):
        course_secret.read(path)
    with pytest.raises(FileNotFoundError, match="ftcourse secret new"):
        course_secret.read(tmp_path / "missing.secret")
    link = tmp_path / "link.secret"
    link.symlink_to(path)
    with pytest.raises(ValueError, match="not a regular file"):
        course_secret.read(link)


def test_the_fingerprint_names_a_secret_without_telling_it():
    a, b = course_secret.fingerprint(1), course_secret.fingerprint(2)
    assert a != b and a == course_secret.fingerprint(1) and len(a) == 12 and "1" != a


def test_two_runs_with_the_course_secret_set_the_same_test_and_a_table_never_mixes_two(tmp_path, stand_in,
                                                                                        secret_file):
    stand_in()
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    exercise_notebook(folder / "alice.ipynb", "02")
    exercise_notebook(folder / "bob.ipynb", "02")
    first = grade.grade(folder, out, secret_file=secret_file, verbose=False)
    fingerprint = course_secret.fingerprint(course_secret.read(secret_file))
    assert {r["secret"] for r in first} == {fingerprint}
    again = grade.grade(folder, out, secret_file=secret_file, only=["bob"], verbose=False)
    assert {r["secret"] for r in again} == {fingerprint}
    other = tmp_path / "other.secret"
    course_secret.create(other)
    with pytest.raises(ValueError, match="graded with another secret"):
        grade.grade(folder, out, secret_file=other, resume=True, verbose=False)
    with pytest.raises(ValueError, match="graded with another secret"):
        grade.grade(folder, out, secret=123, only=["alice"], verbose=False)
    assert table.read_table(out) == [{k: str(v) for k, v in r.items()} for r in again]  # untouched


# --- points, weights and outcomes ----------------------------------------------------------------------------------

def test_points_follow_the_weights_and_the_outcomes_tell_wrong_from_crashed_from_not_attempted(tmp_path, stand_in):
    stand_in({"bob": "wrong", "carl": "crashed", "dana": "not attempted"})
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    for name in ("alice", "bob", "carl", "dana"):
        exercise_notebook(folder / f"{name}.ipynb", "02")
    exercise_notebook(folder / "alice" / "cap.ipynb", "10")
    shutil.move(folder / "alice.ipynb", folder / "alice" / "02.ipynb")
    rows = grade.grade(folder, out, weights=["02.1=2", "10.1=5"], secret=1, verbose=False)
    by = {(r["student"], r["assignment"]): r for r in rows}
    assert (by["alice", "02"]["points"], by["alice", "02"]["possible"]) == (3, 3)  # 02.1 counts 2, 02.2 counts 1
    assert (by["alice", "10"]["points"], by["alice", "10"]["possible"]) == (5, 5)
    assert by["alice", "10"]["justification untouched"] == "yes" and by["alice", "02"]["justification untouched"] == ""
    assert [by[n, "02"]["02.1"] for n in ("bob", "carl", "dana")] == ["wrong", "crashed", "not attempted"]
    assert [by[n, "02"]["points"] for n in ("bob", "carl", "dana")] == [0, 0, 0]
    assert by["dana", "02"]["status"] == "dana.ipynb: not attempted"
    with out.open() as f:
        header = next(csv.reader(f))
    assert header[:2] == ["student", "assignment"] and {"02.1", "02.2", "10.1", "points", "possible"} <= set(header)
    assert "03.1" not in header  # only the assignments found
    with pytest.raises(ValueError, match="no exercise '99.1'"):
        grade.grade(folder, out, weights=["99.1=2"], verbose=False)
    with pytest.raises(ValueError, match="0 or more"):
        grade.grade(folder, out, weights=["02.1=-1"], verbose=False)


def test_a_justification_left_as_the_template_is_flagged():
    handed_out = nbformat.read(ROOT / "exercises" / "10_capstone.ipynb", as_version=4)
    text = grade.justification_of(handed_out)
    assert table.untouched_justification(text, capstone.JUSTIFICATION_TEMPLATE)  # the handout's cell, as is
    assert table.untouched_justification("", capstone.JUSTIFICATION_TEMPLATE)
    assert not table.untouched_justification("I fine-tuned lab because LEEP ranked it first.",
                                             capstone.JUSTIFICATION_TEMPLATE)


# --- --only and --jobs ---------------------------------------------------------------------------------------------

def test_only_regrades_the_named_students_and_keeps_everyone_elses_rows(tmp_path, stand_in):
    fake = stand_in({"bob": "wrong"})
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    for name in ("alice", "bob", "carl"):
        exercise_notebook(folder / f"{name}.ipynb", "02")
    grade.grade(folder, out, verbose=False)
    fake.plan["bob"] = "passed"  # bob's regrade request was right
    rows = grade.grade(folder, out, only=["bob"], verbose=False)
    assert fake.calls == ["alice", "bob", "carl", "bob"]
    assert [(r["student"], str(r["points"])) for r in rows] == [("alice", "2"), ("bob", "2"), ("carl", "2")]
    with pytest.raises(ValueError, match="no submission .*: zoe"):
        grade.grade(folder, out, only=["zoe"], verbose=False)


def test_jobs_grade_students_side_by_side_and_the_table_keeps_their_order(tmp_path, stand_in):
    fake = stand_in(seconds=0.4)
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    names = [f"s{i:02d}" for i in range(6)]
    for name in names:
        exercise_notebook(folder / f"{name}.ipynb", "02")
    rows = grade.grade(folder, out, jobs=2, verbose=False)
    assert fake.most == 2  # two at once, never more
    assert [r["student"] for r in rows] == names == [r["student"] for r in table.read_table(out)]
    fake.most = 0
    grade.grade(folder, out, jobs=1, verbose=False)
    assert fake.most == 1
    with pytest.raises(ValueError, match="--jobs must be 1 or more"):
        grade.grade(folder, out, jobs=0, verbose=False)


def test_the_default_number_of_jobs_fits_the_cores_and_the_memory():
    limits = grade.sandbox.Limits()
    jobs = grade.default_jobs(limits, "namespaces")
    cores = len(os.sched_getaffinity(0))
    assert 1 <= jobs <= cores
    assert grade.default_jobs(grade.sandbox.Limits(memory_mb=10**9), "namespaces") == 1  # no machine holds two
    assert grade.default_jobs(limits, "processes") == 1  # side by side, they would run as one user


# --- feedback and Canvas -------------------------------------------------------------------------------------------

def test_each_student_gets_a_feedback_file_with_the_hints_and_nothing_of_the_secret(tmp_path, stand_in):
    stand_in({"bob": "wrong"})
    folder, out, feedback = tmp_path / "submissions", tmp_path / "grades.csv", tmp_path / "feedback"
    for name in ("alice", "bob", "a b", "a_b"):  # "a b" and "a_b" would share one file
        exercise_notebook(folder / f"{name}.ipynb", "02")
    exercise_notebook(folder / "carl.ipynb", "10")
    grade.grade(folder, out, feedback=feedback, secret=987654321, verbose=False)
    files = sorted(p.name for p in feedback.iterdir())
    assert files == ["a_b-2.md", "a_b.md", "alice.md", "bob.md", "carl.md"], files
    bob = (feedback / "bob.md").read_text()
    assert "## Assignment 02: 0 of 2 points" in bob and "| wrong |" in bob and "Hint: loop" in bob
    carl = (feedback / "carl.md").read_text()
    assert "justification is missing or still the template's text" in carl
    fingerprint = course_secret.fingerprint(987654321)
    for path in feedback.iterdir():
        text = path.read_text()
        assert "987654321" not in text and fingerprint not in text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="inside the submissions folder"):
        grade.grade(folder, out, feedback=folder / "fb", verbose=False)


def test_each_exercise_keeps_its_own_message_when_a_students_error_holds_the_separator():
    row = table.assignment_row("eve", "02", {"02.1": ("crashed", "02.1: ValueError: a | 02.2: passed, honest"),
                                             "02.2": ("wrong", "02.2: not right. Hint: loop")}, status="ok")
    assert table.messages_by_exercise(row) == {"02.1": "02.1: ValueError: a / 02.2: passed, honest",
                                               "02.2": "02.2: not right. Hint: loop"}


def test_the_canvas_export_matches_the_roster_and_says_who_is_missing(tmp_path, stand_in, capsys):
    stand_in({"bob": "wrong"})
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    for name in ("alice", "bob", "stranger"):
        exercise_notebook(folder / f"{name}.ipynb", "02")
    grade.grade(folder, out, weights=["02.1=3"], verbose=False)
    roster = tmp_path / "export.csv"
    roster.write_text('\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,Essay (11)\n'
                      '    Points Possible,,,,,10\n'
                      '"Lovelace, Ada",101,A1,alice,Sec 1,8\n'
                      '"Babbage, Bob",102,B2,bob,Sec 1,\n'
                      '"Curie, Carl",103,C3,carl,Sec 2,\n')
    upload = tmp_path / "upload.csv"
    assert cli.main(["canvas", str(out), "--roster", str(roster), "--out", str(upload)]) == 0
    said = capsys.readouterr().out
    assert "not in the roster (by SIS Login ID), so not exported: stranger" in said
    assert "with no graded submission (left empty): carl" in said
    lines = list(csv.reader(upload.open()))
    assert lines[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ftcourse 02"]
    assert lines[1] == ["Points Possible", "", "", "", "", "4"]
    assert lines[2:] == [["Lovelace, Ada", "101", "A1", "alice", "Sec 1", "4"],
                         ["Babbage, Bob", "102", "B2", "bob", "Sec 1", "0"],
                         ["Curie, Carl", "103", "C3", "carl", "Sec 2", ""]]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\nalice,1\n")
    assert cli.main(["canvas", str(out), "--roster", str(bad)]) == 2
    assert "Grades > Export" in capsys.readouterr().err


# --- a real untouched notebook -------------------------------------------------------------------------------------

@pytest.mark.slow  # one real sandbox run
def test_an_untouched_exercise_notebook_is_not_attempted_not_ok(tmp_path):
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    folder.mkdir()
    shutil.copy(ROOT / "exercises" / "02_freezing.ipynb", folder / "uma.ipynb")
    (row,) = grade.grade(folder, out, secret=5, jobs=1, timeout=300, verbose=False)
    assert row["status"] == "uma.ipynb: not attempted", row
    assert {row[e] for e in grade.exercises_of("02")} == {"not attempted"} and row["points"] == 0
