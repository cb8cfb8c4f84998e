"""Start the student's process confined, talk to it, and leave nothing behind.

One :class:`StudentProcess` per submission: a scratch directory holding only
a copy of the submission, a scrubbed environment, resource limits, a process
group (so a timeout kills everything it started), and - when the grader runs
as root - a uid of its own and a private mount namespace (see
:mod:`course_lib.grading.jail`).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_lib.grading.protocol import MAX_MESSAGE_BYTES

#: First uid handed to sandboxed submissions when grading as root (one uid per concurrent job).
BASE_UID = 64000
#: How many uids from BASE_UID the graders on one machine may use at once.
UID_RANGE = 4096


class UidLease:
    """A uid for one sandboxed submission, unique across *every* grader process on this machine.

    The grader kills every process of a submission's uid when it is done, so
    two graders running at once (two ``make grade`` commands, or parallel
    tests) must never hand out the same uid: each lease holds an exclusive
    ``flock`` on a lock file named after its uid until it is released. The
    kernel drops the lock if the grader dies, so a crash leaks nothing.
    """

    def __init__(self, lock_dir: str | Path | None = None) -> None:
        self.lock_dir = Path(lock_dir or tempfile.gettempdir())
        self.uid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> int:
        import fcntl

        for uid in range(BASE_UID, BASE_UID + UID_RANGE):
            fd = os.open(self.lock_dir / f"course_lib_grader_uid_{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
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


def jail_config(scratch: Path, uid: int | None, limits: Limits, hide: list[str]) -> dict[str, Any]:
    """The configuration :mod:`course_lib.grading.jail` confines a process with: scrubbed environment, limits, uid."""
    import course_lib

    home = "/tmp" if uid is not None else str(scratch)  # the jail mounts a private /tmp only when root
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
    processes = limits.processes
    if uid is None:
        # Without a uid of its own the process limit counts all of this user's processes.
        processes += len(_processes_of(os.getuid()))
    needed = sorted({os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                     str(Path(course_lib.__file__).resolve().parent)})
    return {
        "scratch": str(scratch),
        "needed": needed,
        "hide": hide,
        "uid": uid,
        "env": env,
        "memory_bytes": limits.memory_bytes,
        "cpu_seconds": limits.cpu_seconds,
        "processes": processes,
        "file_bytes": limits.file_bytes,
        "tmp_size": "256m",
    }


def run_confined(
    python_args: list[str], files: dict[str, bytes], limits: Limits, hide: Sequence[str | Path] = (),
) -> tuple[int | None, str, str]:
    """Run trusted ``python -I python_args...`` confined like a submission, on untrusted ``files``.

    For work on a learner's *data* (a model file parsed by a native runtime,
    say) that must not run with the grader's privileges: the process gets the
    jail (own uid and private mounts when root, limits always) and a fresh
    scratch directory, its working directory, holding ``files``. Returns the
    exit code (``None`` after the timeout, when everything it started is
    killed), stdout and stderr.
    """
    lease = UidLease() if running_as_root() else None
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
        config = jail_config(scratch, uid, limits, [str(Path(h).resolve()) for h in hide])
        command = [sys.executable, "-I", "-B", *python_args]
        jail = [sys.executable, "-I", "-m", "course_lib.grading.jail", json.dumps(config), "--", *command]
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
        uid: int | None,
        work_root: Path | None = None,
    ) -> None:
        self.submission = Path(submission)
        self.skip_ids = skip_ids
        self.limits = limits
        self.hide = [str(Path(h).resolve()) for h in hide]
        # As root the submission always gets a uid of its own (never root itself).
        self.uid = (uid if uid is not None else BASE_UID) if running_as_root() else None
        self.work_root = Path(work_root or tempfile.gettempdir())
        self.deadline = time.monotonic() + limits.timeout_s
        self.output = bytearray()
        self.current_cell: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._next_id = ""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
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
        config = jail_config(self.scratch, self.uid, self.limits, self.hide)
        env = config["env"]
        # -I ignores PYTHON* variables, so unbuffered output (-u) and no .pyc writes (-B) are flags.
        child = [sys.executable, "-I", "-u", "-B", "-m", "course_lib.grading.child", "submission.ipynb",
                 str(request_r), str(response_w), json.dumps(self.skip_ids)]
        jail = [sys.executable, "-I", "-m", "course_lib.grading.jail", json.dumps(config), "--", *child]
        self.process = subprocess.Popen(
            jail,
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

    # --- messages ----------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def receive(self) -> dict[str, Any]:
        """The next message from the student's process, or :class:`StudentGone` (timeout, exit, garbage)."""
        while b"\n" not in self._buffer:
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
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                raise StudentGone("the notebook's process sent an answer larger than the grader accepts")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise StudentGone("the notebook's process sent malformed data") from None
        if not isinstance(message, dict):
            raise StudentGone("the notebook's process sent malformed data")
        return message

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
            return f"the notebook's process was killed by {name}{why.get(name, '')}{where}"
        return f"the notebook's process exited (code {code}){where}"

    def wait_ready(self) -> list[dict[str, Any]]:
        """Let the notebook run; return the cells that raised. :class:`StudentGone` if it never gets there."""
        while True:
            message = self.receive()
            op = message.get("op")
            if op == "cell":
                self.current_cell = message.get("index")
            elif op == "ready":
                self.current_cell = None
                errors = message.get("cell_errors", [])
                return errors if isinstance(errors, list) else []
            elif op == "fatal":
                raise StudentGone(str(message.get("error", "the notebook could not be run")))

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
