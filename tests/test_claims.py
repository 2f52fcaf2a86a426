import json
import os
from pathlib import Path

import pytest

from ftcourse import claims
from ftcourse.claims import ClaimFailed, claim
from ftcourse.stats import paired_difference

ROOT = Path(__file__).resolve().parents[1]


def interval(low, high):
    return {"mean": (low + high) / 2, "std": 0.01, "n": 3, "low": low, "high": high, "confidence": 0.9}


@pytest.mark.parametrize("low, high, held", [(0.11, 0.3, True), (0.1, 0.3, False), (0.09, 0.3, False)])
def test_beats_asks_the_low_end_above_the_margin(low, high, held, monkeypatch):
    monkeypatch.setenv("FTCOURSE_CLAIMS", "learner")
    assert bool(claim("A beats B by more than 0.1", interval(low, high), beats=0.1)) is held


@pytest.mark.parametrize("low, high, held", [(-0.04, 0.04, True), (-0.06, 0.01, False), (-0.01, 0.05, False),
                                             (-0.2, 0.2, False)])
def test_matches_asks_the_whole_interval_inside_the_margin(low, high, held, monkeypatch):
    monkeypatch.setenv("FTCOURSE_CLAIMS", "learner")
    assert bool(claim("A matches B within 0.05", interval(low, high), matches=0.05)) is held


@pytest.mark.parametrize("low, held", [(-0.04, True), (-0.05, False), (-0.3, False)])
def test_not_below_asks_the_low_end_above_minus_the_margin(low, held, monkeypatch):
    monkeypatch.setenv("FTCOURSE_CLAIMS", "learner")
    assert bool(claim("A is at most 0.05 below B", interval(low, 0.5), not_below=0.05)) is held


def test_one_seed_never_supports_a_claim(monkeypatch):
    monkeypatch.setenv("FTCOURSE_CLAIMS", "learner")
    one_seed = paired_difference([0.9], [0.1])
    assert not claim("A beats B", one_seed, beats=0.0)
    assert not claim("A matches B", one_seed, matches=1.0)


def test_the_verdict_is_one_readable_line(capsys):
    verdict = claim("fine-tuning beats scratch by more than 0.15", paired_difference([0.9, 0.8, 0.85],
                                                                                     [0.6, 0.55, 0.62]), beats=0.15)
    line = capsys.readouterr().out
    assert line == str(verdict) + "\n" and line.count("\n") == 1
    assert line.startswith("✓ holds: fine-tuning beats scratch by more than 0.15 [low end > +0.150] measured +0.260")
    assert "90% interval +0.199 to +0.321" in line


def test_holds_takes_a_result_that_is_not_a_difference(monkeypatch, capsys):
    assert claim("a probe steps faster", holds=True, measured="3.1 ms against 9.8 ms")
    assert "measured 3.1 ms against 9.8 ms" in capsys.readouterr().out
    monkeypatch.setenv("FTCOURSE_CLAIMS", "learner")
    assert not claim("a probe steps faster", holds=False, measured="9.9 ms against 9.8 ms")


def test_a_failed_claim_fails_where_claims_are_strict(monkeypatch):
    monkeypatch.setenv("FTCOURSE_CLAIMS", "strict")
    with pytest.raises(ClaimFailed, match=r"(?s)✗ FAILS: A beats B.*This run: profile .*seeds .*thread"):
        claim("A beats B", interval(-0.1, 0.2), beats=0.0)
    assert issubclass(ClaimFailed, AssertionError)  # pytest and nbval report it as a failed check


def test_at_unverified_sizes_a_failed_claim_is_shown_not_asserted(monkeypatch, capsys):
    from ftcourse import env

    monkeypatch.setenv("FTCOURSE_CLAIMS", "strict")
    env.setup(profile="gpu", verbose=False)
    assert not claim("A beats B", interval(-0.1, 0.2), beats=0.0)
    assert "The course checked:" in capsys.readouterr().out


def test_in_a_learners_session_a_failed_claim_explains_and_goes_on(monkeypatch, capsys):
    monkeypatch.delenv("FTCOURSE_CLAIMS", raising=False)
    verdict = claim("A beats B", interval(-0.1, 0.2), beats=0.0)
    out = capsys.readouterr().out
    assert not verdict and out.startswith("✗ FAILS: A beats B")
    for part in ("The claim:", "The course checked:", "This run measured:", "Why they can differ:",
                 "FTCOURSE_SEEDS", "The lesson goes on"):
        assert part in out


