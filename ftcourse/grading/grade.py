"""``ftcourse grade``: turn a folder of submitted exercise notebooks into a grade table, trusting none of them.

Layout: one notebook per student (``SUBMISSIONS/alice.ipynb``) or one folder per student
(``SUBMISSIONS/alice/01_pretraining_vs_finetuning.ipynb``, ...). Which exercises a notebook holds is read from its
metadata (``metadata.ftcourse.assignment``, which ``ftcourse exercises`` writes), never from its file name.

Design: what is trusted, and why
--------------------------------
A submission is code written by someone who may want a better mark, or a worse one for a classmate. So:

- **The verdict is computed here, never in the student's process.** Each notebook runs in a sandboxed worker
  (:mod:`~ftcourse.grading.worker` inside :mod:`~ftcourse.grading.sandbox`). When it has run, this process sends
  it inputs drawn from a secret of this grading run, and the worker sends back what the student's functions return
  on them, as plain data (frames of :mod:`~ftcourse.grading.frames`: JSON and safetensors, read with bounds on size,
  depth and count, so that decoding costs what the frame's size says). :mod:`ftcourse.checks` judges those answers
  here. The checks the notebook itself calls only give the learner feedback: they count for nothing. Patching
  them, printing ``PASSED`` or writing files changes nothing; forging an answer means computing it.
- **The capstone's test set never exists in the student's process.** It comes from the course secret
  (:mod:`~ftcourse.grading.course_secret`: the same test in every run of the course), or a secret drawn for the
  table; the worker gets only the training images, after the notebook has run, and a time limit; it returns the
  model's weights, which are checked and loaded into a network built here and tested here.
- **Each submission runs alone**: a fresh copy of its notebook, its own HOME and TMPDIR, a clean environment,
  resource limits, a wall-clock limit per cell and per notebook, and every process it started killed at the end.
  On Linux with user namespaces it also cannot see or write anything outside its sandbox (see
  :mod:`ftcourse.grading.sandbox` for what each platform gets).
- **Results are never lost**: each row is written as soon as it is known (atomically: a temporary file, then a
  rename), ``--resume`` skips the students already graded, ``--out`` is checked before anything runs, and whatever
  a worker does -- crash, garbage, silence, flooding its output -- gives that student a row with zeros and the
  reason, while the run goes on.
- **Side by side, still apart**: ``--jobs N`` grades N students at once, each in a sandbox of its own (a thread
  here waits on each; the work is in the sandboxes), and the table is written under one lock, in the folder's order.
- **Nothing is silently dropped**: every entry of the folder gives a row or a line in the printed "skipped"
  list; symbolic links are refused with a row that says so; name clashes are reported; cells of the table are
  escaped against spreadsheet formulas.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .. import capstone, checks
from ..env import usable_cores
from . import course_secret, frames, sandbox
from .table import (assignment_row, columns, escape, exercises_of, printable, read_table, student_row,  # noqa: F401
                    untouched_justification, write_table)

MAX_NOTEBOOK_BYTES = 50 * 2**20
MAX_OUTPUT_BYTES = 20 * 2**20  # a notebook that prints more is stopped
ANSWER_SECONDS = 300  # for the answers to the exercises other than the capstone
TRIES = 2  # a student whose grading hit a bug in the grader is tried again once by --resume, then the row is kept


class Problem(Exception):
    """Why a notebook could not be graded (it scores zero, and the row says this)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while grading, raised where the grader can stop cleanly (see :class:`CtrlC`)."""


class CtrlC:
    """Ctrl-C, deferred to a point where the grader can stop cleanly.

    Python's own handler raises KeyboardInterrupt wherever the main thread happens to be: inside a ``__del__``,
    where it is printed and lost; halfway through killing a sandbox; or only once a blocking call returns. So while
    grading, a first Ctrl-C only sets ``pressed``. The grader calls :meth:`check` before each student and at least
    once a second while it waits for a sandbox; there it raises :class:`Interrupted`, the running sandbox is killed
    and the table written, as after any other stop. The first press also gives Ctrl-C back its previous handler, so
    a second press interrupts at once. It does nothing off the main thread (where Python allows no signal handler)
    or where Ctrl-C is ignored (``SIG_IGN``, as a parent may set for a job it runs in the background).
    """

    def __init__(self):
        self.pressed = False
        self._installed = False
        self._previous = None

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._press)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _press(self, signum, frame) -> None:
        self.pressed = True
        self._restore()

    def _restore(self) -> None:
        if self._installed:  # None: a handler not set from Python; Python's default is the nearest
            signal.signal(signal.SIGINT, signal.default_int_handler if self._previous is None else self._previous)
            self._installed = False

    def check(self) -> None:
        """Raise :class:`Interrupted` if Ctrl-C was pressed."""
        if self.pressed:
            raise Interrupted("Ctrl-C")


# ------------------------------------------------------------------------------------------------------------------
# Discovery: what is in the submissions folder.

@dataclass
class Submission:
    student: str
    notebooks: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # refusals and clashes, for the status column
    refused: bool = False

    def digest(self) -> str:
        """sha256 over the student's notebooks, so that --resume notices a changed submission."""
        h = hashlib.sha256()
        for path in self.notebooks:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        return h.hexdigest()


