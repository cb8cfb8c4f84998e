"""Confine the current process, then ``exec`` the student's side of grading.

``python -I path/to/course_lib/grading/jail.py CONFIG_JSON -- COMMAND ...``

Standard library only, run as a file: nothing of course_lib (which loads numpy and its
threads) may be imported before ``unshare``.

Runs as a tiny separate program (not a ``preexec_fn``, which is unsafe in a
grader that runs several submissions from threads). The configuration's
``mode`` (decided by :func:`course_lib.grading.trust.isolation_mode`) says how:

* ``"root"``: the grader is root; the command runs under a leased uid of its own.
* ``"userns"``: the grader is not root; an unprivileged user namespace
  (the grader's uid mapped to itself) gives it the right to make the same
  namespaces and mounts. Capabilities are lost at ``exec`` (the uid inside
  is not 0), so the command cannot undo the mounts.
* ``"none"``: no isolation at all (``--unsafe-same-user``): limits only.

In the first two modes, in order:

1. new mount, network (loopback only, down) and PID namespaces;
2. the whole file system read-only; the paths the trust policy hides (the
   repository, solutions, submissions, output) covered by empty read-only
   tmpfs, with only the paths it allows (interpreter, environment,
   ``course_lib``) bound back read-only; ``/tmp``, ``/var/tmp``,
   ``/dev/shm``, ``/run/lock`` fresh private tmpfs; the scratch directory
   bound back writable (see :func:`isolate_filesystem`);
3. a fork: the child is PID 1 of the new PID namespace, with a fresh
   ``/proc`` that lists only the namespace's processes. It forks the command,
   reaps orphans, and reports the command's wait status to this process,
   which exits the same way (so the grader sees the command's exit code or
   signal). When PID 1 dies the kernel kills everything in the namespace;
4. in the command's process: no new privileges (setuid programs do not elevate), resource
   limits, then (root mode) the leased uid, then ``exec``.

Any failure before ``exec`` prints one line starting with ``jail:`` on
stderr and exits with code 2; the grader shows that line as the reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import stat
import sys
from typing import Any, NoReturn

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
# System V IPC and hostname: shared memory must not outlive a submission or join two of them.
CLONE_NEWIPC, CLONE_NEWUTS = 0x08000000, 0x04000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and aarch64
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, ST_RELATIME = 1024, 2048, 1 << 21, 4096

PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
#: Processes of the jail itself (this process and PID 1) counted by RLIMIT_NPROC in a user namespace.
JAIL_PROCESSES = 2


class JailError(Exception):
    """The jail could not confine the process; the message is what the grader shows."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise JailError(f"{what}: {os.strerror(errno)}")


