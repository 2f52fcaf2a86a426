"""The course secret: one number the teacher keeps in a file, made once (``ftcourse secret new course.secret``).

It decides what only the grader may know: the capstone's target (its classes, its training images, its test set)
and the questions each exercise asks a student's functions. With it, every grading run of the course -- the first,
a late submission, a regrade of one student -- sets the same test, until the teacher makes a new secret. Without
it, ``ftcourse grade`` draws a secret per table.

The file is the teacher's alone: it is created with mode 0600 (read and write by its owner only) and refused when
anyone else may read it. Each table row carries the secret's **fingerprint** (a hash of it, which tells whether two
rows were graded with the same secret and nothing about the secret itself), so that one table never mixes two.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

HEADER = "ftcourse course secret, version 1 -- keep this file private; it decides the capstone's test set"
MAX_BYTES = 1024


def fingerprint(secret: int) -> str:
    """A short, one-way name for ``secret``: 12 hex digits of sha256 (48 bits of a 62-bit secret's hash)."""
    return hashlib.sha256(f"ftcourse secret fingerprint/{int(secret)}".encode()).hexdigest()[:12]


def create(path, *, replace: bool = False) -> int:
    """Make a new secret in a new file at ``path`` (mode 0600) and return it. An existing file is kept unless
    ``replace``: a secret replaced by mistake changes the capstone for every later grading run."""
    from .. import capstone

    path = Path(path)
    secret = capstone.new_secret()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path} exists: it is the course's secret, and replacing it changes the capstone's "
                              f"test for every later grading run. Give another path, or --replace to rotate it.")\
            from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # also when replacing a file made with other permissions
        f.write(f"{HEADER}\n{secret}\n")
    return secret


def read(path) -> int:
    """The secret in the file at ``path``, checked: a regular file (not a link), readable by its owner only, in
    the format :func:`create` writes."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"No course secret at {path}. Make one with `ftcourse secret new {path}` (once per "
                                f"course) and keep it.") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file (a link or a folder): give the secret file itself.")
    if info.st_mode & 0o077:
        raise PermissionError(f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}); it holds "
                              f"the capstone's secret. Run `chmod 600 {path}` and grade again.")
    if info.st_size > MAX_BYTES:
        raise ValueError(f"{path} is {info.st_size} bytes: not a course secret (those are two short lines).")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2 or lines[0] != HEADER or not lines[1].strip().isdigit():
        raise ValueError(f"{path} is not a course secret made by `ftcourse secret new`.")
    return int(lines[1].strip())
