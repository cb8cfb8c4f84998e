"""Grade a cohort on a Dask distributed cluster: the same grading, on as many machines as there are workers.

``python -m course_lib grade SUBMISSIONS --scheduler tcp://HOST:PORT`` sends each submission's
bytes and the source notebook's bytes to the cluster (workers need not share a filesystem). A
worker writes them into a private temporary folder and runs the same
:func:`~course_lib.grading.grader.grade_submission` as a local run, which confines the submission
on *that worker's* machine (jail, leased uid, limits). The :class:`GradeResult` comes back to the
client, and the client writes the CSV and the feedback with the same code as ``--jobs``, so both
paths give the same files.

Workers must run the course's environment (same ``course_lib``, same pinned packages; checked
before anything is graded) and run as root for full isolation::

    python -m dask scheduler --host 10.0.0.5 --port 8786                   # on one machine
    python -m dask worker tcp://10.0.0.5:8786 --nthreads 4 --nworkers 1    # each grading machine, as root

Anyone who can reach the scheduler can run code on the workers: keep it on a private network.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from course_lib.grading import grader
from course_lib.grading.grader import GradeResult, GraderFailure, Outcome, TestCell
from course_lib.grading.sandbox import Limits, running_as_root

#: Packages whose versions must agree between the client and every worker (they change what a grade is).
FINGERPRINT_PACKAGES = ("numpy", "torch", "tensorflow", "onnxruntime", "nbformat", "ipykernel", "dask", "distributed")
#: Seconds to wait for the scheduler to answer and for at least one worker to join it.
CONNECT_TIMEOUT_S = 30.0


def environment_fingerprint() -> dict[str, Any]:
    """What must be identical wherever a submission is graded: Python, key packages, ``course_lib``'s own code."""
    import course_lib

    package = Path(course_lib.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    versions = {}
    for name in FINGERPRINT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return {"python": sys.version.split()[0], "course_lib": digest.hexdigest()[:16], **versions}


def _worker_is_root() -> bool:
    return running_as_root()


def grade_on_worker(
    student: str, file_name: str, submission: bytes, source_name: str, source: bytes, limits: Limits,
) -> GradeResult:
    """Runs on a worker: grade one submission, given as bytes, exactly as a local run would.

    The files go into a fresh folder (mode 0700, the grader's own) that the submission's process
    does not see; so do this machine's ``solutions/`` if ``course_lib`` is a checkout.
    """
    folder = Path(tempfile.mkdtemp(prefix="course_lib_cluster_"))
    try:
        source_path = folder / "source" / Path(source_name).name
        submission_path = folder / "submissions" / "student" / Path(file_name).name
        for path, blob in ((source_path, source), (submission_path, submission)):
            path.parent.mkdir(parents=True)
            path.write_bytes(blob)
        tests = grader.load_tests(source_path)
        repository_solutions = Path(grader.__file__).resolve().parents[2] / "solutions"
        hide = grader._paths_to_hide([folder, *([repository_solutions] if repository_solutions.is_dir() else [])])
        return grader.grade_submission(submission_path, source_path, student, limits, hide, tests)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class DaskRunner:
    """Grades submissions on the workers of a Dask cluster; used by :func:`grader.grade_batch` with a scheduler."""

    def __init__(self, scheduler: str, source: Path, tests: list[TestCell], limits: Limits) -> None:
        self.scheduler, self.source, self.tests, self.limits = scheduler, source, tests, limits
        self.source_bytes = source.read_bytes()
        self.client: Any = None

    def __enter__(self) -> DaskRunner:
        from distributed import Client

        try:
            self.client = Client(self.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise GraderFailure(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            self.client.close()
            raise GraderFailure(f"no Dask worker joined the scheduler at {self.scheduler} within "
                                f"{CONNECT_TIMEOUT_S:.0f} s; start workers with `dask worker {self.scheduler}` "
                                "from the course's environment") from None
        try:
            self._check_workers()
        except BaseException:
            self.client.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _check_workers(self) -> None:
        """Refuse workers whose environment differs from this one: they would grade differently."""
        here = environment_fingerprint()
        different = {address: {k: (v, here.get(k)) for k, v in theirs.items() if here.get(k) != v}
                     for address, theirs in self.client.run(environment_fingerprint).items()}
        different = {address: diff for address, diff in different.items() if diff}
        if different:
            lines = [f"  {address}: " + ", ".join(f"{k} {theirs} (here {ours})" for k, (theirs, ours) in diff.items())
                     for address, diff in sorted(different.items())]
            raise GraderFailure("these Dask workers run a different environment than this client, so they would "
                                "grade differently; start them from the course's environment:\n" + "\n".join(lines))
        not_root = sorted(address for address, root in self.client.run(_worker_is_root).items() if not root)
        if not_root:
            warnings.warn(f"Dask workers not running as root ({', '.join(not_root)}): submissions run as the worker's "
                          "user (limits and a timeout apply, but no separate uid or hidden folders)", stacklevel=3)

    def grade(self, submissions: list[tuple[str, Path]]) -> Iterator[Outcome]:
        """Outcomes in the order they finish; a submission too large to send is refused here, as locally."""
        from distributed import as_completed

        futures: dict[Any, tuple[str, Path]] = {}
        refused: list[tuple[str, Path]] = []
        for student, path in submissions:
            if not path.is_file() or path.stat().st_size > grader.MAX_SUBMISSION_BYTES:
                refused.append((student, path))
                continue
            key = f"grade-{grader._safe_name(student)}-{uuid.uuid4().hex[:8]}"
            future = self.client.submit(grade_on_worker, student, path.name, path.read_bytes(), self.source.name,
                                        self.source_bytes, self.limits, key=key, pure=False)
            futures[future] = (student, path)
        for student, path in refused:  # grade_submission says why without running anything
            yield student, path, grader.grade_submission(path, self.source, student, self.limits, (), self.tests)
        for future in as_completed(list(futures), loop=self.client.loop):
            student, path = futures.pop(future)
            try:
                yield student, path, future.result()
            except Exception as exc:  # noqa: BLE001 - a worker lost or a task failed: this submission's row says so
                yield student, path, exc