def discover(folder: Path) -> tuple[list[Submission], list[str]]:
    """The submissions in ``folder`` and the entries skipped, each with the reason."""
    found: dict[str, list[Submission]] = {}
    skipped = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith("."):
            skipped.append(f"{name}: hidden (autosaves such as .ipynb_checkpoints and dot-files are not graded)")
        elif entry.is_symlink():
            student = name[:-6] if name.endswith(".ipynb") else name
            found.setdefault(student, []).append(Submission(student, notes=[
                f"refused {name}: a symbolic link, not a file (submit the notebook itself)"], refused=True))
        elif entry.is_file() and name.endswith(".ipynb"):
            found.setdefault(name[:-6], []).append(Submission(name[:-6], [entry]))
        elif entry.is_dir():
            found.setdefault(name, []).append(_folder_submission(entry))
        else:
            skipped.append(f"{name}: not a notebook (.ipynb) or a folder")
    submissions = []
    for student, same_name in found.items():
        if len(same_name) > 1:  # e.g. nina.ipynb and nina/: both graded, under names that say which is which
            sources = [s.notebooks[0].name if s.notebooks and s.notebooks[0].parent == folder else f"{student}/"
                       for s in same_name]
            for submission, source in zip(same_name, sources):
                submission.student = f"{student} ({source})"
                submission.notes.append(f"name clash: {' and '.join(sources)} are both in the folder")
        submissions += same_name
    return submissions, skipped


def _folder_submission(folder: Path) -> Submission:
    submission = Submission(folder.name)
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .ipynb_checkpoints holds autosaves
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or not name.endswith(".ipynb"):
                continue
            if path.is_symlink():
                submission.notes.append(f"refused {path.relative_to(folder.parent)}: a symbolic link")
            else:
                submission.notebooks.append(path)
        for d in dirs:
            if (Path(root) / d).is_symlink():
                submission.notes.append(f"refused {(Path(root) / d).relative_to(folder.parent)}: a symbolic link")
    if not submission.notebooks and not submission.notes:
        submission.notes.append("no notebook submitted")
    return submission


def read_notebook(path: Path):
    """The notebook at ``path`` (checked: a size limit, valid JSON, nbformat 4), or Problem."""
    import nbformat

    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise Problem(f"{path.name} is {size / 2**20:.0f} MB; notebooks over {MAX_NOTEBOOK_BYTES // 2**20} MB are "
                      f"not graded (clear its outputs)")
    try:
        return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except Exception as error:  # not JSON, not a notebook, not UTF-8...
        raise Problem(f"broken notebook {path.name}: {type(error).__name__}: {str(error)[:120]}") from None


def assignment_of(notebook) -> str | None:
    """The assignment id an exercise notebook carries in ``metadata.ftcourse.assignment`` (e.g. "02"), or None.
    Metadata of any other shape (a list, a number) counts as none: nbformat accepts such notebooks with a warning."""
    metadata = notebook.get("metadata") if isinstance(notebook, dict) else None
    meta = metadata.get("ftcourse") if isinstance(metadata, dict) else None
    value = meta.get("assignment") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and any(e.startswith(value + ".") for e in checks.GRADED) else None


def justification_of(notebook) -> str:
    """The text of the cells tagged "justification" (the capstone asks for one), for the teacher to read. Cells
    whose tags or source are not what nbformat writes (a number, a dict) are passed over."""
    texts = []
    for cell in notebook.get("cells", []) if isinstance(notebook, dict) else []:
        metadata = cell.get("metadata") if isinstance(cell, dict) else None
        tags = metadata.get("tags") if isinstance(metadata, dict) else None
        if isinstance(tags, list) and "justification" in tags:
            source = cell.get("source", "")
            texts.append("".join(source) if isinstance(source, list) and all(isinstance(x, str) for x in source)
                         else source if isinstance(source, str) else "")
    return " ".join(" ".join(texts).split())[:1000]


