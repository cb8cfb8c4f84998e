"""Start the student's process confined, talk to it, and leave nothing behind.

One :class:`StudentProcess` per submission: a scratch directory holding only
a copy of the submission, a scrubbed environment, resource limits, a process
group (so a timeout kills everything it started), and the jail's namespaces
(see :mod:`course_lib.grading.jail`): as root with a uid of its own, without
root in an unprivileged user namespace (:func:`course_lib.grading.trust.isolation_mode`).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_lib.grading import jail, trust
from course_lib.grading.protocol import MAX_MESSAGE_BYTES

#: First uid handed to sandboxed submissions when grading as root (one uid per concurrent job);
#: ``COURSE_LIB_GRADER_BASE_UID`` moves the range (e.g. when another service owns these uids).
BASE_UID = int(os.environ.get("COURSE_LIB_GRADER_BASE_UID", "64000"))
#: How many uids from BASE_UID the graders on one machine may use at once.
UID_RANGE = 4096
#: Where uid leases are kept: root's own, so no other user can plant a file or a symlink there.
LOCK_DIR = Path("/run/course_lib_grader")
#: How much of a dead process's own output its reason quotes.
EXIT_TAIL_LINES, EXIT_TAIL_CHARS = 5, 500


def _root_lock_dir() -> Path:
    """:data:`LOCK_DIR`, created 0700 by root, refused if anyone else could have made or changed it."""
    try:
        os.mkdir(LOCK_DIR, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(LOCK_DIR)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise RuntimeError(f"{LOCK_DIR} must be a directory owned by root with mode 0700 (it is not): remove it")
    return LOCK_DIR


class UidLease:
    """A uid for one sandboxed submission, unique across *every* grader process on this machine.

    The grader kills every process of a submission's uid when it is done, so
    two graders running at once (two ``make grade`` commands, or parallel
    tests) must never hand out the same uid: each lease holds an exclusive
    ``flock`` on a lock file named after its uid until it is released. The
    kernel drops the lock if the grader dies, so a crash leaks nothing.
    """

    def __init__(self, lock_dir: str | Path | None = None) -> None:
        self.lock_dir = Path(lock_dir) if lock_dir is not None else _root_lock_dir()
        self.uid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> int:
        import fcntl

        for uid in range(BASE_UID, BASE_UID + UID_RANGE):
            fd = os.open(self.lock_dir / f"course_lib_grader_uid_{uid}.lock",
                         os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return uid
        raise RuntimeError(f"all {UID_RANGE} grader uids from {BASE_UID} are in use; wait for other graders to finish")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd, self.uid = None, None

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Limits:
    """What one submission may use. ``timeout_s`` is wall-clock for the whole submission, tests included."""

    timeout_s: float = 120.0
    memory_bytes: int = 3 << 30
    processes: int = 128
    file_bytes: int = 64 << 20
    output_bytes: int = 64 << 10

    @property
    def cpu_seconds(self) -> int:
        return int(self.timeout_s * 2) + 10


class StudentGone(Exception):
    """The student's process ended or stopped answering; the message says how."""


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                for line in fh:
                    if line.startswith("State:") and line.split()[1] == "Z":
                        break  # a zombie is already dead; only its parent's wait() removes it
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry))
                        break
        except OSError:
            continue
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` until none is left (a fork bomb keeps spawning for a moment)."""
    for _ in range(50):
        pids = _processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def jail_config(scratch: Path, mode: str, uid: int | None, limits: Limits, hide: list[str]) -> dict[str, Any]:
    """The configuration :mod:`course_lib.grading.jail` confines a process with: mode, visibility, environment, limits, uid."""
    if mode not in trust.ISOLATION_MODES:
        raise ValueError(f"unknown isolation mode {mode!r}; one of {trust.ISOLATION_MODES}")
    if mode == "root" and uid is None:
        raise ValueError("root mode needs a leased uid (UidLease): a submission never runs as root")
    home = "/tmp" if mode != "none" else str(scratch)  # the jail mounts a private /tmp in its namespaces
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        # course_lib.setup(threads=N) honours this cap: jobs run in parallel, one thread each.
        "COURSE_LIB_MAX_THREADS": "1",
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    # Some CPUs here need these for OpenBLAS to compute correctly (see the machine notes).
    env.update({k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")})
    # In a user namespace the jail's own two processes count against the limit too.
    processes = limits.processes + (jail.JAIL_PROCESSES if mode == "userns" else 0)
    return {
        "mode": mode,
        "scratch": str(scratch),
        "readonly": trust.visible_paths(),
        "hide": sorted(set(hide)),
        "uid": uid,
        "env": env,
        "memory_bytes": limits.memory_bytes,
        "cpu_seconds": limits.cpu_seconds,
        "processes": processes,
        "file_bytes": limits.file_bytes,
        "tmp_size": "256m",
    }


def _jail_command(config: dict[str, Any], command: list[str]) -> list[str]:
    # The file, not ``-m``: importing the course_lib package would load numpy, whose threads make
    # unshare(CLONE_NEWUSER) fail (EINVAL in a multithreaded process). The jail needs the stdlib only.
    return [sys.executable, "-I", str(Path(jail.__file__).resolve()), json.dumps(config), "--", *command]


@functools.cache
def namespaces_problem() -> str | None:
    """Why the jail's user-namespace mode does not work here (its own words), or None if it does. Tried once."""
    with tempfile.TemporaryDirectory(prefix="course_lib_probe_") as folder:
        config = jail_config(Path(folder), "userns", None, Limits(timeout_s=60), [])
        try:
            done = subprocess.run(_jail_command(config, [sys.executable, "-I", "-c", "pass"]), cwd=folder,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit code {done.returncode}")[:300]


def run_confined(
    python_args: list[str], files: dict[str, bytes], limits: Limits, hide: Sequence[str | Path] = (),
) -> tuple[int | None, str, str]:
    """Run trusted ``python -I python_args...`` confined like a submission, on untrusted ``files``.

    For work on a learner's *data* (a model file parsed by a native runtime,
    say) that must not run with the grader's privileges: the process gets the
    jail (the best isolation available here, see
    :func:`~course_lib.grading.trust.isolation_mode`; limits always) and a
    fresh scratch directory, its working directory, holding ``files``. The
    code is trusted, so where nothing isolates (a learner's own notebook on a
    machine without user namespaces) it runs with limits only. Returns the
    exit code (``None`` after the timeout, when everything it started is
    killed), stdout and stderr.
    """
    mode = trust.isolation_mode(unsafe_same_user=True)
    lease = UidLease() if mode == "root" else None
    uid = lease.acquire() if lease is not None else None
    run_dir = Path(tempfile.mkdtemp(prefix="course_lib_confined_"))
    process: subprocess.Popen[str] | None = None
    try:
        os.chmod(run_dir, 0o711)
        scratch = run_dir / "scratch"
        scratch.mkdir(mode=0o700)
        for name, blob in files.items():
            (scratch / name).write_bytes(blob)
        if uid is not None:
            for path in [scratch, *scratch.iterdir()]:
                os.chown(path, uid, uid)
        config = jail_config(scratch, mode, uid, limits, trust.paths_to_hide(hide))
        jail = _jail_command(config, [sys.executable, "-I", "-B", *python_args])
        process = subprocess.Popen(jail, cwd=scratch, env={"PATH": config["env"]["PATH"], "LANG": "C.UTF-8"},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=limits.timeout_s)
            return process.returncode, out, err
        except subprocess.TimeoutExpired:
            return None, "", ""
    finally:
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.communicate()
        if uid is not None:
            _kill_uid(uid)
        if lease is not None:
            lease.release()
        shutil.rmtree(run_dir, ignore_errors=True)


class StudentProcess:
    """The sandboxed process that runs one submission and answers the grader's requests."""

    def __init__(
        self,
        submission: Path,
        skip_ids: list[str],
        limits: Limits,
        hide: list[Path],
        mode: str | None = None,
        work_root: Path | None = None,
    ) -> None:
        """``mode``: how to confine it (:func:`~course_lib.grading.trust.isolation_mode`, decided here if None)."""
        self.submission = Path(submission)
        self.skip_ids = skip_ids
        self.limits = limits
        self.hide = trust.paths_to_hide(hide)
        self.mode = mode if mode is not None else trust.isolation_mode()
        self._lease: UidLease | None = None
        self.uid: int | None = None  # as root, a leased uid of its own in start(): never root itself
        self.work_root = Path(work_root or tempfile.gettempdir())
        self.deadline = time.monotonic() + limits.timeout_s
        self.output = bytearray()
        self.current_cell: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._next_id = ""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.mode == "root":
            self._lease = UidLease()
            self.uid = self._lease.acquire()  # a uid no other grader on this machine is using right now
        self.run_dir = Path(tempfile.mkdtemp(prefix="course_lib_grade_", dir=self.work_root))
        os.chmod(self.run_dir, 0o711)
        self.scratch = self.run_dir / "scratch"
        self.scratch.mkdir(mode=0o700)
        shutil.copyfile(self.submission, self.scratch / "submission.ipynb")
        if self.uid is not None:
            for path in (self.scratch, self.scratch / "submission.ipynb"):
                os.chown(path, self.uid, self.uid)

        request_r, self._request_w = os.pipe()
        self._response_r, response_w = os.pipe()
        config = jail_config(self.scratch, self.mode, self.uid, self.limits, self.hide)
        env = config["env"]
        # -I ignores PYTHON* variables, so unbuffered output (-u) and no .pyc writes (-B) are flags.
        child = [sys.executable, "-I", "-u", "-B", "-m", "course_lib.grading.child", "submission.ipynb",
                 str(request_r), str(response_w), json.dumps(self.skip_ids)]
        self.process = subprocess.Popen(
            _jail_command(config, child),
            cwd=self.scratch,
            env={"PATH": env["PATH"], "LANG": "C.UTF-8", **{k: v for k, v in env.items() if k.startswith("OPENBLAS_")}},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(request_r, response_w),
            start_new_session=True,  # its own process group: a timeout kills all it started
        )
        os.close(request_r)
        os.close(response_w)
        self._drain = threading.Thread(target=self._drain_output, daemon=True)
        self._drain.start()

    def _drain_output(self) -> None:
        """Keep the first ``output_bytes`` of the process's output, discard the rest (no pipe stalls)."""
        assert self.process is not None and self.process.stdout is not None
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):  # type: ignore[union-attr,attr-defined]
            room = self.limits.output_bytes - len(self.output)
            if room > 0:
                self.output += chunk[:room]

    def close(self) -> None:
        """End the process and everything it started; delete the scratch directory."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self.uid is not None:
                _kill_uid(self.uid)  # processes that left the group (setsid) too
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._drain.join(timeout=5)
            if self.process.stdout is not None:
                self.process.stdout.close()
        for fd in (getattr(self, "_request_w", None), getattr(self, "_response_r", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if hasattr(self, "run_dir"):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._lease is not None:
            self._lease.release()  # only now: every process of the uid is gone
            self._lease = None

    # --- messages ----------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def receive(self) -> dict[str, Any]:
        """The next message from the student's process, or :class:`StudentGone` (timeout, exit, garbage)."""
        scanned = 0  # search each byte for the newline once (a 60 MB line must not cost quadratic time)
        while (end := self._buffer.find(b"\n", scanned)) < 0:
            scanned = len(self._buffer)
            remaining = self.remaining()
            if remaining <= 0:
                where = f" while running code cell {self.current_cell}" if self.current_cell is not None else ""
                raise StudentGone(f"timed out after {self.limits.timeout_s:.0f} s{where}")
            ready, _, _ = select.select([self._response_r], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self._response_r, 1 << 20)
            if not chunk:
                raise StudentGone(self._exit_reason())
            self._buffer += chunk  # bytearray: appending is amortised O(chunk), not a copy of all so far
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                raise StudentGone("the notebook's process sent an answer larger than the grader accepts")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            return trust.parse_message(line)
        except trust.MessageError as exc:
            raise StudentGone(str(exc)) from None

    def _exit_reason(self) -> str:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        where = f" while running code cell {self.current_cell}" if self.current_cell is not None else ""
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = {"SIGKILL": " (killed: memory or CPU limit?)", "SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}
            reason = f"the notebook's process was killed by {name}{why.get(name, '')}{where}"
        else:
            reason = f"the notebook's process exited (code {code}){where}"
        if self.current_cell is None:  # it died outside the learner's cells: the jail or the interpreter says why
            tail = self._output_tail()
            if tail:
                reason += f"; its last output: {tail}"
        return reason

    def _output_tail(self) -> str:
        """The last few lines the process wrote (stdout and stderr), bounded: a dying process's own words."""
        self._drain.join(timeout=2)  # its output ends when the process does
        lines = [line.strip() for line in bytes(self.output).decode("utf-8", errors="replace").splitlines() if line.strip()]
        text = " | ".join(lines[-EXIT_TAIL_LINES:])
        return text if len(text) <= EXIT_TAIL_CHARS else "..." + text[-(EXIT_TAIL_CHARS - 3):]

    def wait_ready(self) -> list[dict[str, Any]]:
        """Let the notebook run; return the cells that raised. :class:`StudentGone` if it never gets there.

        Messages are validated by :func:`course_lib.grading.trust.parse_message`; an answer
        arriving before ``ready`` (nobody asked yet) is a forgery and ends the submission.
        """
        while True:
            message = self.receive()
            op = message.get("op")
            if op == "cell":
                self.current_cell = message["index"]
            elif op == "ready":
                self.current_cell = None
                return message["cell_errors"]
            elif op == "fatal":
                raise StudentGone(message["error"])
            else:
                raise StudentGone("the notebook's process answered a request nobody made")

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer (answers carry the request's id)."""
        # An id nobody can guess: answers written ahead of time by the student's code cannot match it.
        self._next_id = secrets.token_hex(8)
        message = dict(message, id=self._next_id)
        data = (json.dumps(message) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                _, writable, _ = select.select([], [self._request_w], [], max(0.0, self.remaining()))
                if not writable:
                    raise StudentGone(f"timed out after {self.limits.timeout_s:.0f} s")
                written = os.write(self._request_w, view[:65536])
                view = view[written:]
        except OSError:  # broken pipe: the process is gone
            raise StudentGone(self._exit_reason()) from None
        while True:
            answer = self.receive()
            if answer.get("id") == self._next_id:
                return answer