def _mount(libc: Any, source: bytes | None, target: str, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    _check(libc.mount(source, target.encode(), fstype, flags, data), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _set_readonly(libc: Any, path: str, recursive: bool) -> None:
    """``mount_setattr``: make a mount (and with ``recursive``, every mount below it) read-only."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    result = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(), ctypes.c_uint(flags),
                          ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(0 if result == 0 else -1, f"read-only {path}")


def _bind(libc: Any, fd: int, target: str, writable: bool) -> None:
    """Bind the directory held open as ``fd`` onto ``target``; read-only unless ``writable``."""
    os.makedirs(target, mode=0o755, exist_ok=True)
    _mount(libc, f"/proc/self/fd/{fd}".encode(), target, None, MS_BIND | MS_REC, None)
    if writable:  # a bind of a read-only mount is read-only: lift that for this one mount
        flag = os.statvfs(target).f_flag  # in a user namespace these may be locked: repeat them
        kept = (flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)) | (MS_RELATIME if flag & ST_RELATIME else 0)
        _mount(libc, None, target, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | kept, None)
    else:
        _set_readonly(libc, target, recursive=True)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def blocked_ancestors(path: str) -> list[str]:
    """Folders on the way to ``path`` that others may not enter (``/root``, mode 0700, holding a pyenv)."""
    blocked, current = [], "/"
    for part in os.path.realpath(path).split(os.sep)[1:]:
        if not os.stat(current).st_mode & stat.S_IXOTH:
            blocked.append(current)
        current = os.path.join(current, part)
    return blocked


def isolate_filesystem(readonly: list[str], hide: list[str], scratch: str, tmp_size: str, expose: bool) -> None:
    """In a new mount namespace: everything read-only; ``hide`` empty; ``readonly`` and ``scratch`` visible.

    ``hide`` may hold an ancestor of a visible path (the repository above
    ``course_lib``, ``/tmp`` above the scratch directory, the folder above
    the submissions): it is covered all the same and the visible paths are
    bound back into the cover, so nothing is lost and nothing else shows.
    A hidden path that *is* a visible one stays visible (the process could
    not run without it). ``expose`` (root mode) also covers the private
    folders on the way to a visible path, so the unprivileged uid can reach it.
    """
    libc = _libc()
    _mount(libc, b"none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates back to the grader
    visible = {os.path.realpath(p): False for p in readonly if os.path.isdir(p)}
    visible[os.path.realpath(scratch)] = True
    # Descriptors opened before anything is covered: they still reach the real folders afterwards.
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in visible}
    private = [p for p in PRIVATE_TMP if os.path.isdir(p)]
    covers: dict[str, str] = {p: "hide" for p in hide if os.path.isdir(p)}
    if expose:
        covers.update({b: "expose" for p in visible for b in blocked_ancestors(p) if b != "/"})
    covers.update({p: "tmp" for p in private})
    covers = {c: kind for c, kind in covers.items() if c not in visible}
    _set_readonly(libc, "/", recursive=True)
    done: list[str] = []
    rebound: set[str] = set()
    for cover in sorted(covers, key=lambda p: p.count("/")):
        if any(_inside(cover, c) for c in done) and not any(_inside(cover, v) for v in rebound):
            continue  # already hidden by a cover above it, and not inside anything bound back
        kind = covers[cover]
        mode = {"hide": "0555", "expose": "0755", "tmp": "1777"}[kind]
        size = tmp_size if kind == "tmp" else "64k"
        _mount(libc, b"tmpfs", cover, b"tmpfs", MS_NOSUID | MS_NODEV | (MS_NOEXEC if kind == "hide" else 0),
               f"size={size},mode={mode}".encode())
        inner = [v for v in visible if _inside(v, cover) and v != cover]
        for path in inner:
            if not any(_inside(path, other) and other != path for other in inner):  # the outermost ones only
                _bind(libc, fds[path], path, visible[path])
                rebound.add(path)
        if kind != "tmp":
            _set_readonly(libc, cover, recursive=False)
        done.append(cover)
    for path, writable in visible.items():
        if writable and path not in rebound:
            _bind(libc, fds[path], path, writable=True)
    for fd in fds.values():
        os.close(fd)


def enter_namespaces(user_namespace: bool) -> None:
    """Unshare mount, network and PID namespaces (and a user namespace that maps our uid to itself)."""
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (CLONE_NEWUSER if user_namespace else 0)
    _check(libc.unshare(flags), "unshare" + (" (user namespaces disabled?)" if user_namespace else ""))
    if user_namespace:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)


def apply_limits(config: dict[str, Any]) -> None:
    """Resource limits that the kernel enforces on the student's process (and its children)."""
    limits = {
        resource.RLIMIT_DATA: config["memory_bytes"],  # heap and anonymous maps: a memory bomb gets MemoryError
        resource.RLIMIT_CPU: config["cpu_seconds"],
        resource.RLIMIT_FSIZE: config["file_bytes"],
        resource.RLIMIT_CORE: 0,
    }
    if config["mode"] != "none":
        # Counted per uid *and user namespace* (Linux >= 5.14): a uid of its own (root mode) or a
        # user namespace of its own (userns mode) makes this a bound on the submission alone.
        limits[resource.RLIMIT_NPROC] = config["processes"]
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def _run_command(config: dict[str, Any], command: list[str]) -> NoReturn:
    # No setuid program (sudo, su, ...) can give the command more privileges than it has.
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    apply_limits(config)
    if config["mode"] == "root":
        uid = config["uid"]
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.execve(command[0], command, config["env"])


def _pid_one(config: dict[str, Any], command: list[str], report_fd: int) -> NoReturn:
    """PID 1 of the namespace: a fresh /proc, the command as its child, orphans reaped, status reported."""
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # if the jail's outer process dies, so does the namespace
    _mount(libc, b"proc", "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    pid = os.fork()
    if pid == 0:
        os.close(report_fd)
        try:
            _run_command(config, command)
        except BaseException as exc:  # noqa: BLE001 - report why, in the one line the grader shows
            _fail(f"cannot start {command[0]}: {exc}")
    _close_fds_except(report_fd)  # the grader's pipes are the command's alone
    while True:
        waited, status = os.wait()  # reaps orphans too
        if waited == pid:
            os.write(report_fd, str(status).encode())
            os._exit(0)


def _close_fds_except(keep: int) -> None:
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"jail: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def _exit_like(status: int) -> NoReturn:
    """Leave the way the command left: the same exit code, or killed by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be handled, so need no reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default is to be ignored
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 2)


def run_in_namespaces(config: dict[str, Any], command: list[str]) -> NoReturn:
    """Fork PID 1 of the new PID namespace; wait for it; exit the way the command did."""
    read_fd, report_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            _pid_one(config, command, report_fd)
        except BaseException as exc:  # noqa: BLE001
            _fail(str(exc))
    os.close(report_fd)
    _close_fds_except(read_fd)  # the grader's pipes: their EOF must not wait for this process
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os.kill(pid, signal.SIGKILL))  # PID 1's death ends the namespace
    _, init_status = os.waitpid(pid, 0)
    report = os.read(read_fd, 64)
    _exit_like(int(report) if report else init_status)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    config = json.loads(argv[0])
    command = argv[split + 1 :]
    mode = config.get("mode")
    try:
        if os.geteuid() == 0 and (mode != "root" or config.get("uid") is None):
            raise JailError("refusing to run a submission as root: the configuration gives no uid to run it as")
        if mode == "root" and os.geteuid() != 0:
            raise JailError("root mode needs root")
        if mode not in ("root", "userns", "none"):
            raise JailError(f"unknown isolation mode {mode!r}")
        os.chdir(config["scratch"])
        if mode == "none":
            _run_command(config, command)
        enter_namespaces(user_namespace=mode == "userns")
        isolate_filesystem(config["readonly"], config["hide"], config["scratch"], config["tmp_size"], mode == "root")
        os.chdir(config["scratch"])  # the same path, now the bind mount
    except (JailError, OSError) as exc:
        _fail(str(exc))
    run_in_namespaces(config, command)


if __name__ == "__main__":
    main(sys.argv[1:])