def plan_of(path: Path) -> tuple:
    """``(path, notebook or Problem, assignment)`` for one submitted notebook. Never raises: a notebook that cannot
    be read, or that breaks this code, is that student's problem, in words."""
    try:
        notebook = read_notebook(path)
        return path, notebook, assignment_of(notebook)
    except Problem as problem:
        return path, problem, None
    except Exception as error:  # a bug here, found by some odd notebook: that student's row says so
        return path, Problem(f"internal error reading {path.name}: {type(error).__name__}: {str(error)[:160]}"), None


# ------------------------------------------------------------------------------------------------------------------
# Running one notebook in its sandbox and asking it for answers.

class _Output(threading.Thread):
    """Reads the sandbox's stdout and stderr, keeps the end, and stops a sandbox that writes too much.

    It reads the pipe's descriptor itself, waiting at most half a second at a time, so that :meth:`finish` always
    ends it. (A buffered ``read1`` holds the stream's lock until some data or the end comes; closing the stream
    from another thread then waits as long as the pipe's last writer lives.)
    """

    def __init__(self, box: sandbox.Sandboxed):
        super().__init__(daemon=True)
        self.box, self.total, self.tail, self.flooded = box, 0, b"", False
        self._finish = threading.Event()

    def run(self):
        fd = self.box.output.fileno()
        while not self._finish.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
            except (OSError, ValueError):
                return
            if not chunk:
                return
            self.total += len(chunk)
            self.tail = (self.tail + chunk)[-2000:]
            if self.total > MAX_OUTPUT_BYTES and not self.flooded:
                self.flooded = True
                self.box.stop()
                return

    def finish(self, seconds: float = 5) -> None:
        """Stop reading (within half a second) and wait for the thread to end."""
        self._finish.set()
        self.join(timeout=seconds)


def _receive(box: sandbox.Sandboxed, output: _Output, deadline: float, waiting_for: str, check=None):
    """The next message from the worker, read within ``deadline``; Problem if it does not come, or is not one.

    ``check`` (if given) is called at least once a second while it waits: :meth:`CtrlC.check`.
    """
    buffer = b""
    needed = frames.HEADER.size
    length = None
    while True:
        if check is not None:
            check()
        left = deadline - time.monotonic()
        if left <= 0:
            raise Problem(f"timed out {waiting_for}")
        ready, _, _ = select.select([box.answers_fd], [], [], min(left, 1.0))
        if not ready:
            if output.flooded:
                raise Problem(f"stopped: it wrote more than {MAX_OUTPUT_BYTES // 2**20} MB of output")
            continue
        chunk = os.read(box.answers_fd, min(1 << 20, needed - len(buffer)))
        if not chunk:
            raise Problem(_ended(box, output, waiting_for))
        buffer += chunk
        if len(buffer) < needed:
            continue
        if length is None:
            length = frames.HEADER.unpack(buffer)[0]
            if length > frames.MAX_FRAME_BYTES:
                raise Problem(f"its answer is {length / 2**20:.0f} MB, over the limit of "
                              f"{frames.MAX_FRAME_BYTES // 2**20} MB")
            buffer, needed = b"", length
            if length:
                continue
        try:
            message = frames.decode(buffer)
        except frames.BadFrame as error:  # garbage, or data past the bounds of a frame
            raise Problem(f"sent something that is not an answer: {error}") from None
        if not isinstance(message, dict):
            raise Problem("sent something that is not an answer")
        return message


def _ended(box: sandbox.Sandboxed, output: _Output, waiting_for: str) -> str:
    try:
        code = box.process.wait(timeout=5)
    except Exception:
        code = None
    if output.flooded:
        return f"stopped: it wrote more than {MAX_OUTPUT_BYTES // 2**20} MB of output"
    why = {-9: "killed (out of memory, or a limit)", -24: "over its CPU-time limit",
           -25: "over its file-size limit", 70: "the sandbox could not be set up"}.get(code, f"exit code {code}")
    last = output.tail.decode("utf-8", "replace").strip().split("\n")[-1:] or [""]  # a CR stays in the line, shown
    return f"its process ended {waiting_for} ({why}){': ' + last[0][:160] if last[0] else ''}"


