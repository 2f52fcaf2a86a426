"""The course's notebooks: committed clean, badged for Colab, exercises in sync with solutions and runnable."""

import json
import shutil
from pathlib import Path

import nbclient
import nbformat
import pytest

from ftcourse import cli
from ftcourse.exercises import REPOSITORY, badge, strip_solutions

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for folder in ("notebooks", "solutions", "exercises")
                   for p in (ROOT / folder).glob("*.ipynb"))


def test_there_are_lessons_solutions_and_exercises():
    folders = {path.split("/")[0] for path in NOTEBOOKS}
    assert folders == {"notebooks", "solutions", "exercises"}, NOTEBOOKS
    lessons = sorted(p.split("/")[1].split("_")[0] for p in NOTEBOOKS if p.startswith("notebooks/"))
    assignments = sorted(p.split("/")[1].split("_")[0] for p in NOTEBOOKS if p.startswith("solutions/"))
    assert lessons == ["00", "01", "02", "03", "03b", "04", "04b", "05", "06", "07", "08", "09"], lessons
    assert assignments == ["01", "02", "03", "04", "05", "07", "08", "09", "10"], assignments  # 10: the capstone


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads((ROOT / path).read_text())
    dirty = [i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_opens_with_its_own_colab_badge_and_installs_itself_in_colab(path):
    notebook = nbformat.read(ROOT / path, as_version=4)
    assert notebook.cells[0].source.strip() == badge(path)
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert '"google.colab" in sys.modules' in first_code.source
    assert f"git+https://github.com/{REPOSITORY}" in first_code.source
    assert notebook.metadata.get("accelerator") == "GPU"


def test_exercises_are_in_sync_with_solutions(capsys):
    assert cli.main(["exercises", "--check", "--root", str(ROOT)]) == 0


def test_an_edited_solution_puts_the_exercises_out_of_sync(tmp_path, capsys):
    for folder in ("solutions", "exercises"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    solution = next((tmp_path / "solutions").glob("*.ipynb"))
    notebook = nbformat.read(solution, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("A new paragraph."))
    nbformat.write(notebook, solution)
    assert cli.main(["exercises", "--check", "--root", str(tmp_path)]) == 1
    assert solution.name in capsys.readouterr().out
    assert cli.main(["exercises", "--root", str(tmp_path)]) == 0
    assert cli.main(["exercises", "--check", "--root", str(tmp_path)]) == 0


def test_solution_blocks_become_stubs_that_state_the_task():
    source = ("def f(x):\n    # TASK: double x.\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
              "print(f)")
    assert strip_solutions(source) == ("def f(x):\n    # TASK: double x.\n    # YOUR CODE HERE\n"
                                       "    raise NotImplementedError('double x.')\nprint(f)")


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "without a '# TASK"),
    ("# TASK: t\n### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without '### BEGIN"),
])
def test_malformed_solution_markers_are_reported(source, message):
    with pytest.raises(ValueError, match=message):
        strip_solutions(source)


@pytest.mark.slow  # runs the whole notebook in a kernel
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.startswith("exercises/")])
def test_exercise_notebook_runs_and_fails_only_at_its_stubs(path):
    notebook = nbformat.read(ROOT / path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str((ROOT / path).parent)}})
    client.execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors, "an exercise notebook whose stubs never run checks nothing"
    assert {e.ename for e in errors} <= {"NotImplementedError", "ExerciseNotDone"}, [(e.ename, e.evalue)
                                                                                    for e in errors]
    for error in errors:  # a check shows its message alone, not a traceback through the checks' code
        if error.ename == "ExerciseNotDone":
            assert len(error.traceback) <= 3 and not any("checks.py" in line for line in error.traceback)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.startswith("notebooks/")])
def test_assignment_notebooks_carry_their_id_and_say_that_run_all_stops_at_a_stub(path):
    notebook = nbformat.read(ROOT / path, as_version=4)
    assert notebook.metadata["ftcourse"]["assignment"] == Path(path).name[:2]
    assert "Run All stops" in notebook.cells[1].source


@pytest.mark.slow  # grades the worked solutions in a sandbox
def test_the_worked_solutions_get_full_marks_from_the_grader(tmp_path):
    from ftcourse.grading import grade

    folder = tmp_path / "submissions" / "teacher"
    folder.mkdir(parents=True)
    for path in (ROOT / "solutions").glob("0[1-9]_*.ipynb"):  # every lesson's assignment; the capstone elsewhere
        shutil.copy(path, folder / path.name)
    rows = grade.grade(folder.parent, tmp_path / "grades.csv", verbose=False)
    assert len(rows) == 8 and sum(r["points"] for r in rows) == sum(r["possible"] for r in rows) == 18, rows
    for row in rows:  # one row per assignment, "NAME: ok" ("N cell(s) raised an error" would follow a bad one)
        assert row["points"] == row["possible"] and row["status"].endswith(": ok"), row
