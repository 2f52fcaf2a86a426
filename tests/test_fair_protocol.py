"""The fair-comparison protocol, checked in the course's own notebooks: the test split is read, never chosen on.

COURSE.md: anything chosen (a rate, a step count, a method, a source) is chosen on the validation split, and the test
split gives the final number once. These tests read every code cell of the lessons, solutions and exercises and fail
on the two ways a test split leaks into a choice:

- passing a test split to training (``fit(..., val=task.test)`` or ``fit(model, task.test)``): whatever is watched
  while training gets chosen on, at least by eye;
- picking the best of several by test accuracy (``max``/``idxmax``/``sort_values``/``argmax`` over ``accuracy`` that
  is not ``val_accuracy``). A line that ranks by test accuracy to *report* a result, not to choose one, says so with
  the comment ``# reported, not chosen``.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb"))

TEST_AS_VAL = re.compile(r"\bval\s*=\s*[\w.\[\]\"']*\.test\b")
TRAIN_ON_TEST = re.compile(r"\bfit\(\s*[\w.\[\]]+\s*,\s*[\w.\[\]\"']*\.test\b")
RANKING = re.compile(r"\b(max|min|idxmax|idxmin|argmax|argmin)\b|\b(sort_values|nlargest)\([^)]*accuracy")
TEST_ACCURACY = re.compile(r"(?<!val_)\baccuracy")
VALIDATION = re.compile(r"\bval")  # val, val_accuracy, task.val (but not sort_values)
EXEMPT = "# reported, not chosen"


def code_lines(path):
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "code":
            for number, line in enumerate("".join(cell["source"]).splitlines(), 1):
                yield f"{path.relative_to(ROOT)} cell {index} line {number}", line


CLAIM_LINE = re.compile(r"\bclaim\(|\bholds=|\bmeasured=")  # a claim reports a result after the choice


def leaks(line):
    if EXEMPT in line or CLAIM_LINE.search(line):
        return None
    if TEST_AS_VAL.search(line):
        return "passes a test split as val"
    if TRAIN_ON_TEST.search(line):
        return "trains on a test split"
    if RANKING.search(line) and TEST_ACCURACY.search(line) and not VALIDATION.search(line):
        return "ranks by test accuracy"
    return None


def test_the_checks_catch_the_leaks_they_are_for():
    assert leaks("history = fit(model, task.train, val=task.test)") == "passes a test split as val"
    assert leaks("fit(model, task.test, steps=10)") == "trains on a test split"
    assert leaks('best = table.sort_values("accuracy_mean").iloc[-1]') == "ranks by test accuracy"
    assert leaks("best = max(rates, key=lambda lr: accuracy[lr])") == "ranks by test accuracy"
    assert leaks('best = table.sort_values("val_accuracy_mean").iloc[-1]') is None
    assert leaks("fit(model, task.train, val=task.val)") is None
    assert leaks('top = table.sort_values("accuracy_mean").iloc[-1]  # reported, not chosen') is None
    assert leaks('return runs.sort_values("seed")["accuracy"].to_numpy()') is None  # sorted by seed, not by accuracy
    assert leaks('claim("every run above 0.9", holds=runs["accuracy"].min() > 0.9)') is None  # a check, not a choice


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_notebook_chooses_on_the_test_split(path):
    found = [f"{where}: {why}: {line.strip()}" for where, line in code_lines(path) if (why := leaks(line))]
    assert not found, "\n".join(found)