def _send(box: sandbox.Sandboxed, request: dict, seconds: float = 30, check=None) -> None:
    """Write a request to the worker within ``seconds``: a worker that stops reading cannot block the grader."""
    data = memoryview(frames.encode(request))
    try:
        fd = box.process.stdin.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + seconds
        while data:
            if check is not None:
                check()
            left = deadline - time.monotonic()
            if left <= 0:
                raise Problem("its process stopped reading the grader's questions")
            _, writable, _ = select.select([], [fd], [], min(left, 1.0))
            if writable:
                try:
                    data = data[os.write(fd, data[:65536]):]
                except BlockingIOError:
                    continue
    except (BrokenPipeError, OSError, ValueError):
        raise Problem("its process stopped reading the grader's questions") from None


@dataclass
class Settings:
    secret: int
    timeout: int = 600  # seconds for the whole notebook to run
    cell_timeout: int = 300
    limits: sandbox.Limits = sandbox.Limits()
    mode: str | None = None  # the sandbox's isolation; None: the best this machine has
    hide: tuple = ()
    threads: int = 1  # torch's threads in each sandbox (the machine's cores shared among the jobs)
    weights: dict = field(default_factory=dict)  # points per exercise (default 1)
    capstone_seconds: float | None = None  # the recipe's time limit, measured when first needed
    ctrl_c: CtrlC = field(default_factory=CtrlC)  # checked while waiting for a sandbox
    _capstone: tuple | None = None

    def capstone_target(self):
        if self._capstone is None:
            self._capstone = capstone.target(self.secret)
        return self._capstone

    def capstone_kind(self) -> str:
        return capstone.definition(self.secret)["kind"]

    def inputs(self, exercise_id: str, student: str = "", digest: str = "") -> list:
        """The questions of ``exercise_id`` for one student's submission (its sha256): drawn from the run's secret,
        the student and the submission, so that classmates get other questions, and a changed notebook (a
        ``--resume`` after feedback) gets new ones. One entry per round (:attr:`checks.Exercise.rounds`)."""
        import random

        return checks.questions(checks.GRADED[exercise_id],
                                random.Random(f"{self.secret}/{student}/{digest}/{exercise_id}"))


def grade_notebook(path: Path, notebook, assignment: str, settings: Settings, student: str = "",
                   digest: str = "") -> tuple[dict, str]:
    """Run one notebook in a sandbox and judge its answers here: ({exercise: (outcome, message)}, status), with
    the outcomes of :data:`ftcourse.grading.table.OUTCOMES`."""
    ids = exercises_of(assignment)
    questions = {e: settings.inputs(e, student, digest) for e in ids if e != capstone.EXERCISE}
    threads = str(settings.threads)
    box = sandbox.start(["python", "-I", "-m", "ftcourse.grading.worker", "notebook.ipynb", str(settings.cell_timeout)],
                        {"notebook.ipynb": path.read_bytes()}, limits=settings.limits, mode=settings.mode,
                        hide=settings.hide, env={"FTCOURSE_PROFILE": "quick", "OMP_NUM_THREADS": threads,
                                                 "MKL_NUM_THREADS": threads})
    output = _Output(box)
    output.start()
    try:
        check = settings.ctrl_c.check
        ready = _receive(box, output, time.monotonic() + settings.timeout,
                         f"while the notebook ran (its limit is {settings.timeout} s)", check)
        errors = ready.get("errors") if isinstance(ready.get("errors"), list) else []
        status = "ok" if not errors else f"ok; {len(errors)} cell(s) raised an error"
        answers = {}
        plain = [e for e in ids if e != capstone.EXERCISE]
        if plain:
            _send(box, {"exercises": {e: questions[e] for e in plain}}, check=check)
            reply = _receive(box, output, time.monotonic() + ANSWER_SECONDS, "while answering", check)
            answers.update(reply.get("exercises", {}) if isinstance(reply.get("exercises"), dict) else {})
        if capstone.EXERCISE in ids:
            train, _ = settings.capstone_target()
            seconds = settings.capstone_seconds
            _send(box, {"capstone": checks.capstone_inputs(train)}, check=check)
            reply = _receive(box, output, time.monotonic() + seconds,
                             f"while the recipe trained (its time limit is {seconds:.0f} s on this machine)", check)
            answers[capstone.EXERCISE] = reply.get("capstone")
    except Problem as problem:
        return {e: ("crashed", f"{e}: no answer (the notebook stopped first: see the status)") for e in ids}, \
            str(problem)
    finally:
        box.end()  # every process of the sandbox, so that its output pipe ends
        output.finish()  # then its reader, before the pipes are closed
        box.kill()
    results = {}
    for e in ids:
        if e == capstone.EXERCISE:
            results[e] = _judge(e, answers.get(e), (settings.capstone_target()[1], settings.capstone_kind()))
        else:
            results[e] = _judge_rounds(e, answers.get(e), questions[e])
    if all(result[0] == "not attempted" for result in results.values()):
        status = "not attempted"  # an untouched exercise notebook: its check cells raise NotImplementedError
    return results, status


