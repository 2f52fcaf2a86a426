"""Run untrusted code -- a student's notebook -- so that it can harm nothing but its own result.

``ftcourse grade`` runs each submission through :func:`start`. What the code inside gets depends on the platform
(:func:`isolation` says which applies here):

``"namespaces"`` (Linux with unprivileged user namespaces and util-linux's ``unshare``; the same idea as
    bubblewrap, PrairieLearn's and Otter-Grader's sandboxes):

    - a root file system of its own, built on an empty tmpfs: the system's programs and libraries, the Python
      installation and the ``ftcourse`` package, all **read-only**; nothing else of the machine exists inside (no
      home folders, no submissions folder, no grade table);
    - a writable ``/sandbox`` (its working folder, holding a copy of its own notebook only), ``/sandbox/home``
      (``HOME``) and ``/tmp`` (``TMPDIR``), each a size-limited tmpfs that vanishes with it;
    - no network (a network namespace with nothing in it), its own PID namespace (it sees only its own processes,
      and when its first process ends the kernel kills every other one, including daemons that called ``setsid``),
      a user namespace whose only user owns nothing outside, and ``no_new_privs``;
    - its mounts are locked: it cannot remount them writable.
``"processes"`` (anything else, e.g. macOS, or a container without user namespaces such as Gradescope's): a fresh
    temporary folder as working folder, ``HOME`` and ``TMPDIR``, a new session, ``no_new_privs``, the resource
    limits below, and every process it leaves killed at the end. It **can** read and write whatever its user can.
    When the grader runs as root, that user is not root: the code runs as ``nobody`` (or
    ``$FTCOURSE_SANDBOX_USER``; :func:`sandbox_user`), so the grader's own files -- the course secret, the grade
    table, other folders of mode 0700 or 0600 -- are out of its reach, and Python and its packages must be readable
    by every user. When the grader runs as another user, the code runs as that user: grade only trusted
    submissions there, or use a container. Two sandboxes of this mode side by side run as one user and can see
    each other's files: ``grade`` runs them one at a time unless told otherwise.
``"docker"`` or ``"podman"`` (``ftcourse grade --container docker``): each submission in a container of the image
    ``$FTCOURSE_CONTAINER_IMAGE`` (default ``ftcourse-grader``: any image with Python and ftcourse installed), with
    no network, a read-only image, no capabilities, an unprivileged user and the engine's own limits
    (:func:`container_command`). Where an engine is installed this is the strongest choice on any platform.

Both get resource limits (:class:`Limits`): memory (``RLIMIT_DATA``), CPU seconds, the size of any one file they
write, open files, no core dumps, and a number of processes (a pids cgroup where the grader may make one, else
``RLIMIT_NPROC``, which the kernel does not apply to root); where the grader may make a memory cgroup, the memory
of the whole sandbox together too, plus a wall-clock limit that the grader enforces from
outside. Only the variables of :func:`clean_environment` are passed in.

The caller talks to the sandbox over pipes only: stdin, the merged stdout/stderr, and one more descriptor for
answers (see :mod:`ftcourse.grading.grade`). Everything that comes out of it is untrusted data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SETUP = Path(__file__).with_name("_sandbox_setup.py")  # runs first inside the namespaces; standard library only
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "passwd", "group", "localtime",
             "os-release", "hosts", "alternatives", "fonts", "ssl")  # what programs need from /etc; not the rest
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use. Sizes in MiB."""
    memory_mb: int = 2048  # RLIMIT_DATA: heap and anonymous memory (the capstone's solution needs about 1,000)
    cpu_seconds: int = 1800  # RLIMIT_CPU, over all threads
    file_mb: int = 64  # RLIMIT_FSIZE: the largest file it may write
    work_mb: int = 256  # the size of its writable /sandbox and /tmp (namespaces only)
    processes: int = 64  # threads count as processes for the kernel
    open_files: int = 512


SANDBOX_USER = "nobody"  # processes mode under root: the user students' code runs as ($FTCOURSE_SANDBOX_USER)


