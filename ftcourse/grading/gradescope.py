"""Grading on Gradescope: when a class outgrows one machine, Gradescope runs ftcourse's grader for each submission.

Gradescope's autograder contract (https://gradescope-autograders.readthedocs.io/en/latest/specs/) is a zip holding

- ``setup.sh``, which Gradescope runs once, as root, when it builds the autograder's image (Ubuntu): here it makes
  a virtual environment in ``/opt/ftcourse`` (readable by every user: see below), installs torch's CPU build at
  the teacher's version, then ftcourse from the wheel in the zip, and checks that the sandbox works;
- ``run_autograder``, which Gradescope runs for each submission, as root, in ``/autograder``: the student's files
  are in ``/autograder/submission``, the zip's files in ``/autograder/source``, and what it must write is
  ``/autograder/results/results.json`` (:func:`results_json`: one test per exercise, with ``score``,
  ``max_score``, ``status`` and ``output``).

``ftcourse autograder 02 --secret-file course.secret`` builds that zip (:func:`build_bundle`) for one assignment.
It holds the course secret, so that Gradescope sets the same capstone as the teacher's own runs, and the zip must
be kept like the secret. On Gradescope, :func:`main` grades the one submission with :func:`ftcourse.grading.grade.
grade` -- the same sandbox, judging, points and messages as ``ftcourse grade`` -- and turns its row into
``results.json``.

**The sandbox on Gradescope.** Gradescope's containers offer no user namespaces, so the sandbox runs in processes
mode; the grader runs as root, so the student's code runs as ``nobody`` (:func:`ftcourse.grading.sandbox.
sandbox_user`). ``setup.sh`` leaves the secret readable by root only (``/autograder/source`` mode 0700, the secret
0600) and nothing of ``/autograder`` writable by others. One container grades one submission: no classmate's
notebook is in it.

A grader that cannot grade at all (a broken install, a missing secret) exits with an error and writes no
``results.json``: Gradescope then reports that the autograder failed, instead of a zero the student did not earn.
What is the student's doing -- no notebook of the assignment, a broken one, a wrong answer -- is in the results.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .. import __version__, capstone, checks, files
from . import course_secret
from .grade import Problem, assignment_of, grade, read_notebook
from .table import exercises_of, messages_by_exercise, number, parse_weights, printable

VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")  # Gradescope's own words
CONFIG = "ftcourse-autograder.json"  # in the zip: the assignment, the weights, the versions it was built with
SECRET = "course.secret"
VENV = "/opt/ftcourse"  # setup.sh's virtual environment: outside /autograder, readable by the sandbox's user
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MAX_NOTEBOOKS = 20  # a submission with more notebooks than this is refused, not searched


def assignments() -> list[str]:
    """The assignments that have graded exercises ("02", "03", ..., "10")."""
    return sorted({e.split(".")[0] for e in checks.GRADED})


# ----------------------------------------------------------------------------------------------------------------
# The teacher's side: the zip.

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (made by `ftcourse autograder`).
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
SOURCE="$ROOT/source"
VENV="${{FTCOURSE_VENV:-{venv}}}"
if ! python3 -m venv "$VENV"; then  # no python3, or Debian's without ensurepip: install them, then again
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv python3-pip
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
chmod -R go+rX "$VENV"  # the student's code runs as nobody, and must be able to run this Python
"$VENV/bin/python" -m pip install --no-cache-dir --upgrade pip
"$VENV/bin/python" -m pip install --no-cache-dir --index-url {torch_index} {torch_pins}
"$VENV/bin/python" -m pip install --no-cache-dir {ftcourse}
chmod -R go+rX "$VENV"
chmod 700 "$SOURCE"  # the zip's files, the course secret among them, are root's alone
chmod 600 "$SOURCE/{secret}"
"$VENV/bin/python" -m ftcourse.grading.gradescope --check "$ROOT"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission, as root, in /autograder (made by `ftcourse autograder`): ftcourse grades
# the notebook in its sandbox and writes /autograder/results/results.json.
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{FTCOURSE_PYTHON:-${{FTCOURSE_VENV:-{venv}}}/bin/python}}"
chmod 600 "$ROOT/source/{secret}" 2>/dev/null || true
exec "$PYTHON" -m ftcourse.grading.gradescope "$ROOT"
"""


def _pin(module: str) -> str:
    """``torch==2.14.1``: the version installed here, without a local build tag such as ``+cu121`` (the bundle
    installs the CPU build of the same version)."""
    import importlib.metadata

    return f"{module}=={importlib.metadata.version(module).split('+')[0]}"