def _judge_rounds(exercise_id: str, replies, questions: list) -> tuple[str, str]:
    """Judge every round of an exercise: it passes when all of them do (see :attr:`checks.Exercise.rounds`)."""
    if not isinstance(replies, list) or len(replies) != len(questions):
        return "crashed", f"{exercise_id}: no answer"
    what = ""
    for number, (reply, inputs) in enumerate(zip(replies, questions), 1):
        outcome, what = _judge(exercise_id, reply, inputs)[:2]
        if outcome != "passed":
            rounds = f" (question {number} of {len(questions)})" if len(questions) > 1 else ""
            return outcome, what + rounds
    return "passed", what


def _judge(exercise_id: str, reply, inputs) -> tuple[str, str]:
    """Judge one answer here, in the grader's process, on the ``inputs`` it was asked (the capstone: its test set and
    kind):
    (outcome, message), the outcome one of :data:`ftcourse.grading.table.OUTCOMES`; a passed capstone adds the
    share of its points it earned (:func:`ftcourse.capstone.score`).

    A failed answer's message says what was wrong in kind -- the hint -- and never the value the grader expected on
    its own inputs: a student who could read that could copy it into the next submission. (The worker's word that
    a function is still the stub is taken as it is: claiming it falsely only costs the student the point.)"""
    if not isinstance(reply, dict) or ("value" not in reply and "error" not in reply):
        return "crashed", f"{exercise_id}: no answer"
    if "error" in reply:
        outcome = "not attempted" if reply.get("not_done") is True else "crashed"
        return outcome, f"{exercise_id}: {str(reply['error'])[:300]}"
    try:
        if exercise_id == capstone.EXERCISE:  # graded: a share of its points (capstone.score), not all or nothing
            test, kind = inputs
            accuracy, what = checks.judge_capstone(reply["value"], test, kind)
            return "passed", f"PASSED {exercise_id}: {what}", capstone.score(accuracy, kind)
        what = checks.GRADED[exercise_id].judge(reply["value"], inputs)
        return "passed", f"PASSED {exercise_id}: {what}"
    except checks.ExerciseFailed as failed:
        if exercise_id == capstone.EXERCISE:  # the capstone's message is its score and the pass mark: no answer key
            return "wrong", f"{exercise_id}: {' '.join(str(failed).split())}"
        return "wrong", f"{exercise_id}: not right on the grader's questions. Hint: {' '.join(failed.hint.split())}"
    except Exception as error:  # an answer of an unexpected form
        return "wrong", f"{exercise_id}: the answer has an unexpected form ({type(error).__name__})"


# ------------------------------------------------------------------------------------------------------------------
# The table.

