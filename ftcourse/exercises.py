"""Exercises are generated from solutions, so the two can never drift apart.

``solutions/*.ipynb`` is the single source. In a solution notebook, the code a learner must write sits between
nbgrader's markers, after a ``# TASK:`` comment that says what to do::

    def freeze_first(model, k):
        # TASK: freeze the first k stages of the model (requires_grad=False) and return it.
        ### BEGIN SOLUTION
        for name in model.stage_names[:k]:
            model.stage(name).requires_grad_(False)
        return model
        ### END SOLUTION

``ftcourse exercises`` writes ``exercises/*.ipynb`` with each such block replaced by a stub that raises
``NotImplementedError`` carrying the task, outputs removed, and the "Open in Colab" badge pointing at the exercise's
own path. ``ftcourse exercises --check`` fails when the exercises on disk differ from what the solutions generate.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
TASK = re.compile(r"^\s*# TASK:\s*(?P<task>.+?)\s*$")
REPOSITORY = "ftcourse/ftcourse"  # owner/name on GitHub: the one place the course's address is set
BRANCH = "main"


def badge(path: str) -> str:
    """The markdown of the "Open in Colab" badge for the notebook at ``path`` (relative to the repository root)."""
    url = f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{path}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION block of a code cell's ``source`` by a stub raising NotImplementedError."""
    lines, out, task, inside = source.split("\n"), [], None, False
    for number, line in enumerate(lines, start=1):
        if TASK.match(line) and not inside:
            task = TASK.match(line)["task"]
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: a second {BEGIN!r} before {END!r}.")
            if task is None:
                raise ValueError(f"{where}, line {number}: {BEGIN!r} without a '# TASK: ...' comment before it. "
                                 f"Say what the learner must do; the stub's message repeats it.")
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}raise NotImplementedError({task!r})")
            inside = True
        elif line.strip() == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END!r} without {BEGIN!r}.")
            inside, task = False, None
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} is never closed by {END!r}.")
    return "\n".join(out)


def make_exercise(solution: nbformat.NotebookNode, exercise_path: str) -> nbformat.NotebookNode:
    """The exercise notebook for a solution notebook: stubs instead of solutions, no outputs, its own badge."""
    notebook = copy.deepcopy(solution)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, where=f"{exercise_path} cell {index}")
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown" and "colab-badge.svg" in cell.source:
            cell.source = re.sub(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)", badge(exercise_path), cell.source)
    return notebook


def generate(root=".", check: bool = False) -> list[str]:
    """Write (or with ``check``, compare) ``exercises/X.ipynb`` for every ``solutions/X.ipynb`` under ``root``.

    Returns the exercise paths that were written or, with ``check``, that are out of sync (missing, different, or
    left over from a solution that no longer exists).
    """
    root = Path(root)
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    if not solutions:
        raise FileNotFoundError(f"No solution notebooks in {root / 'solutions'}; run from the course's root.")
    changed = []
    for solution_path in solutions:
        relative = f"exercises/{solution_path.name}"
        exercise = make_exercise(nbformat.read(solution_path, as_version=4), relative)
        text = nbformat.writes(exercise) + "\n"
        target = root / relative
        if not target.exists() or target.read_text() != text:
            changed.append(relative)
            if not check:
                target.parent.mkdir(exist_ok=True)
                target.write_text(text)
    wanted = {p.name for p in solutions}
    changed += [f"exercises/{p.name}" for p in sorted((root / "exercises").glob("*.ipynb")) if p.name not in wanted]
    return changed
