"""The grade table: one row per student and assignment, with points, possible points and what happened to each
exercise; and the files made from it (a Canvas gradebook import, each student's feedback).

Every exercise of a graded notebook ends in one of :data:`OUTCOMES`:

- ``passed``: the grader's own questions were answered right (every round);
- ``wrong``: an answer came back, and it was not right (or not of the expected form);
- ``crashed``: no answer came back -- the student's function raised, ran out of time, or the notebook (or its
  sandbox) stopped before it could be asked; the row's ``status`` says which;
- ``not attempted``: the stub is still there (it raises ``NotImplementedError``) or the function is missing;
- ``not graded``: the grader refused the notebook (several notebooks for one assignment: none is graded).

A notebook whose every exercise is ``not attempted`` has the status ``not attempted`` (an untouched exercise
notebook raises in its check cells: that is not an error of the student's code).

**Points.** An exercise is worth its weight (1 unless the teacher gives another: ``--weight 02.1=2``), all or
nothing. There is no partial credit by rounds: the rounds exist so that a guess rarely passes
(:attr:`ftcourse.checks.Exercise.rounds`), and a point per round would pay for guessing again.

Cells that reach the table are made safe twice: :func:`printable` shows control characters as escapes (a file name
or an error message cannot move the teacher's cursor), and :func:`escape` keeps a spreadsheet from reading a cell as
a formula.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path

from .. import capstone, checks, files

OUTCOMES = ("passed", "wrong", "crashed", "not attempted", "not graded")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", " ", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # ＝＋－＠ too
TABLE_MODE = 0o600  # the grade table holds students' marks: readable by the teacher's user only
FIRST_COLUMNS = ["student", "assignment"]
MESSAGE_SEPARATOR = " | "  # between the exercises' messages in the ``messages`` column; "|" never inside one
LAST_COLUMNS = ["points", "possible", "capstone score", "status", "justification", "rubric", "justification untouched",
                "messages", "sha256", "secret"]


def printable(text) -> str:
    """``text`` with every control or format character (ESC, CR, backspace, bidirectional overrides...) written
    as an escape such as ``\\x1b``: nothing a student supplied -- a file name, a printed line, an error message, a
    justification -- can then move the teacher's cursor, rewrite a line of the terminal or reorder text."""
    def safe(ch):
        if ch == " " or unicodedata.category(ch)[0] != "C":
            return ch
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return "".join(safe(ch) for ch in str(text))


def escape(value):
    """A CSV cell that a spreadsheet shows as text: a cell starting with = + - @, their full-width forms, a space,
    a tab or a line break (where spreadsheets look for a formula) gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def parse_weights(pairs) -> dict[str, float]:
    """``["02.1=2", "10.1=5"]`` (or ``{"02.1": 2, "10.1": 5}``) as ``{"02.1": 2.0, "10.1": 5.0}``; an unknown
    exercise or a weight that is not a non-negative number is refused with the fix."""
    if isinstance(pairs, dict):
        pairs = [f"{exercise}={weight}" for exercise, weight in pairs.items()]
    weights = {}
    for pair in pairs or ():
        exercise, _, value = str(pair).partition("=")
        exercise = exercise.strip()
        if exercise not in checks.GRADED:
            raise ValueError(f"--weight {pair!r}: no exercise {exercise!r}; the exercises are "
                             f"{', '.join(checks.GRADED)}. Write it as EXERCISE=WEIGHT, e.g. 02.1=2.")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not weight >= 0:
            raise ValueError(f"--weight {pair!r}: the weight must be a number of points, 0 or more (e.g. 02.1=2).")
        weights[exercise] = weight
    return weights


def exercises_of(assignment: str) -> list[str]:
    """The graded exercises of an assignment ("02" -> ["02.1", "02.2"]), in the course's order."""
    return [e for e in checks.GRADED if e.startswith(assignment + ".")]


def columns(assignments) -> list[str]:
    """The table's header for the assignments found: the exercises of all of them, each row filling its own."""
    return [*FIRST_COLUMNS, *[e for a in sorted(assignments) for e in exercises_of(a)], *LAST_COLUMNS]


def number(value: float) -> int | float:
    """2.0 -> 2, 2.5 -> 2.5: points as a teacher writes them."""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def share(result: tuple) -> float:
    """The share of an exercise's points that a result earns: ``(outcome, message)`` earns all of them when passed
    and none otherwise; ``(outcome, message, share)`` says its own (the capstone's graded score)."""
    return float(result[2]) if len(result) > 2 else float(result[0] == "passed")