def check_out(out: Path, submissions: Path) -> None:
    """Fail now, before anyone is graded, if the table cannot be written at ``out``."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'grades.csv'}.")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist. Create it, or choose another path.")
    if submissions.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} is inside the submissions folder; put the grade table somewhere else.")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"--out {out}: cannot write in {out.parent} ({error.strerror}).") from None


def _secret_file(out: Path) -> Path:
    return out.with_name(f".{out.name}.secret")


def _run_secret(out: Path, secret: int | None, secret_file, reuse: bool) -> int:
    """This run's secret: the course secret's (``secret_file``), the one given, the one an earlier run on this
    table used (``reuse``: ``--resume`` or ``--only``), or a new one, kept beside the table (0600)."""
    if secret_file is not None:
        if secret is not None:
            raise ValueError("give --secret-file or --secret, not both.")
        return course_secret.read(secret_file)
    keep = _secret_file(out)
    if secret is None and reuse and keep.exists():
        return int(keep.read_text().strip())
    secret = capstone.new_secret() if secret is None else int(secret)
    fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{secret}\n")
    return secret


def _check_one_secret(previous: list[dict], fingerprint: str, out: Path) -> None:
    """Refuse to add rows graded with one secret to a table graded with another: its capstone rows would have
    faced two different tests."""
    others = sorted({row.get("secret") or "none" for row in previous} - {fingerprint})
    if others:
        raise ValueError(f"{out} was graded with another secret (fingerprint {', '.join(others)}; this run's is "
                         f"{fingerprint}), and one table never mixes two: grade with the secret file it was graded "
                         f"with (--secret-file), or into a new table (--out).")


def default_jobs(limits: sandbox.Limits, mode: str | None = None) -> int:
    """How many submissions to grade at once: one per core this process may use, and no more than the memory
    available holds sandboxes at their cap (:attr:`sandbox.Limits.memory_mb`). One in processes mode, whose
    sandboxes side by side run as one user and could read each other's notebooks (:mod:`.sandbox`)."""
    if (mode or sandbox.isolation()) == "processes":
        return 1
    cores = usable_cores()
    available = None
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    by_memory = max(1, available // limits.memory_mb) if available else cores
    return max(1, min(cores, by_memory))


def _threads_per_job(jobs: int) -> int:
    return max(1, usable_cores() // jobs)


def _reference_seconds(threads: int) -> float:
    """:func:`capstone.reference_seconds` with the threads each sandbox gets, so that the capstone's time limit is
    measured as its recipes will run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return capstone.reference_seconds()
    finally:
        torch.set_num_threads(before)


def grade(submissions, out="grades.csv", *, timeout: int = 600, cell_timeout: int = 300, resume: bool = False,
          only=None, secret: int | None = None, secret_file=None, weights=None, jobs: int | None = None,
          feedback=None, limits: sandbox.Limits | None = None, mode: str | None = None,
          verbose: bool = True) -> list[dict]:
    """Grade every submission under ``submissions``; write the table to ``out`` (CSV) as each student finishes;
    return its rows (one per student and assignment: :mod:`ftcourse.grading.table`).

    ``jobs`` submissions are graded at once, each in its own sandbox (default: :func:`default_jobs`); the machine's
    cores are shared among them. ``secret_file`` is the course secret (:mod:`~ftcourse.grading.course_secret`):
    with it, every run sets the same capstone. ``resume`` keeps the rows of students whose notebooks have not
    changed; ``only`` (a list of student names) grades those students again and keeps everyone else's rows.
    ``weights`` gives exercises other points than 1 (``["02.1=2"]`` or ``{"02.1": 2}``). ``feedback`` is a folder
    for one Markdown file per student.

    Everything done for one student -- reading the notebooks, the sandbox, the answers, the judging, the rows -- is
    inside that student's handling: a bug anywhere in it gives that student an "internal error" row with the
    exception, and the run goes on. ``--resume`` tries such a student once more (:data:`TRIES`), then keeps the row.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from .table import parse_weights, write_feedback

    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions} is not a folder. Put one notebook (or one folder of notebooks) per "
                                f"student in it.")
    check_out(out, submissions)
    if feedback is not None:
        feedback = Path(feedback)
        if submissions.resolve() == feedback.resolve() or submissions.resolve() in feedback.resolve().parents:
            raise ValueError(f"--feedback {feedback} is inside the submissions folder; put it somewhere else.")
    weights = parse_weights(weights)
    limits = limits or sandbox.Limits()
    jobs = default_jobs(limits, mode) if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"--jobs must be 1 or more, got {jobs}.")
    if jobs > 1 and (mode or sandbox.isolation()) == "processes" and verbose:
        print(f"warning: {jobs} sandboxes at a time in processes mode run as one user and can read each other's "
              f"notebooks; grade untrusted classes with --jobs 1, in namespaces or in a container")
    sandbox.remove_stale()  # what a killed grader left: sandbox folders holding students' notebooks, cgroups
    found, skipped = discover(submissions)
    if not found:
        raise FileNotFoundError(f"No submissions in {submissions}: expected NAME.ipynb or NAME/*.ipynb per student.")
    only = None if only is None else set(only)
    if only is not None:
        unknown = sorted(only - {s.student for s in found})
        if unknown:
            raise ValueError(f"--only names students with no submission in {submissions}: "
                             f"{', '.join(map(printable, unknown))}.")
    previous = read_table(out) if (resume or only is not None) else []
    if previous and "secret" not in previous[0]:
        raise ValueError(f"{out} was written by an older ftcourse (it has no secret column); grade into a new "
                         f"table (--out).")
    settings = Settings(_run_secret(out, secret, secret_file, reuse=resume or only is not None), timeout=timeout,
                        cell_timeout=cell_timeout, limits=limits, mode=mode, hide=(submissions, out.parent),
                        threads=_threads_per_job(jobs), weights=weights)
    fingerprint = course_secret.fingerprint(settings.secret)
    _check_one_secret(previous, fingerprint, out)
    plans = {s.student: [plan_of(path) for path in s.notebooks] for s in found}
    assignments = {a for plan in plans.values() for _, _, a in plan if a}
    assignments |= {row["assignment"] for row in previous if row.get("assignment")}
    header = columns(assignments)
    kept_rows: dict[str, list[dict]] = {}
    for row in previous:
        kept_rows.setdefault(row["student"], []).append({k: row.get(k, "") for k in header})
    check_sandbox(settings)  # before the first student: the sandbox imports the ftcourse that judges
    if capstone.ASSIGNMENT in assignments and settings.capstone_seconds is None:
        settings.capstone_seconds = capstone.time_limit(_reference_seconds(settings.threads))
        settings.capstone_target()  # made once, before the jobs share it
    if verbose:
        print(f"grading {len(found)} submission(s), {jobs} at a time, each in a sandbox "
              f"({settings.mode or sandbox.isolation()}); assignments {', '.join(sorted(assignments)) or 'none'}")
    results: dict[int, list[dict]] = {}
    lock = threading.Lock()

    def table_rows() -> list[dict]:
        return [row for i in sorted(results) for row in results[i]]

    todo = []
    for i, s in enumerate(found):
        name = printable(s.student)  # the table holds names as printable() made them
        if only is not None and s.student not in only:
            results[i] = kept_rows.get(name, [])
            continue
        digest = _digest(s)  # read and hashed once per student
        kept = _kept_rows(kept_rows.get(name), digest) if resume and only is None else None
        if kept is not None:
            results[i] = kept
            if verbose:
                print(f"{name}: kept from the previous run")
            continue
        todo.append((i, s, digest, _tries(kept_rows.get(name), digest) + 1))

    def one(i, s, digest, tries):
        start = time.perf_counter()
        rows = _grade_safely(s, plans[s.student], settings, digest, fingerprint, tries)
        with lock:
            results[i] = rows
            write_table(table_rows(), header, out)
            if verbose:
                said = "; ".join(f"{r['assignment'] or '-'} {r['points']}/{r['possible'] or 0} {r['status']}"
                                 for r in rows)
                print(f"{printable(s.student)}: {said} ({time.perf_counter() - start:.0f} s)", flush=True)

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grade")
    try:
        with settings.ctrl_c:  # Ctrl-C stops at the next check: before a student, or while a sandbox runs
            pending = {pool.submit(one, *job) for job in todo}
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # Interrupted, from a job that saw Ctrl-C: stop
                settings.ctrl_c.check()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # running jobs see Ctrl-C within a second and end
        with lock:
            write_table(table_rows(), header, out)  # every finished row, also after Ctrl-C
    rows = table_rows()
    if feedback is not None:
        written = write_feedback(rows, feedback)
        if verbose:
            print(f"wrote {len(written)} feedback file(s) in {feedback}")
    if verbose:
        print(f"wrote {out} ({len(rows)} rows)")
        if skipped:
            print("skipped, because:\n  " + "\n  ".join(printable(line) for line in skipped))
    return rows