def sandbox_user() -> tuple[str, int, int] | None:
    """Processes mode: the user that students' code runs as, ``(name, uid, gid)``, when the grader runs as root;
    None when the grader runs as another user (the code then runs as that user). Root is never the answer."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    name = os.environ.get("FTCOURSE_SANDBOX_USER", SANDBOX_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"The grader runs as root, so students' code runs as user {name!r}, and this machine has "
                           f"no such user. Set FTCOURSE_SANDBOX_USER to an unprivileged user that exists, or grade "
                           f"as a user other than root.") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise RuntimeError(f"FTCOURSE_SANDBOX_USER={name} is root (uid or gid 0): students' code never runs as "
                           f"root. Name an unprivileged user such as nobody.")
    return name, entry.pw_uid, entry.pw_gid


def clean_environment(home: str, tmp: str, extra: dict | None = None) -> dict:
    """The environment a sandbox gets: a PATH, its own HOME and TMPDIR, a locale, the thread settings; no secrets."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TZ"):  # how fast it runs, and the time zone
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


@lru_cache(maxsize=1)
def isolation() -> str:
    """``"namespaces"`` if this machine can give each submission its own namespaces (see the module), else
    ``"processes"``. Set ``FTCOURSE_SANDBOX=processes`` to force the weaker mode."""
    if os.environ.get("FTCOURSE_SANDBOX") == "processes" or not sys.platform.startswith("linux"):
        return "processes"
    if shutil.which("unshare") is None:
        return "processes"
    try:
        probe = subprocess.run(["unshare", *_UNSHARE, "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "processes"
    return "namespaces" if probe.returncode == 0 else "processes"


_UNSHARE = ("--user", "--map-root-user", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--net", "--ipc",
            "--uts")


def readable_paths(hide: tuple[Path, ...] = ()) -> list[str]:
    """What a namespaced sandbox sees (read-only): system folders, a few /etc files, Python and its packages.

    A path that holds one of ``hide`` (the submissions folder, the output folder) is left out, so that a
    ``sys.path`` entry such as a course checkout cannot expose what lies inside it.
    """
    import ftcourse

    candidates = list(SYSTEM_DIRS) + [f"/etc/{name}" for name in ETC_FILES]
    candidates += [sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(sys.executable).resolve().parent)]
    candidates += [p for p in (sysconfig.get_paths().values()) if p]
    candidates += [p for p in sys.path if p and Path(p).is_absolute() and "site-packages" in p]
    candidates.append(str(Path(ftcourse.__file__).resolve().parent))
    hidden = [h.resolve() for h in hide]
    chosen = []
    for path in dict.fromkeys(candidates):
        real = Path(path)
        if not real.exists() or not real.is_absolute():
            continue
        if any(h == real.resolve() or real.resolve() in h.parents for h in hidden):
            continue
        chosen.append(str(real))
    return chosen


class Sandboxed:
    """One running sandbox: ``process`` (a Popen), its pipes, and what it needs cleaned up."""

    def __init__(self, process: subprocess.Popen, answers_fd: int, output, folder: Path, cgroups: list[Path],
                 children_before: set[int], container: str | None = None):
        self.process, self.answers_fd, self.output, self.folder = process, answers_fd, output, folder
        self.cgroups, self.container = cgroups, container
        self.children_before = children_before  # the caller's other children, which kill() leaves alone

    def stop(self) -> None:
        """Kill its first process and its session (in namespaces mode the kernel then kills all the rest)."""
        if self.container:  # the container outlives its `docker run` client unless it is killed by name
            subprocess.run([self.process.args[0], "kill", self.container], capture_output=True, timeout=30)
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # its session: unshare, or the worker and its children
            except (ProcessLookupError, PermissionError):
                pass

    def end(self) -> None:
        """Kill every process of the sandbox: its session, its cgroup, and any orphan it left (processes mode)."""
        self.stop()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for group in self.cgroups:
            _kill_cgroup(group)
        self.cgroups = []
        with _RUNNING_LOCK:
            _RUNNING.discard(self.process.pid)
            _kill_orphans(keep=self.children_before)

    def kill(self) -> None:
        """End the sandbox and every process in it, then remove its files. Safe to call twice."""
        self.end()
        if self.answers_fd >= 0 and not self.container:  # a container's answers come on its stdout, closed below
            os.close(self.answers_fd)
        self.answers_fd = -1
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        shutil.rmtree(self.folder, ignore_errors=True)


def start(argv: list[str], files: dict[str, bytes], *, limits: Limits = Limits(), env: dict | None = None,
          hide: tuple[Path, ...] = (), mode: str | None = None) -> Sandboxed:
    """Start ``argv`` (a Python program: ``argv[0]`` is replaced by this interpreter) in a sandbox holding ``files``.

    ``files`` maps names to contents; they are copied into the sandbox's working folder, and nothing else is. The
    program gets the answers pipe's write end as descriptor ``FTCOURSE_ANSWERS_FD`` (an environment variable);
    read it from ``Sandboxed.answers_fd``. The caller must call ``kill()`` when done.
    """
    mode = mode or isolation()
    user = sandbox_user() if mode == "processes" else None  # before any file is made: it may refuse
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    (folder / "owner").write_text(_owner_of_this_process())  # so that the next grader knows it when this one dies
    inbox = folder / "inbox"
    inbox.mkdir()
    for name, content in files.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"sandbox file names are plain names, not {name!r}")
        (inbox / name).write_bytes(content)
    read_end, write_end = os.pipe()
    python = str(Path(sys.executable))
    if mode in CONTAINER_ENGINES:  # answers come on the container's stdout; its output on stderr
        os.close(read_end)
        os.close(write_end)
        name = f"ftcourse-{folder.name.rsplit('-', 1)[-1].lower()}"
        command = container_command(mode, name, inbox, argv, limits, env or {})
        with _RUNNING_LOCK:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=True)
            _RUNNING.add(process.pid)
        return Sandboxed(process, process.stdout.fileno(), process.stderr, folder, [], set(), container=name)
    if mode == "namespaces":
        root = folder / "root"
        root.mkdir()
        home, work = "/sandbox/home", "/sandbox"
        spec = {"root": str(root), "inbox": str(inbox), "readable": readable_paths(hide), "work_mb": limits.work_mb,
                "cwd": work, "argv": [python, *argv[1:]]}
        command = ["unshare", *_UNSHARE, python, "-I", "-S", str(SETUP), _encode(spec)]
        environment = clean_environment(home, "/tmp", {"FTCOURSE_ANSWERS_FD": str(write_end), **(env or {})})
        cwd = "/"
    else:
        home = str(inbox / "home")
        os.makedirs(home)
        os.makedirs(inbox / "tmp")
        command = [python, *argv[1:]]
        environment = clean_environment(home, str(inbox / "tmp"),
                                        {"FTCOURSE_ANSWERS_FD": str(write_end), **(env or {})})
        cwd = str(inbox)
        if user is not None:  # its working folder becomes the unprivileged user's; the rest stays root's
            os.chmod(folder, 0o711)
            for path in [inbox, *inbox.rglob("*")]:
                os.chown(path, user[1], user[2], follow_symlinks=False)
        _become_subreaper()
    cgroups = _make_cgroups(limits)
    runs_as = user[1] if user else os.getuid()
    processes = limits.processes + _processes_of(runs_as)  # RLIMIT_NPROC counts all of that user's processes
    with _RUNNING_LOCK:
        children_before = set(_children()) - _RUNNING  # the caller's own children, not the other sandboxes
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, cwd=cwd, env=environment, pass_fds=(write_end,),
                                       start_new_session=True,
                                       preexec_fn=lambda: _limit(limits, processes, cgroups, user, mode))
        except PermissionError as error:
            os.close(write_end)
            os.close(read_end)
            shutil.rmtree(folder, ignore_errors=True)
            if user is None:
                raise
            raise RuntimeError(f"Students' code runs as user {user[0]} (the grader runs as root), and {user[0]} may "
                               f"not run {python} ({error.strerror}). Install Python and its packages where every "
                               f"user may read them (e.g. /usr/local or a virtual environment under /opt), or "
                               f"grade as a user other than root.") from None
        _RUNNING.add(process.pid)
    os.close(write_end)
    return Sandboxed(process, read_end, process.stdout, folder, cgroups, children_before)