def assignment_row(student: str, assignment: str, outcomes: dict[str, tuple], *, status: str,
                   justification: str = "", untouched: bool = False, digest: str = "", secret: str = "",
                   weights: dict | None = None) -> dict:
    """One row of the table: ``outcomes`` maps each exercise of ``assignment`` to (outcome, message) or (outcome,
    message, share of its points). The capstone's row also shows its score (:func:`ftcourse.capstone.score`) and the
    rubric its justification is read against (:data:`ftcourse.capstone.RUBRIC`), beside the justification."""
    weights = weights or {}
    possible = sum(weights.get(e, 1.0) for e in outcomes)
    points = sum(weights.get(e, 1.0) * share(result) for e, result in outcomes.items())
    row = {"student": printable(student), "assignment": assignment,
           **{e: result[0] for e, result in outcomes.items()},
           "points": number(points), "possible": number(possible),
           "capstone score": number(share(outcomes[capstone.EXERCISE]))
           if capstone.EXERCISE in outcomes else "",
           "status": printable(status), "justification": printable(justification),
           "rubric": capstone.rubric_text() if assignment == capstone.ASSIGNMENT else "",
           "justification untouched": "yes" if untouched else "",
           "messages": printable(MESSAGE_SEPARATOR.join(result[1].replace("|", "/")
                                                        for result in outcomes.values() if result[1])),
           "sha256": digest, "secret": secret}
    return row


def messages_by_exercise(row: dict) -> dict[str, str]:
    """The ``messages`` column of a row split again by exercise: each message starts with its exercise's id
    (``02.1: ...``, ``PASSED 02.1: ...``), and :func:`assignment_row` keeps "|" out of the messages themselves."""
    found = {}
    for message in str(row.get("messages") or "").split(MESSAGE_SEPARATOR):
        match = re.match(r"(?:PASSED )?(\d+\.\d+)\b", message)
        if match and match.group(1) not in found:
            found[match.group(1)] = message
    return found


def student_row(student: str, status: str, *, digest: str = "", secret: str = "") -> dict:
    """A row for a student with nothing gradable (a refused link, no notebook, a grader error): no assignment."""
    return {"student": printable(student), "assignment": "", "points": 0, "possible": "", "status": printable(status),
            "justification": "", "justification untouched": "", "messages": "", "sha256": digest, "secret": secret}


def write_table(rows: list[dict], header: list[str], out: Path) -> None:
    """Write the table atomically (:func:`ftcourse.files.atomic_write`: a reader, or a crash, sees the old table or
    the new one, never half of one), with mode :data:`TABLE_MODE`: marks are the students' personal data."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: escape(v) for k, v in row.items()} for row in rows)
    files.atomic_write(Path(out), lambda f: f.write(buffer.getvalue().encode()), mode=TABLE_MODE)


def read_table(path: Path) -> list[dict]:
    """The rows of a grade table written by :func:`write_table` (an empty list when there is none)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("student")]


# ------------------------------------------------------------------------------------------------------------------
# The capstone's justification.

def untouched_justification(text: str, template: str | None) -> bool:
    """True when the justification is empty or still the template's text (compared without spaces and case)."""
    def plain(value):
        return re.sub(r"\s+", " ", str(value or "")).strip().lower()

    return not plain(text) or (template is not None and plain(text) == plain(template))


# ------------------------------------------------------------------------------------------------------------------
# Canvas: the gradebook import.

CANVAS_IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def canvas_title(assignment: str) -> str:
    return f"ftcourse {assignment}"