def _digest(s: Submission) -> str:
    try:
        return s.digest() if s.notebooks else ""
    except OSError:  # a notebook removed or made unreadable since it was found: graded as it can be
        return ""


def _tries(kept: list[dict] | None, digest: str) -> int:
    """How many times the previous run hit an internal error on this same submission (0 if it did not)."""
    for row in kept or ():
        match = re.match(r"internal error \(try (\d+) of \d+\)", row.get("status", ""))
        if match and row.get("sha256") == digest:
            return int(match.group(1))
    return 0


def _kept_rows(kept: list[dict] | None, digest: str) -> list[dict] | None:
    """The previous run's rows of a student, when ``--resume`` may keep them: the same submission, and not an
    internal error that has tries left."""
    if not kept or any(row.get("sha256") != digest for row in kept):
        return None
    tries = _tries(kept, digest)
    if 0 < tries < TRIES:
        return None
    return kept


def _grade_safely(s: Submission, plan: list, settings: Settings, digest: str, secret: str, tries: int) -> list[dict]:
    """:func:`_grade_student`, with any bug in the grader turned into this student's "internal error" row."""
    try:
        return _grade_student(s, plan, settings, digest, secret)
    except Exception as error:  # never Interrupted (Ctrl-C): that stops the run, as it should
        status = (f"internal error (try {min(tries, TRIES)} of {TRIES}): {type(error).__name__}: {str(error)[:200]}"
                  + ("; run with --resume to try again" if tries < TRIES else "; please report it"))
        return [student_row(s.student, status, digest=digest, secret=secret)]


