"""``ftcourse grade``: turn a folder of submitted exercise notebooks into a grade table.

Layout: one notebook per student (``SUBMISSIONS/alice.ipynb``) or one folder per student
(``SUBMISSIONS/alice/01_pretraining_vs_finetuning.ipynb``, ...). Each notebook runs top to bottom in a fresh kernel
(quick profile, a time limit per cell, errors in cells do not stop it), and the exercise checks it calls report
what passed.
The table has one row per student: a 1 or 0 per exercise, the total, a status and the checks' messages (what
passed, with figures such as the capstone's accuracy, and what failed, with the hint). A notebook
that is broken, crashes its kernel or runs out of time gives a row with zeros and the reason -- never a crash of the
whole run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .checks import EXERCISES, REPORT_VARIABLE


@contextmanager
def _environment(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_notebook(path: Path, timeout: int) -> tuple[list[dict], str]:
    """Execute one notebook; returns the check results it reported and a status ("ok" or what went wrong)."""
    import nbclient
    import nbformat

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # not JSON, not a notebook...
        return [], f"broken notebook: {type(error).__name__}: {error}"
    fd, report = tempfile.mkstemp(prefix="ftcourse-grade-", suffix=".jsonl")
    os.close(fd)
    status = "ok"
    try:
        with _environment(**{REPORT_VARIABLE: report, "FTCOURSE_PROFILE": "quick", "MPLBACKEND": "Agg"}):
            client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                                             resources={"metadata": {"path": str(path.parent)}})
            client.execute()
        errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        if errors:
            status = f"ok, {len(errors)} cell(s) raised an error (first: {errors[0].get('ename')})"
    except nbclient.exceptions.CellTimeoutError:
        status = f"timed out: a cell ran longer than {timeout} s"
    except nbclient.exceptions.DeadKernelError as error:
        status = f"kernel died: {error}"
    except Exception as error:
        status = f"could not run: {type(error).__name__}: {error}"
    results = [json.loads(line) for line in Path(report).read_text().splitlines() if line.strip()]
    os.remove(report)
    if status != "ok" and not status.startswith("ok,"):
        results = []  # a notebook that did not run to the end scores zero; the status says why
    return results, status


def exercises_for(notebooks: list[Path]) -> list[str]:
    """The exercises of the lessons submitted (from file names like ``01_...ipynb``), else all of them."""
    lessons = {m.group(1) for p in notebooks if (m := re.match(r"(\d\d)_", p.name))}
    chosen = [e for e in EXERCISES if e.split(".")[0] in lessons]
    return chosen or list(EXERCISES)


def grade(submissions, out="grades.csv", *, timeout: int = 600, verbose: bool = True) -> list[dict]:
    """Grade every submission under ``submissions``; write the table to ``out`` (CSV) and return its rows."""
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions} is not a folder. Put one notebook (or one folder of notebooks) per "
                                f"student in it.")
    students = {}
    for entry in sorted(submissions.iterdir()):
        if entry.is_file() and entry.suffix == ".ipynb":
            students[entry.stem] = [entry]
        elif entry.is_dir() and not entry.name.startswith("."):
            students[entry.name] = sorted(entry.rglob("*.ipynb"))
    if not students:
        raise FileNotFoundError(f"No notebooks in {submissions}: expected NAME.ipynb or NAME/*.ipynb per student.")
    columns = exercises_for([p for paths in students.values() for p in paths])
    rows = []
    for student, notebooks in students.items():
        start = time.perf_counter()
        passed, messages, statuses = set(), [], []
        if not notebooks:
            statuses.append("no notebook submitted")
        for notebook in notebooks:
            results, status = run_notebook(notebook, timeout)
            statuses.append(f"{notebook.name}: {status}")
            for r in results:
                if r["passed"]:
                    passed.add(r["exercise"])
                messages.append(r["message"].replace("\n", " "))  # what passed (e.g. the accuracy) and what did not
        row = {"student": student, **{e: int(e in passed) for e in columns}}
        row["total"] = sum(row[e] for e in columns)
        row["status"] = "; ".join(statuses)
        row["messages"] = " | ".join(messages)
        rows.append(row)
        if verbose:
            print(f"{student}: {row['total']}/{len(columns)} ({time.perf_counter() - start:.0f} s) {row['status']}")
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if verbose:
        print(f"wrote {out}")
    return rows