CONTAINER_ENGINES = ("docker", "podman")
CONTAINER_IMAGE = "ftcourse-grader"  # or $FTCOURSE_CONTAINER_IMAGE: an image with python and ftcourse installed


def container_command(engine: str, name: str, inbox: Path, argv: list[str], limits: Limits, env: dict) -> list[str]:
    """The ``docker run`` (or ``podman run``) line for one submission: no network, a read-only image, no
    capabilities, an unprivileged user, the limits, and the submission's files copied into a tmpfs ``/sandbox``."""
    image = os.environ.get("FTCOURSE_CONTAINER_IMAGE", CONTAINER_IMAGE)
    environment = clean_environment("/sandbox/home", "/tmp", {"FTCOURSE_ANSWERS_FD": "stdout", **env})
    return [engine, "run", "--rm", "-i", f"--name={name}", "--network=none", "--read-only", "--cap-drop=ALL",
            "--security-opt=no-new-privileges", "--user=1000:1000", f"--memory={limits.memory_mb}m",
            f"--pids-limit={limits.processes}", f"--ulimit=fsize={limits.file_mb * 2**20}",
            f"--ulimit=nofile={limits.open_files}", f"--ulimit=cpu={limits.cpu_seconds}",
            f"--tmpfs=/tmp:size={limits.work_mb}m", f"--tmpfs=/sandbox:size={limits.work_mb}m,uid=1000,exec",
            f"--volume={inbox}:/submission:ro", "--workdir=/sandbox",
            *[f"--env={k}={v}" for k, v in environment.items()], image,
            "sh", "-c", 'cp /submission/* /sandbox/ && mkdir -p /sandbox/home && exec "$@"', "sh",
            "python", *argv[1:]]


