import csv

import nbformat
import pytest

from ftcourse import cli

HEADER = "from ftcourse import checks\n"
RIGHT = """def freeze_first(model, k):
    for name in model.stage_names[:k]:
        model.stage(name).requires_grad_(False)
    return model

def count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
"""
WRONG = """def freeze_first(model, k):
    for name in model.stage_names[:k + 1]:
        model.stage(name).requires_grad_(False)
    return model

def count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
"""
CHECKS = ["checks.check_freeze_first(freeze_first)", "checks.check_count_trainable(count_trainable)"]


def submission(path, code, extra=()):
    cells = [nbformat.v4.new_code_cell(HEADER + code), *map(nbformat.v4.new_code_cell, CHECKS)]
    cells += [nbformat.v4.new_code_cell(c) for c in extra]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


@pytest.mark.slow  # runs notebooks in kernels, one until its time limit
def test_grade_scores_right_wrong_broken_and_timed_out_submissions(tmp_path):
    folder = tmp_path / "submissions"
    submission(folder / "alice" / "02_freezing.ipynb", RIGHT)
    submission(folder / "bob.ipynb", WRONG)
    folder.joinpath("carol.ipynb").write_text("{ this is not a notebook")
    submission(folder / "dave.ipynb", RIGHT, extra=["import time\ntime.sleep(120)"])
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(folder), "--out", str(out), "--timeout", "20"]) == 0
    rows = {r["student"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"alice", "bob", "carol", "dave"}
    assert (rows["alice"]["02.1"], rows["alice"]["02.2"], rows["alice"]["total"]) == ("1", "1", "2")
    assert rows["alice"]["status"] == "02_freezing.ipynb: ok"
    assert (rows["bob"]["02.1"], rows["bob"]["02.2"]) == ("0", "1")
    assert "with k=0 the trainable stages" in rows["bob"]["messages"] and "ExerciseFailed" in rows["bob"]["status"]
    assert rows["carol"]["total"] == "0" and "broken notebook" in rows["carol"]["status"]
    assert rows["dave"]["total"] == "0" and "timed out" in rows["dave"]["status"]


@pytest.mark.slow  # trains the capstone's model in a kernel
def test_grade_runs_the_capstone_and_reports_the_accuracy_reached(tmp_path):
    """The capstone's worked solution passes under `ftcourse grade`; its exercise (a stub) scores zero."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    folder = tmp_path / "submissions"
    folder.mkdir()
    shutil.copy(root / "solutions" / "07_capstone.ipynb", folder / "erin.ipynb")
    shutil.copy(root / "exercises" / "07_capstone.ipynb", folder / "frank.ipynb")
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(folder), "--out", str(out), "--timeout", "300"]) == 0
    rows = {r["student"]: r for r in csv.DictReader(out.open())}
    assert rows["erin"]["07.1"] == "1", rows["erin"]
    assert "PASSED exercise 07.1: test accuracy" in rows["erin"]["messages"]
    assert rows["frank"]["07.1"] == "0" and "not done yet" in rows["frank"]["messages"]
