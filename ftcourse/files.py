"""Writing files so that nothing a learner made is ever half-written.

A crash, a Ctrl-C or a Colab disconnect in the middle of ``torch.save(state, "run.pt")`` leaves a truncated file
-- and the previous good checkpoint is already gone. Writing to a temporary file in the same folder and then
renaming it over the target (``os.replace``, atomic on every operating system) means the path always holds either
the old complete file or the new complete file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path, write, mode: int | None = None) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path`` in one step. The file gets
    ``mode`` (e.g. ``0o600`` for what only its owner should read), or by default the usual permissions (the umask's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes the file private; give it the usual permissions
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_state(path, state: dict) -> None:
    """``torch.save(state, path)``, atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def save_json(path, data, **dumps_kwargs) -> None:
    """``json.dump(data)`` to ``path``, atomically (NaN and inf are written as ``NaN`` / ``Infinity``)."""
    atomic_write(path, lambda f: f.write(json.dumps(data, **dumps_kwargs).encode()))