def canvas_export(rows: list[dict], roster: Path, out: Path, *, match: str = "SIS Login ID") -> dict:
    """Write ``out``, a CSV that Canvas's gradebook imports (Grades > Import): the roster's identity columns
    (``Student``, ``ID``, ``SIS User ID``, ``SIS Login ID``, ``Section``, as Canvas's own gradebook export has them),
    a "Points Possible" row, and one column per assignment, ``ftcourse 02`` and so on (Canvas creates an assignment
    for a column it does not know). ``roster`` is the gradebook exported from Canvas; a student of the table is the
    roster's row whose ``match`` column equals the table's student name. Cells of roster students with no row
    stay empty (Canvas leaves those grades as they are). Returns ``{"unmatched": [...], "missing": [...]}``: the
    table's students the roster lacks, and the roster's students with no submission."""
    with Path(roster).open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        lacking = [c for c in [*CANVAS_IDENTITY, match] if c not in fields]
        if lacking:
            raise ValueError(f"{roster} has no column {', '.join(map(repr, lacking))}: give the gradebook exported "
                             f"from Canvas (Grades > Export), whose first columns are {', '.join(CANVAS_IDENTITY)}.")
        students = [r for r in reader if r.get("Student") and "Points Possible" not in r["Student"]]
    points: dict[tuple[str, str], float] = {}
    possible: dict[str, float] = {}
    for row in rows:
        if row.get("assignment"):
            points[row["student"], row["assignment"]] = float(row.get("points") or 0)
            if row.get("possible") not in (None, ""):
                possible[row["assignment"]] = max(possible.get(row["assignment"], 0.0), float(row["possible"]))
    assignments = sorted(possible)
    header = [*CANVAS_IDENTITY, *map(canvas_title, assignments)]
    lines = [{**{c: "" for c in CANVAS_IDENTITY}, "Student": "Points Possible",
              **{canvas_title(a): number(possible[a]) for a in assignments}}]
    known = set()
    for student in students:
        name = student[match].strip()
        known.add(name)
        lines.append({**{c: student[c] for c in CANVAS_IDENTITY},
                      **{canvas_title(a): number(points[name, a]) if (name, a) in points else ""
                         for a in assignments}})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: escape(v) for k, v in line.items()} for line in lines)
    files.atomic_write(Path(out), lambda f: f.write(buffer.getvalue().encode()), mode=TABLE_MODE)
    graded = {student for student, _ in points}
    return {"unmatched": sorted(graded - known), "missing": sorted(known - graded)}


# ------------------------------------------------------------------------------------------------------------------
# Feedback for each student.

def feedback_name(student: str, taken: set) -> str:
    """A file name for a student's feedback: letters, digits, ``.``, ``_`` and ``-`` kept, the rest ``_``, never
    hidden, never two students in one file."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", student).lstrip(".") or "student"
    name, n = f"{stem}.md", 2
    while name in taken:
        name, n = f"{stem}-{n}.md", n + 1
    taken.add(name)
    return name


def feedback_text(student: str, rows: list[dict]) -> str:
    """A student's feedback in Markdown: per assignment, the points, each exercise's outcome and what the grader
    said (the hint for a wrong answer, the capstone's accuracy against the pass mark), and the status. Nothing of
    the grading secret: only the student's own rows, without the ``secret`` and ``sha256`` columns."""
    def cell(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"# Feedback for {cell(student)}", ""]
    for row in rows:
        if not row.get("assignment"):
            lines += [f"Not graded: {cell(row.get('status', ''))}", ""]
            continue
        ids = exercises_of(row["assignment"])
        messages = messages_by_exercise(row)
        lines += [f"## Assignment {row['assignment']}: {row.get('points', 0)} of {row.get('possible', '')} points", "",
                  "| exercise | outcome | what the grader found |", "| --- | --- | --- |"]
        for e in ids:
            title = checks.EXERCISES.get(e, e)
            lines.append(f"| {e} {cell(title)} | {cell(row.get(e, ''))} | {cell(messages.get(e, ''))} |")
        lines += ["", f"Status: {cell(row.get('status', ''))}", ""]
        if row.get("capstone score") not in (None, ""):
            lines += [f"Capstone score: {float(row['capstone score']):.0%} of its points ({capstone.marks_text()}).",
                      ""]
        if row.get("rubric"):
            lines += ["Your justification is read for: " + "; ".join(f"**{name}**, {what}" for name, what in
                                                                   capstone.RUBRIC.items()) + ".", ""]
        if row.get("justification untouched"):
            lines += ["Your justification is missing or still the template's text.", ""]
    return "\n".join(lines)


def write_feedback(rows: list[dict], folder: Path) -> list[Path]:
    """One Markdown file per student in ``folder`` (created), written atomically with mode 0600; returns them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_student: dict[str, list[dict]] = {}
    for row in rows:
        by_student.setdefault(row["student"], []).append(row)
    taken, written = set(), []
    for student, own in by_student.items():
        path = folder / feedback_name(student, taken)
        text = feedback_text(student, own)
        files.atomic_write(path, lambda f, t=text: f.write(t.encode()), mode=TABLE_MODE)
        written.append(path)
    return written