def _grade_student(s: Submission, plan: list, settings: Settings, digest: str, secret: str) -> list[dict]:
    """The student's rows: one per assignment handed in, or one saying why nothing could be graded."""
    notes = list(s.notes)  # about the whole submission: refused links, a name clash, unreadable notebooks
    by_assignment: dict[str, list] = {}
    for path, notebook, assignment in plan:
        if isinstance(notebook, Problem):
            notes.append(str(notebook))
        elif assignment is None:
            notes.append(f"{path.name}: no ftcourse assignment id in its metadata (is it an exercise notebook from "
                         f"`ftcourse exercises`?); not graded")
        else:
            by_assignment.setdefault(assignment, []).append((path, notebook))
    rows = []
    for assignment in sorted(by_assignment):
        notebooks = by_assignment[assignment]
        justification = ""
        if len(notebooks) > 1:  # several tries at one assignment would let a student hand in several guesses
            outcomes = {e: ("not graded", "") for e in exercises_of(assignment)}
            status = (f"{len(notebooks)} notebooks for assignment {assignment} "
                      f"({', '.join(p.name for p, _ in notebooks)}): none of them graded; hand in one notebook per "
                      f"assignment")
        else:
            path, notebook = notebooks[0]
            outcomes, status = grade_notebook(path, notebook, assignment, settings, s.student, digest)
            status = f"{path.name}: {status}"
            justification = justification_of(notebook)
        untouched = (assignment == capstone.ASSIGNMENT and
                     untouched_justification(justification, capstone.JUSTIFICATION_TEMPLATE))
        rows.append(assignment_row(s.student, assignment, outcomes, status="; ".join([*notes, status]),
                                   justification=justification, untouched=untouched, digest=digest, secret=secret,
                                   weights=settings.weights))
    return rows or [student_row(s.student, "; ".join(notes) or "nothing to grade", digest=digest, secret=secret)]


# ------------------------------------------------------------------------------------------------------------------
# Before the first student, and after a killed run.

SANDBOX_CHECK = "import json, ftcourse; print(json.dumps([ftcourse.__file__, ftcourse.__version__]))"


def check_sandbox(settings: Settings, expected: tuple[str, str] | None = None, seconds: float = 120) -> None:
    """Start one sandbox and check that it imports the ``ftcourse`` this grader runs (``expected``: its file and
    version). If it cannot -- say, a virtual environment whose editable install points outside the folders the
    sandbox may read -- every student would score zero for it; a RuntimeError says so before anyone is graded."""
    import ftcourse

    expected = expected or (str(Path(ftcourse.__file__).resolve()), ftcourse.__version__)
    box = sandbox.start(["python", "-I", "-c", SANDBOX_CHECK], {}, limits=settings.limits, mode=settings.mode,
                        hide=settings.hide)
    try:
        output, _ = box.process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        output = b"(no answer within %d s)" % seconds
    finally:
        box.kill()
    lines = output.decode("utf-8", "replace").strip().splitlines()
    try:
        found = tuple(json.loads(lines[-1]))
    except (IndexError, ValueError, TypeError):
        found = None
    same = found is not None and found[1] == expected[1] and (
        (settings.mode or sandbox.isolation()) in sandbox.CONTAINER_ENGINES or
        str(Path(found[0]).resolve()) == expected[0])
    if not same:
        seen = f"it imported {found[0]} (version {found[1]})" if found else \
            f"it could not import ftcourse: {printable(lines[-1][:300]) if lines else 'no output'}"
        user = sandbox.sandbox_user() if (settings.mode or sandbox.isolation()) == "processes" else None
        who = (f" The sandbox runs students' code as user {user[0]} (this grader runs as root): every user must be "
               f"able to read Python, its packages and ftcourse.") if user else ""
        raise RuntimeError(
            f"The grading sandbox does not run the ftcourse this grader runs ({expected[0]}, version {expected[1]}): "
            f"{seen}. Every student would score zero. Install ftcourse into this Python so that its files are where "
            f"the sandbox can read them (pip install . in the course's folder, or an editable install whose "
            f"folder is the one this grader imports), then grade again.{who}")