def _encode(spec: dict) -> str:
    import json

    return json.dumps(spec)


def _limit(limits: Limits, processes: int, cgroups: list[Path], user: tuple[str, int, int] | None = None,
           mode: str = "processes") -> None:
    """In the child, before exec: its cgroups and resource limits (inherited by everything it starts); in processes
    mode ``no_new_privs`` (no set-user-ID program gives it more rights) and, when the grader is root, the switch to
    ``user`` (after the cgroups, which only root may join); last, on Linux, a SIGKILL when the grader dies, so that
    a killed grader leaves no sandbox running (``unshare --kill-child`` then takes the rest of the namespace with
    it). A change of user clears that signal, so it is set after the switch."""
    import resource

    mib = 1024 * 1024
    for name, value in (("RLIMIT_DATA", limits.memory_mb * mib), ("RLIMIT_CPU", limits.cpu_seconds),
                        ("RLIMIT_FSIZE", limits.file_mb * mib), ("RLIMIT_NOFILE", limits.open_files),
                        ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", processes)):
        if hasattr(resource, name):
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError):
                pass
    for group in cgroups:
        (group / "cgroup.procs").write_text(str(os.getpid()))
    if user is not None:
        os.setgroups([])
        os.setgid(user[2])
        os.setuid(user[1])
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        try:
            if mode == "processes":
                prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup(controller: str) -> Path | None:
    """The folder of this process's cgroup that holds ``controller`` (cgroup v1, or v2's single tree)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):  # v1: one tree per controller
            return CGROUP_ROOT / controller / path.lstrip("/")
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and (CGROUP_ROOT / "cgroup.controllers").exists():  # v2
            return CGROUP_ROOT / path.lstrip("/")
    return None


def _make_cgroups(limits: Limits) -> list[Path]:
    """Cgroups below this process's own that cap the whole sandbox: its processes (pids) and its memory, all of
    its processes together (tmpfs included). Made only where this user may; an empty list elsewhere."""
    wanted = {"pids": [("pids.max", str(limits.processes))],
              "memory": [("memory.limit_in_bytes", str((limits.memory_mb + 2 * limits.work_mb) * 2**20)),
                         ("memory.max", str((limits.memory_mb + 2 * limits.work_mb) * 2**20))]}
    groups = []
    for controller, settings in wanted.items():
        base = _own_cgroup(controller)
        if base is None or not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
            continue
        try:
            group = Path(tempfile.mkdtemp(prefix=f"ftcourse-{os.getpid()}-", dir=base))
        except OSError:
            continue
        written = False
        for name, value in settings:
            try:
                (group / name).write_text(value)
                written = True
            except OSError:
                pass
        if written and group not in groups:
            groups.append(group)
        elif not written:
            _kill_cgroup(group)
    return groups


def _kill_cgroup(group: Path | None) -> None:
    """Kill whatever is still in the sandbox's cgroup, then remove the cgroup."""
    if group is None:
        return
    for _ in range(50):
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    try:
        group.rmdir()
    except OSError:
        pass