@pytest.mark.parametrize("kwargs", [{}, {"beats": 0.1, "matches": 0.1}, {"beats": 0.1, "holds": True}])
def test_a_claim_needs_exactly_one_rule(kwargs):
    with pytest.raises(TypeError, match="exactly one of beats=, matches= or not_below="):
        claim("A beats B", interval(0.2, 0.3), **kwargs)
    with pytest.raises(TypeError, match="holds="):
        claim("A beats B")


@pytest.mark.parametrize("kwargs", [{"matches": 0.0}, {"not_below": -0.1}, {"beats": float("nan")}])
def test_a_margin_must_be_meaningful(kwargs):
    with pytest.raises(ValueError, match="margin"):
        claim("A and B", interval(-0.01, 0.01), **kwargs)


def test_a_notebook_in_learner_mode_shows_the_box_and_runs_the_next_cell(tmp_path):
    """A simulated learner's session: a real kernel, claims not strict; the failed claim's box is HTML in the cell's
    outputs, the cell raises nothing, and the next cell runs."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from ftcourse.claims import claim\n"
                                  "v = claim('A beats B', {'mean': 0.05, 'low': -0.1, 'high': 0.2}, beats=0.0)"),
        nbformat.v4.new_code_cell("print('the lesson went on', bool(v))"),
    ])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FTCOURSE_CLAIMS", None)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)
    first, second = notebook.cells[0].outputs, notebook.cells[1].outputs
    assert not any(o.output_type == "error" for o in first + second)
    shown = json.dumps([o.get("data", {}) for o in first])
    assert "ftcourse-claim-disagrees" in shown and "This run measured" in shown and "Why they can differ" in shown
    assert "the lesson went on False" in "".join(o.get("text", "") for o in second)


def test_the_strict_setting_reaches_the_test_suite_and_the_site_build():
    assert claims.strict()  # conftest.py sets it for the tests and for the kernels nbval starts
    assert '"FTCOURSE_CLAIMS": "strict"' in (ROOT / "ftcourse" / "site.py").read_text()


# ----------------------------------------------------------------------------------------------------------------
# No lesson asserts an absence.

def interval_end(node) -> str | None:
    """``"low"`` or ``"high"`` when ``node`` reads an interval's end (``d["low"]``, ``d.high``), else None."""
    import ast

    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in ("low", "high"):
        return node.slice.value
    if isinstance(node, ast.Attribute) and node.attr in ("low", "high"):
        return node.attr
    return None


def absences(source: str) -> list[str]:
    """The comparisons in ``source`` that test for ignorance: an interval's low end below something ("not clearly
    above", "spans zero") or its high end above something ("never clearly below").

    ``low > m`` (beats), ``high < m`` (clearly below) and ``-m < low and high < m`` (equivalence) are positive
    claims; ``low < m`` and ``high > m`` are absences, however they are written.
    """
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for left, op, right in zip(operands, node.ops, operands[1:]):
            below = isinstance(op, (ast.Lt, ast.LtE))
            above = isinstance(op, (ast.Gt, ast.GtE))
            if (interval_end(left) == "low" and below) or (interval_end(right) == "low" and above) \
                    or (interval_end(left) == "high" and above) or (interval_end(right) == "high" and below):
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("source", ['assert g["low"] < 0 < g["high"]', 'assert b["high"] > 0',
                                    'assert below["high"] >= 0', 'assert d["low"] <= 0', 'ok = 0 > d.low',
                                    'assert 0 < d["high"]'])
def test_an_absence_is_recognised_however_it_is_written(source):
    assert absences(source)


@pytest.mark.parametrize("source", ['assert g["low"] > 0.1', 'assert -0.05 < g["low"] and g["high"] < 0.05',
                                    'assert d["high"] < -0.3', 'assert d["mean"] > 0', 'assert 0.1 < d.low'])
def test_positive_claims_are_not_absences(source):
    assert not absences(source)


def lesson_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    lines = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(line for cell in lines for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb")),
                         ids=lambda p: p.name)
def test_no_lesson_asserts_an_absence(path):
    found = absences(lesson_code(path))
    assert not found, (f"{path.name} tests for ignorance ({found}): claim something positive with "
                       f"ftcourse.claims.claim (beats=, matches=, not_below=), or say in prose that the seeds do not "
                       f"settle it and print the interval.")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_lesson_checks_its_results_through_claim(path):
    """A bare ``assert`` stops a learner's lesson with no explanation; ``claim`` says what was claimed, what this run
    measured and, where the run disagrees, why (and is as strict as an assert under tests and the site build)."""
    import ast

    bare = [ast.unparse(node)[:80] for node in ast.walk(ast.parse(lesson_code(path))) if isinstance(node, ast.Assert)]
    assert not bare, f"{path.name}: state these as ftcourse.claims.claim(...): {bare}"
