"""Confine the current process, then ``exec`` the student's side of grading.

``python -I -m course_lib.grading.jail CONFIG_JSON -- COMMAND ...``

Runs as a tiny separate program (not a ``preexec_fn``, which is unsafe in a
grader that runs several submissions from threads). In order:

1. ``chdir`` into the scratch directory;
2. when root: a private mount namespace in which the interpreter and the
   course's package are reachable by the unprivileged uid (see :func:`expose`), the grading sources, the
   other submissions and the grader's output are covered by empty read-only
   file systems, and ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``
   are fresh private ``tmpfs`` that vanish with the process;
3. resource limits: memory, CPU seconds, processes, file size, no core dumps;
4. when root: drop to an unprivileged uid/gid of the grader's choosing;
5. ``exec`` the command.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import stat
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18

PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc: Any, source: bytes, target: str, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    if libc.mount(source, target.encode(), fstype, flags, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _blocked_ancestor(path: str) -> tuple[str, str] | None:
    """The first folder on the way to ``path`` that others may not enter, and its child on that way."""
    parts = os.path.realpath(path).split(os.sep)[1:]
    current = "/"
    for part in parts:
        child = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current, child
        current = child
    return None


def expose(libc: Any, paths: list[str]) -> None:
    """Make ``paths`` reachable by an unprivileged uid without opening their private parents.

    Example: a Python installed under ``/root`` (mode 0700). In this namespace only,
    ``/root`` is covered by an empty tmpfs that others may enter, and the one child
    on the way (``/root/.pyenv``) is bind-mounted back into it; the rest of
    ``/root`` stays invisible.
    """
    for path in paths:
        for _ in range(8):
            found = _blocked_ancestor(path)
            if found is None:
                break
            blocked, keep = found
            keep_fd = os.open(keep, os.O_PATH | os.O_DIRECTORY)
            try:
                _mount(libc, b"tmpfs", blocked, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64k,mode=0755")
                os.makedirs(keep, exist_ok=True)
                _mount(libc, f"/proc/self/fd/{keep_fd}".encode(), keep, None, MS_BIND | MS_REC, None)
            finally:
                os.close(keep_fd)


def isolate_filesystem(hide: list[str], tmp_size: str, needed: list[str], scratch: str | None = None) -> None:
    """New mount namespace: cover ``hide`` with empty read-only tmpfs, give private temp dirs."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNS): {os.strerror(errno)}")
    # Do not propagate anything we mount back to the grader's namespace.
    _mount(libc, b"none", "/", None, MS_REC | MS_PRIVATE, None)
    expose(libc, needed)
    # The course may itself live under /tmp (a fresh clone in CI, say): keep hold of what the
    # student's process needs there before the private tmpfs covers it, then put it back.
    keep: list[tuple[str, int]] = []
    # The scratch directory too: the working directory's path must exist inside the jail,
    # or every library that turns a relative path into an absolute one writes nowhere.
    for path in needed + ([scratch] if scratch else []):
        real = os.path.realpath(path)
        folder = real if os.path.isdir(real) else os.path.dirname(real)
        if any(folder == tmp or folder.startswith(tmp + "/") for tmp in PRIVATE_TMP):
            keep.append((folder, os.open(folder, os.O_PATH | os.O_DIRECTORY)))
    for path in PRIVATE_TMP:
        if os.path.isdir(path):
            _mount(libc, b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_size},mode=1777".encode())
    for folder, fd in keep:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}".encode(), folder, None, MS_BIND | MS_REC, None)
        os.close(fd)
    for path in hide:
        if os.path.isdir(path):
            _mount(libc, b"tmpfs", path, b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=0555")


def apply_limits(config: dict[str, Any]) -> None:
    """Resource limits that the kernel enforces on the student's process (and its children)."""
    limits = {
        resource.RLIMIT_DATA: config["memory_bytes"],  # heap and anonymous maps: a memory bomb gets MemoryError
        resource.RLIMIT_CPU: config["cpu_seconds"],
        resource.RLIMIT_FSIZE: config["file_bytes"],
        resource.RLIMIT_CORE: 0,
    }
    if config.get("uid") is not None:
        # Per-uid count (threads included), so it bounds a fork bomb only under a uid of its own.
        limits[resource.RLIMIT_NPROC] = config["processes"]
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def main(argv: list[str]) -> None:
    split = argv.index("--")
    config = json.loads(argv[0])
    command = argv[split + 1 :]
    os.chdir(config["scratch"])
    if os.geteuid() == 0 and config.get("uid") is not None:
        isolate_filesystem(config.get("hide", []), config.get("tmp_size", "256m"), config.get("needed", []), config["scratch"])
        os.chdir(config["scratch"])  # the same path, now the bind mount inside the private /tmp
    apply_limits(config)
    uid = config.get("uid")
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.execve(command[0], command, config["env"])


if __name__ == "__main__":
    main(sys.argv[1:])
