"""The student's side of grading: runs inside the sandbox (:mod:`~ftcourse.grading.sandbox`), and nothing here is
trusted.

``python -m ftcourse.grading.worker NOTEBOOK CELL_SECONDS`` runs the notebook's code cells one by one in an IPython
shell (magics work; a cell that raises or runs out of time does not stop the rest), then answers the grader's questions:

1. it sends ``{"kind": "ready", ...}`` on the answers descriptor (``FTCOURSE_ANSWERS_FD``);
2. it reads a request from stdin: ``{"exercises": {id: [inputs, ...]}}`` (one inputs per question of the exercise)
   or ``{"capstone": inputs}``;
3. for each question it finds the student's function by its name and sends back what
   :attr:`ftcourse.checks.Exercise.answer` makes of it, as plain data; errors become ``{"error": ...}``.

Messages both ways are frames (:mod:`ftcourse.grading.frames`): plain data and dense tensors, read with bounds. The
grader judges in its own process; whatever this process sends is only an answer, never a verdict.
"""

from __future__ import annotations

import os
import signal
import sys

from .frames import HEADER, MAX_FRAME_BYTES, decode, encode


def _read_exactly(stream, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class CellTimedOut(Exception):
    """A cell ran past its time limit."""


def _alarm(signum, frame):
    raise CellTimedOut("this cell ran past its time limit")


def run_notebook(path: str, cell_seconds: int) -> tuple[dict, list]:
    """Run every code cell of the notebook at ``path``; returns the namespace and the cells that raised."""
    import json

    from IPython.core.interactiveshell import InteractiveShell

    with open(path, encoding="utf-8") as f:  # the grader has checked it is a notebook (nbformat is slow to import)
        cells = json.load(f)["cells"]
    shell = InteractiveShell.instance()
    signal.signal(signal.SIGALRM, _alarm)
    errors = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        signal.alarm(cell_seconds)
        try:
            result = shell.run_cell("".join(source) if isinstance(source, list) else str(source), store_history=False)
        finally:
            signal.alarm(0)
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            errors.append((index, type(error).__name__))
    return shell.user_ns, errors


def answer(request: dict, namespace: dict) -> dict:
    """The student's answers to the grader's request, as plain data."""
    from .. import capstone, checks

    def one(exercise, inputs, seconds):
        fn = namespace.get(exercise.function)
        if not callable(fn):
            return {"error": f"the notebook defines no function {exercise.function}()", "not_done": True}
        signal.alarm(seconds)
        try:
            return {"value": checks.plain(exercise.answer(fn, inputs))}
        except NotImplementedError:
            return {"error": "not done yet: the stub raises NotImplementedError", "not_done": True}
        except BaseException as error:  # whatever the student's code raised, as words
            return {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        finally:
            signal.alarm(0)

    if "capstone" in request:
        return {"capstone": sendable(one(checks.GRADED[capstone.EXERCISE], request["capstone"], 0))}
    return {"exercises": {id: [sendable(one(checks.GRADED[id], inputs, 120)) for inputs in rounds]
                          for id, rounds in request["exercises"].items() if id in checks.GRADED}}


def sendable(reply: dict) -> dict:
    """``reply``, or an error that says why it cannot travel as a frame (nested too deep, a sparse tensor, too
    big), so that one answer that cannot be sent does not lose the others."""
    try:
        size = len(encode(reply))
    except (TypeError, ValueError) as error:
        return {"error": f"the answer cannot be sent to the grader: {str(error)[:200]}"}
    if size > MAX_FRAME_BYTES:
        return {"error": f"the answer is {size / 2**20:.0f} MB; at most {MAX_FRAME_BYTES // 2**20} MB can be sent"}
    return reply


def main(argv=None) -> int:
    path, cell_seconds = (argv or sys.argv[1:])[:2]
    channel = os.environ["FTCOURSE_ANSWERS_FD"]
    if channel == "stdout":  # in a container: answers on stdout, and everything the notebook prints on stderr
        answers = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
    else:
        answers = os.fdopen(int(channel), "wb")
    requests = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the student's code reads an empty stdin; the requests come on the copy
    namespace, errors = run_notebook(path, int(cell_seconds))
    answers.write(encode({"kind": "ready", "errors": errors}))
    answers.flush()
    while True:
        header = _read_exactly(requests, HEADER.size)
        if header is None:
            return 0
        request = decode(_read_exactly(requests, HEADER.unpack(header)[0]) or b"")
        answers.write(encode({"kind": "answers", **answer(request, namespace)}))
        answers.flush()


if __name__ == "__main__":
    sys.exit(main())