def build_wheel(folder: Path) -> Path | None:
    """A wheel of the ftcourse this process runs, built in ``folder`` from its source tree (a checkout, or an
    editable install), or None when it was installed from a wheel (the bundle then installs it from PyPI). The
    build runs on a copy, so the course folder gets no build/ or egg-info of it."""
    import ftcourse

    package = Path(ftcourse.__file__).resolve().parent
    source = package.parent
    project = source / "pyproject.toml"
    if not project.is_file() or 'name = "ftcourse"' not in project.read_text(encoding="utf-8", errors="replace"):
        return None
    with tempfile.TemporaryDirectory(prefix="ftcourse-wheel-") as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                shutil.copy2(source / name, copy / name)
        shutil.copytree(package, copy / "ftcourse", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                                 "--no-index", "--wheel-dir", str(folder), str(copy)],
                                capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"could not build ftcourse's wheel from {source}: {result.stderr.strip()[-500:]}")
    wheels = sorted(folder.glob("ftcourse-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"building ftcourse's wheel left {len(wheels)} wheels in {folder}")
    return wheels[0]


def build_bundle(assignment: str, out, *, secret_file, weights=None, visibility: str = "visible",
                 wheel=None) -> Path:
    """Write ``out``, the Gradescope autograder zip for ``assignment`` ("02" ... "10"), and return its path.

    ``secret_file`` is the course secret (checked, and copied in: the zip is as private as the secret);
    ``weights`` as for ``ftcourse grade``; ``visibility`` is when students see each exercise's result (one of
    :data:`VISIBILITIES`); ``wheel`` is an ftcourse wheel to install (default: built from this ftcourse's source
    tree, else ``ftcourse==VERSION`` from PyPI)."""
    if assignment not in assignments():
        raise ValueError(f"no assignment {assignment!r}; the graded ones are {', '.join(assignments())}.")
    if visibility not in VISIBILITIES:
        raise ValueError(f"--visibility {visibility!r}: Gradescope knows {', '.join(VISIBILITIES)}.")
    weights = parse_weights(weights)
    others = sorted(e for e in weights if e not in exercises_of(assignment))
    if others:
        raise ValueError(f"--weight names {', '.join(others)}, not exercises of assignment {assignment} "
                         f"({', '.join(exercises_of(assignment))}).")
    secret = course_secret.read(secret_file)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="ftcourse-bundle-") as tmp:
        if wheel is not None:
            wheel = Path(wheel)
            if not (wheel.is_file() and wheel.name.startswith("ftcourse-") and wheel.suffix == ".whl"):
                raise ValueError(f"--wheel {wheel}: give an ftcourse wheel file (ftcourse-VERSION-...whl).")
        else:
            wheel = build_wheel(Path(tmp))
        install = f'"$SOURCE/{wheel.name}"' if wheel else f"ftcourse=={__version__}"
        torch_pins = " ".join(_pin(m) for m in ("torch", "torchvision"))
        config = {"assignment": assignment, "weights": weights, "visibility": visibility,
                  "ftcourse": __version__, "torch": torch_pins, "secret": course_secret.fingerprint(secret)}
        members = {
            "setup.sh": (SETUP_SH.format(venv=VENV, torch_index=TORCH_CPU_INDEX, torch_pins=torch_pins,
                                         ftcourse=install, secret=SECRET).encode(), 0o755),
            "run_autograder": (RUN_AUTOGRADER.format(venv=VENV, secret=SECRET).encode(), 0o755),
            CONFIG: (json.dumps(config, indent=1).encode(), 0o644),
            SECRET: (Path(secret_file).read_bytes(), 0o600),
        }
        if wheel:
            members[wheel.name] = (wheel.read_bytes(), 0o644)

        def write(f):
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
                for name, (content, mode) in members.items():
                    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                    info.external_attr = (0o100000 | mode) << 16  # a regular file with these permissions
                    info.compress_type = zipfile.ZIP_DEFLATED
                    bundle.writestr(info, content)

        files.atomic_write(out, write, mode=0o600)  # it holds the secret
    return out


# ----------------------------------------------------------------------------------------------------------------
# Gradescope's side: one submission.

def read_config(root: Path) -> dict:
    """The bundle's settings, checked (``/autograder/source/ftcourse-autograder.json``)."""
    path = root / "source" / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RuntimeError(f"{path}: {error}; build the autograder again with `ftcourse autograder`.") from None
    if config.get("assignment") not in assignments() or config.get("visibility") not in VISIBILITIES:
        raise RuntimeError(f"{path} names no assignment of this ftcourse; build the autograder again.")
    config["weights"] = parse_weights(config.get("weights") or {})
    return config


def find_notebooks(submission: Path, assignment: str) -> tuple[list[Path], list[str]]:
    """The notebooks of ``assignment`` among the student's files, and a line for each other file looked at (a
    notebook of another assignment, a broken one, a link). Hidden folders (.ipynb_checkpoints) are passed over."""
    chosen, notes = [], []
    candidates = sorted(p for p in submission.rglob("*.ipynb")
                        if not any(part.startswith(".") for part in p.relative_to(submission).parts))
    if len(candidates) > MAX_NOTEBOOKS:
        return [], [f"{len(candidates)} notebooks were submitted; hand in the notebook of assignment {assignment}"]
    for path in candidates:
        name = printable(path.relative_to(submission))
        if path.is_symlink() or not path.is_file():
            notes.append(f"{name}: not a plain file; not graded")
            continue
        try:
            found = assignment_of(read_notebook(path))
        except Problem as problem:
            notes.append(f"{name}: {problem}")
            continue
        if found == assignment:
            chosen.append(path)
        else:
            notes.append(f"{name}: a notebook of assignment {found or 'none'}, not {assignment}; not graded")
    return chosen, notes


def results_json(row: dict | None, assignment: str, weights: dict, *, visibility: str, seconds: float,
                 notes: list[str]) -> dict:
    """Gradescope's ``results.json`` for one submission: a test per exercise of ``assignment`` (its weight as
    ``max_score``; ``score`` all or nothing, the capstone's its graded share; ``status`` passed or failed; ``output`` the outcome and what the
    grader found: the hint, the capstone's accuracy against the pass mark, never the secret), the total as
    ``score``, and the notebook's status as ``output``. ``row`` is the grade table's row (None: nothing graded)."""
    row = row or {}
    messages = messages_by_exercise(row)
    tests = []
    for e in exercises_of(assignment):
        weight = weights.get(e, 1.0)
        outcome = row.get(e) or "not submitted"
        passed = outcome == "passed"
        earned = float(row.get("capstone score") or 0) if e == capstone.EXERCISE else float(passed)
        tests.append({"name": f"{e} {checks.EXERCISES[e]}", "number": e, "score": number(weight * earned),
                      "max_score": number(weight), "status": "passed" if passed else "failed",
                      "output": f"{outcome}. {messages.get(e, '')}".strip(), "visibility": visibility})
    lines = [*notes]
    if row.get("status"):
        lines.append(f"Status: {row['status']}")
    if row.get("justification untouched"):
        lines.append("Your justification is missing or still the template's text.")
    return {"score": number(sum(t["score"] for t in tests)), "execution_time": int(round(seconds)),
            "output": "\n".join(lines) or "Graded.", "output_format": "text", "test_output_format": "text",
            "visibility": visibility, "stdout_visibility": "hidden", "tests": tests,
            "extra_data": {"ftcourse": __version__, "secret": row.get("secret", ""),
                           "sha256": row.get("sha256", "")}}


def grade_submission(root: Path) -> dict:
    """Grade ``root/submission`` (Gradescope's layout) and write ``root/results/results.json``; returns it."""
    start = time.monotonic()
    config = read_config(root)
    assignment, weights = config["assignment"], config["weights"]
    secret_file = root / "source" / SECRET
    course_secret.read(secret_file)  # a missing or readable secret stops here, before any student is judged
    chosen, notes = find_notebooks(root / "submission", assignment)
    row = None
    if not chosen:
        notes.append(f"No notebook of assignment {assignment} was found in the submission. Hand in the exercise "
                     f"notebook of assignment {assignment} (its file from `ftcourse exercises`, with your code in it).")
    else:
        with tempfile.TemporaryDirectory(prefix="ftcourse-gradescope-") as tmp:
            student = Path(tmp) / "submissions" / "student"
            student.mkdir(parents=True)
            (Path(tmp) / "out").mkdir()
            names = [path.name for path in chosen]
            for i, path in enumerate(chosen):  # the student's own names, unless two are the same
                shutil.copyfile(path, student / (path.name if names.count(path.name) == 1 else f"{i}-{path.name}"))
            rows = grade(student.parent, Path(tmp) / "out" / "grades.csv", secret_file=secret_file,
                         weights=weights, jobs=1, verbose=True)
        row = next((r for r in rows if r.get("assignment") == assignment), rows[0] if rows else None)
    results = results_json(row, assignment, weights, visibility=config["visibility"],
                           seconds=time.monotonic() - start, notes=notes)
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(out, lambda f: f.write(json.dumps(results, indent=1).encode()), mode=0o644)
    return results


def check(root: Path) -> None:
    """What ``setup.sh`` runs last: the bundle's settings and secret read, and one sandbox started, so that a
    broken install fails when the teacher uploads the zip, not when the first student submits."""
    from . import sandbox
    from .grade import Settings, check_sandbox

    config = read_config(root)
    secret = course_secret.read(root / "source" / SECRET)
    check_sandbox(Settings(secret))
    print(f"ftcourse {__version__} grades assignment {config['assignment']} here, in a {sandbox.isolation()} "
          f"sandbox (secret {course_secret.fingerprint(secret)})")


def main(argv=None) -> int:
    """``python -m ftcourse.grading.gradescope [--check] ROOT`` (ROOT: ``/autograder``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    checking = "--check" in argv
    argv = [a for a in argv if a != "--check"]
    root = Path(argv[0] if argv else "/autograder")
    try:
        if checking:
            check(root)
        else:
            results = grade_submission(root)
            print(f"results.json: {results['score']} of {sum(t['max_score'] for t in results['tests'])} points")
    except (RuntimeError, OSError, ValueError) as error:
        print(f"ftcourse could not grade here: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
