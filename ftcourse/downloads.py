"""Downloads that give up, with a message that says what to do, instead of hanging.

torchvision downloads weights (through ``torch.hub``) and datasets with ``urllib``'s ``urlopen``, without a
timeout. A socket without a timeout waits forever: on a stalled connection (a flaky Wi-Fi, a proxy that accepts and
never answers) the notebook cell just keeps spinning. Those sockets do use Python's *default* timeout
(``socket.setdefaulttimeout``), so :func:`time_limit` sets it for the duration of a download and restores it after.

The limit is on silence, not on the whole download: a socket times out when *no* data arrives for that many
seconds, so a slow but moving download of a big dataset is never cut off. The default is :data:`TIMEOUT`;
set ``ftcourse.downloads.TIMEOUT = 300`` to wait longer.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.error

TIMEOUT = 60.0  # seconds without a byte before a download is given up

OFFLINE_FIX = "download the file on another machine and copy it here by hand"


@contextlib.contextmanager
def time_limit(what: str, *, seconds: float | None = None, fix: str = OFFLINE_FIX):
    """Within the block, a network read or connect that waits longer than ``seconds`` (default :data:`TIMEOUT`)
    raises a RuntimeError that names ``what`` was being downloaded and suggests ``fix``.

    Python's default socket timeout is process-wide, so it also applies to other threads while the block runs;
    it is restored when the block ends, however it ends.

    Example::

        with time_limit(f"the weights from {url}", fix="copy the file by hand into ~/.cache/torch/hub/checkpoints"):
            torch.hub.download_url_to_file(url, path)
    """
    seconds = TIMEOUT if seconds is None else seconds
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    except (TimeoutError, urllib.error.URLError) as error:  # socket.timeout is TimeoutError; urlopen wraps some
        if not is_timeout(error):
            raise
        raise RuntimeError(f"The download of {what} stalled: no data arrived within the time limit of {seconds:g} s. "
                           f"Try again (a stalled connection often recovers), or {fix}.") from error
    finally:
        socket.setdefaulttimeout(previous)


def is_timeout(error: BaseException) -> bool:
    """Whether ``error`` is a socket timeout, bare or wrapped in urllib's URLError (as when connecting times out)."""
    if isinstance(error, urllib.error.URLError):
        return isinstance(error.reason, TimeoutError)
    return isinstance(error, TimeoutError)
