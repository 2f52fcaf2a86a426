"""Inside fresh namespaces (see ftcourse.grading.sandbox): build the sandbox's root, give up every privilege, run
the program.

Run as ``python -I -S _sandbox_setup.py SPEC_JSON`` by ``unshare --user --map-root-user --pid --fork --mount ...``,
so it starts as the root of a new user namespace, as process 1 of a new PID namespace, with a private copy of the
mounts. Standard library only: it runs before anything else is trusted. Steps:

1. an empty tmpfs becomes the new root; the readable paths are bind-mounted into it and made read-only (with
   every mount below them);
2. ``/sandbox`` (with ``home``) and ``/tmp`` are small tmpfs, ``/proc`` shows this PID namespace only, ``/dev``
   has null, zero, full, random, urandom and a tmpfs ``shm``; the submission's files are copied into ``/sandbox``;
3. ``pivot_root`` into it, and the old root is detached: nothing else of the machine is reachable;
4. a second user namespace (with a new mount namespace, which locks every mount as it is: read-only stays
   read-only) where the process is an ordinary user, uid 1000, with no capabilities; ``no_new_privs``;
5. exec the program.
"""

import ctypes
import json
import os
import platform
import shutil
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
ST_FLAGS = {2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME, 4096: MS_RELATIME}
MNT_DETACH = 2
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
PR_SET_NO_NEW_PRIVS = 38
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
USER = 1000

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source, target, fstype, flags, data=None):
    check(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                     data and data.encode()), f"mount {source} on {target}")


def read_only(target):
    """Remount the bind mount at ``target`` read-only, keeping the flags the kernel will not let us drop."""
    kept = 0
    for bit, flag in ST_FLAGS.items():
        if os.statvfs(target).f_flag & bit:
            kept |= flag
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)


def mounts_below(root):
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                points.append(point)
    return points


def bind_read_only(root, path):
    inside = root + path
    if os.path.islink(path):  # e.g. /lib -> usr/lib: the same link inside
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        if not os.path.lexists(inside):
            os.symlink(os.readlink(path), inside)
        return
    if os.path.isdir(path):
        os.makedirs(inside, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        open(inside, "a").close()
    mount(path, inside, None, MS_BIND | MS_REC)
    for point in mounts_below(inside):
        read_only(point)


def build(spec):
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    size = f"size={int(spec['work_mb'])}m,mode=755"
    for folder in ("/sandbox", "/tmp"):  # first, so that a readable path below /tmp is bound on top, not hidden
        os.makedirs(root + folder, exist_ok=True)
        mount("tmpfs", root + folder, "tmpfs", MS_NOSUID | MS_NODEV, size)
    for path in sorted(spec["readable"]):
        bind_read_only(root, path)
    os.makedirs(root + "/sandbox/home")
    for name in os.listdir(spec["inbox"]):
        shutil.copyfile(os.path.join(spec["inbox"], name), os.path.join(root + "/sandbox", name))
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/dev", exist_ok=True)
    mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID, "size=64k,mode=755")
    for name in ("null", "zero", "full", "random", "urandom"):
        open(f"{root}/dev/{name}", "a").close()
        mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
    os.makedirs(root + "/dev/shm")
    mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    read_only(root + "/dev")
    os.chdir(root)
    number = PIVOT_ROOT.get(platform.machine())
    if number is not None:  # new root and old root in one place, then the old one detached: nothing of it is left
        check(libc.syscall(number, b".", b"."), "pivot_root")
        check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    else:
        os.chroot(".")
    os.chdir("/")
    read_only("/")


def become_ordinary_user():
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "a second user namespace")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{USER} 0 1"), ("gid_map", f"{USER} 0 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    os.setresgid(USER, USER, USER)
    os.setresuid(USER, USER, USER)  # not root in its namespace: execve leaves it no capabilities
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def main():
    spec = json.loads(sys.argv[1])
    try:
        build(spec)
        become_ordinary_user()
    except OSError as error:
        print(f"ftcourse sandbox: could not set up the sandbox: {error}", file=sys.stderr)
        os._exit(70)
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    os.execve(argv[0], argv, dict(os.environ))


if __name__ == "__main__":
    main()