def _become_subreaper() -> None:
    """Linux: orphans of the sandbox (daemons that left their session) become our children, so we can kill them."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _processes(field: int):
    """(pid, the field-th entry of /proc/PID/stat after the command name) for every process; nothing off Linux."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()[field]
            except (OSError, IndexError):
                continue


def _children() -> list[int]:
    me = str(os.getpid())
    return [pid for pid, parent in _processes(1) if parent == me]


def _processes_of(uid: int) -> int:
    """How many processes (threads included, as RLIMIT_NPROC counts them) this user has now; 0 if unknown."""
    count = 0
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc").is_dir() else ():
        try:
            if entry.stat().st_uid == uid:
                count += len(os.listdir(entry / "task"))
        except OSError:
            continue
    return count


# The first processes of the sandboxes running now (``grade --jobs``): a sandbox that ends kills the orphans it left,
# never a sandbox beside it. Starting one and killing orphans hold the lock, so that no sandbox is started between
# reading the children and killing them.
_RUNNING: set[int] = set()
_RUNNING_LOCK = threading.Lock()


def _kill_orphans(keep: set[int]) -> None:
    """Kill and reap every child of this process that a sandbox left behind (processes mode, Linux): every child
    but ``keep`` (the caller's own) and the sandboxes still running."""
    for pid in _children():
        if pid in keep or pid in _RUNNING:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError, PermissionError):
            pass


# ----------------------------------------------------------------------------------------------------------------
# What a killed grader leaves behind.

FOLDER_PREFIX = "ftcourse-sandbox-"
STALE_UNOWNED_SECONDS = 3600  # a sandbox folder without an owner file (an older grader's) counts as left after this


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat's 22nd field), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_of_this_process() -> str:
    return f"{os.getpid()} {_start_time(os.getpid()) or '?'}"


def _alive(owner: str) -> bool:
    """Whether the grader that wrote ``owner`` ("PID START") still runs: a reused PID has another start time."""
    try:
        pid, start = owner.split()
        pid = int(pid)
    except ValueError:
        return False
    if not Path("/proc").is_dir():  # no /proc (macOS): a signal 0 says whether the PID exists
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return _start_time(pid) == start


def remove_stale(tmp: Path | None = None) -> list[Path]:
    """Remove what graders that were killed (SIGKILL, a crash, a power cut) left: their sandbox folders, which hold
    students' notebooks, and their cgroups (killing whatever still runs in them). A folder or cgroup of a grader
    that still runs is left alone, so that two graders can share a machine. Returns what was removed."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            owner_file = folder / "owner"
            if owner_file.exists():
                stale = not _alive(owner_file.read_text())
            else:
                stale = time.time() - folder.stat().st_mtime > STALE_UNOWNED_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for controller in ("pids", "memory"):
        base = _own_cgroup(controller)
        if base is None or not base.is_dir():
            continue
        for group in base.glob("ftcourse-*-*"):
            pid = group.name.split("-")[1]
            if pid.isdigit() and _start_time(int(pid)) is None and group.is_dir():
                _kill_cgroup(group)
                removed.append(group)
    return removed
