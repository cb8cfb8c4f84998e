"""Grade submissions: student code in a sandboxed process, tests and comparisons in the grader.

How one submission is graded:

1. The source notebook (``solutions/NN_topic.ipynb``) gives the test cells:
   code cells with nbgrader metadata ``grade: true``, their ``grade_id`` and
   ``points``. The submission's own test cells are ignored, so editing or
   deleting them changes nothing.
2. The submission runs in a :class:`~course_lib.grading.sandbox.StudentProcess`,
   its test cells skipped.
3. Each test cell's code runs **here**, statement by statement. Names it does
   not define itself (the learner's functions and variables) are
   :class:`Remote` proxies: calling one sends the call to the student's
   process with arguments pickled here, and the result comes back as plain
   data. Each ``check(...)`` is recorded with its expected value, and
   :func:`course_lib.grading.checks.compare` decides, in this process.
4. Points: a test cell's points are shared equally by its checks
   (partial credit). Hidden checks appear in feedback by name and result only.
"""

from __future__ import annotations

import ast
import builtins
import csv
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.grading import checks, protocol, snapshot, trust
from course_lib.grading.messages import feedback_text
from course_lib.grading.sandbox import Limits, StudentGone, StudentProcess

BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
#: Submissions larger than this are not graded (a notebook with outputs of a few MB is normal).
MAX_SUBMISSION_BYTES = 50 << 20


class SourceError(ValueError):
    """The source notebook breaks the authoring rules; the message says which cell and why."""


# --- the source's tests ---------------------------------------------------------------------


@dataclass
class TestCell:
    grade_id: str
    points: float
    source: str
    statements: list[tuple[ast.stmt, bool, bool]]  # (statement, is_check, hidden)

    @property
    def n_checks(self) -> int:
        return sum(1 for _, is_check, _ in self.statements if is_check)


def _is_check_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "check")


def parse_test_cell(grade_id: str, points: float, source: str) -> TestCell:
    """Split a test cell into top-level statements, marking checks and hidden ones."""
    hidden_lines: set[int] = set()
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        if BEGIN_HIDDEN in line:
            inside = True
        elif END_HIDDEN in line:
            inside = False
        elif inside:
            hidden_lines.add(number)
    if inside:
        raise SourceError(f"test cell {grade_id!r}: '{BEGIN_HIDDEN}' without '{END_HIDDEN}'")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise SourceError(f"test cell {grade_id!r} is not valid Python: {exc}") from None
    statements = []
    for node in tree.body:
        is_check = _is_check_call(node)
        if not is_check:
            nested = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "check"]
            if nested:
                raise SourceError(f"test cell {grade_id!r}, line {node.lineno}: put check(...) at the top level "
                                  "of the cell (not inside a loop, function or expression)")
        statements.append((node, is_check, node.lineno in hidden_lines))
    cell = TestCell(grade_id, float(points), source, statements)
    if cell.n_checks == 0:
        raise SourceError(f"test cell {grade_id!r} has no check(...) statement")
    return cell


def load_tests(source_path: Path) -> list[TestCell]:
    """The test cells of a source notebook, in order."""
    import nbformat

    nb = nbformat.read(source_path, as_version=4)
    cells = []
    seen = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        grade_id = meta.get("grade_id")
        if not grade_id or grade_id in seen:
            raise SourceError(f"{source_path}: every test cell needs a unique grade_id (got {grade_id!r})")
        seen.add(grade_id)
        cells.append(parse_test_cell(grade_id, meta.get("points", 0), cell.source))
    if not cells:
        raise SourceError(f"{source_path} has no test cells (code cells with nbgrader grade=true)")
    bound: set[str] = set()  # names earlier test cells define are the grader's, not the learner's ...
    tainted: set[str] = set()  # ... unless they were computed from the learner's values
    for cell in cells:
        tree = ast.parse(cell.source)
        learner_names = (_free_names(tree) - bound) | tainted
        lines, tainted = trust.untrusted_expected([stmt for stmt, _, _ in cell.statements], learner_names, _is_check_call)
        if lines:
            raise SourceError(f"{source_path}: test cell {cell.grade_id!r}, line {lines[0]}: expected depends on a value "
                              "from the learner's code; compute it in the test (or with course_lib.grading.trusted)")
        bound |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        bound |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    return cells


# --- proxies to the student's objects --------------------------------------------------------


class StudentError(Exception):
    """The learner's code raised while a check was computing its value."""


WITHHELD = "failed (details withheld: hidden tests had already run your code)"


def _withheld(message: str) -> str:
    """A visible check's message once hidden inputs have reached the learner's code: nothing the learner's code wrote.

    A built-in exception's name (``NotImplementedError``) is kept: the learner cannot choose it.
    """
    for name in re.findall(r"\b([A-Z]\w*(?:Error|Exception|Exit|Interrupt))\b", message)[:1]:
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, BaseException):
            return f"{WITHHELD}; your code raised {name}"
    return WITHHELD


class Session:
    """The grader's side of the conversation with one student process."""

    def __init__(self, process: StudentProcess) -> None:
        self.process = process
        #: Once a hidden statement has run, the learner's code has seen hidden inputs: a visible check's message
        #: (an exception text, a returned value) could carry them into the feedback, so it is withheld.
        self.hidden_ran = False

    def ask(self, message: dict[str, Any]) -> Any:
        answer = self.process.request(message)
        if "error" in answer:
            raise StudentError(str(answer["error"])[:500])
        try:
            return protocol.decode(answer.get("value"), lambda h, t: Remote(self, {"handle": h}, t))
        except ValueError as exc:
            raise StudentError(f"the notebook's process sent a malformed result ({exc})") from None


class Remote:
    """Stands for an object that lives in the student's process."""

    #: How the protocol and :mod:`course_lib.grading.trusted` recognise a proxy (not by its class name).
    is_remote_proxy = True

    def __init__(self, session: Session, ref: dict[str, Any], type_name: str = "") -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_grading_ref", ref)
        object.__setattr__(self, "_type_name", type_name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.ask({"op": "call", "ref": self._grading_ref, "args": protocol.dump_args(args, kwargs)})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._session.ask({"op": "getattr", "ref": self._grading_ref, "attr": name})

    def __getitem__(self, key: Any) -> Any:
        return self._session.ask({"op": "getitem", "ref": self._grading_ref, "args": protocol.dump_args((key,), {})})

    def __len__(self) -> int:
        value = self._session.ask({"op": "len", "ref": self._grading_ref})
        if not isinstance(value, int):
            raise StudentError("len() of your object did not return an integer")
        return value

    def __repr__(self) -> str:
        name = self._grading_ref.get("name") or self._type_name or "object"
        return f"<your {name}>"

    def fetch(self) -> Any:
        """The object as plain data (numbers, arrays, lists, dicts), or still a Remote if it is not data."""
        return self._session.ask({"op": "get", "ref": self._grading_ref})


@dataclass
class CheckResult:
    name: str
    hidden: bool
    passed: bool
    message: str = ""
    hint: str = ""


class Recorder:
    """Collects the checks of one test cell while it runs in the grader."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.results: list[CheckResult] = []
        self.hidden = False

    def record(self, name: str, value: Any, expected: Any, rtol: float, atol: float, hint: str) -> None:
        if isinstance(value, Remote):
            value = value.fetch()
        if isinstance(value, Remote):
            self.results.append(CheckResult(name, self.hidden, False, f"returned {value!r}, which is not data", hint))
            return
        if isinstance(expected, Remote):
            raise SourceError(f"check {name!r}: expected must be computed by the test, not by the learner's code")
        ok, why = checks.compare(value, expected, rtol, atol)
        self.results.append(CheckResult(name, self.hidden, ok, "" if ok else why, hint))

    def snapshot(self, kind: str, remote: Remote, args: tuple[Any, ...]) -> Any:
        """Ask the student's process for a snapshot (data) of one of its objects; see :mod:`.snapshot`."""
        if kind not in snapshot.KINDS:
            raise SourceError(f"unknown snapshot kind {kind!r}")
        return self.session.ask({"op": "snapshot", "kind": kind, "ref": remote._grading_ref,
                                 "args": protocol.dump_args(args, {})})


def _free_names(tree: ast.AST) -> set[str]:
    loaded, bound = set[str](), set[str]()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n for n in loaded - bound if not hasattr(builtins, n)}


# --- results ---------------------------------------------------------------------------------


@dataclass
class CellGrade:
    grade_id: str
    points: float
    earned: float
    checks: list[CheckResult] = field(default_factory=list)


@dataclass
class GradeResult:
    student: str
    submission: str
    assignment: str
    score: float
    max_score: float
    status: str  # "graded", "error" (the submission failed) or GRADER_ERROR (the grader failed on it)
    reason: str = ""
    cells: list[CellGrade] = field(default_factory=list)
    cell_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""


def _zero_cells(tests: list[TestCell], reason: str) -> list[CellGrade]:
    return [CellGrade(t.grade_id, t.points, 0.0,
                      [CheckResult(_check_name(stmt), hidden, False, reason) for stmt, is_check, hidden in t.statements if is_check])
            for t in tests]


def _check_name(stmt: ast.stmt) -> str:
    call = stmt.value  # type: ignore[attr-defined]
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return "check"


def run_test_cell(test: TestCell, session: Session, namespace: dict[str, Any]) -> CellGrade:
    """Execute one test cell here, against the student's process; score its checks."""
    recorder = Recorder(session)
    withhold_from: int | None = 0 if session.hidden_ran else None  # results from here on may carry hidden inputs
    namespace.setdefault("check", checks.check)  # always the grader's, even if the cell forgot the import
    for name in _free_names(ast.parse(test.source)):
        namespace.setdefault(name, Remote(session, {"name": name}))
    checks.set_recorder(recorder)
    failure: str | None = None
    try:
        for stmt, is_check, hidden in test.statements:
            recorder.hidden = hidden
            if hidden and not session.hidden_ran:
                session.hidden_ran, withhold_from = True, len(recorder.results)
            if failure is not None:
                if is_check:
                    recorder.results.append(CheckResult(_check_name(stmt), hidden, False, failure))
                continue
            code = compile(ast.Module(body=[stmt], type_ignores=[]), f"<test {test.grade_id}>", "exec")
            before = len(recorder.results)
            try:
                exec(code, namespace)
            except StudentGone:
                raise
            except StudentError as exc:
                if not is_check:
                    failure = f"not run: the test's setup failed in your code ({exc})"
                else:
                    recorder.results.append(CheckResult(_check_name(stmt), hidden, False, f"your code raised {exc}"))
            except SourceError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the result had the wrong type for the test's arithmetic
                message = f"{type(exc).__name__}: {exc}"[:300]
                if is_check:
                    recorder.results.append(CheckResult(_check_name(stmt), hidden, False, message))
                else:
                    failure = f"not run: the test's setup failed ({message})"
            if is_check and len(recorder.results) == before:
                recorder.results.append(CheckResult(_check_name(stmt), hidden, False, "check did not run"))
    finally:
        checks.set_recorder(None)
    for result in recorder.results[withhold_from:] if withhold_from is not None else []:
        if not result.hidden and not result.passed:
            result.message = _withheld(result.message)
    passed = sum(r.passed for r in recorder.results)
    earned = round(test.points * passed / test.n_checks, 2) if test.n_checks else 0.0
    return CellGrade(test.grade_id, test.points, earned, recorder.results)


def grade_submission(
    submission: Path,
    source: Path,
    student: str | None = None,
    limits: Limits | None = None,
    hide: Iterable[Path] = (),
    tests: list[TestCell] | None = None,
    unsafe_same_user: bool = False,
) -> GradeResult:
    """Grade one notebook against ``source``. Never raises for anything the submission does.

    Raises :class:`~course_lib.grading.trust.IsolationUnavailable` (before running anything)
    when the submission cannot be confined here and ``unsafe_same_user`` was not given.
    """
    start = time.monotonic()
    limits = limits or Limits()
    tests = tests if tests is not None else load_tests(source)
    student = student or submission.stem
    max_score = sum(t.points for t in tests)

    def failed(reason: str, cells: list[CellGrade] | None = None, **extra: Any) -> GradeResult:
        cells = cells if cells is not None else _zero_cells(tests, reason)
        return GradeResult(student, str(submission), source.stem, round(sum(c.earned for c in cells), 2), max_score,
                           "error", reason, cells, seconds=time.monotonic() - start, **extra)

    mode = trust.isolation_mode(unsafe_same_user)
    problem = _unreadable_reason(submission)
    if problem:
        return failed(problem)

    # Called alone too (not only from grade_batch): never show the source's or other submissions' folders.
    resolved = submission.resolve()
    hide = [*hide, source.resolve().parent, resolved.parent, resolved.parent.parent]
    # As root the process leases a uid of its own, which no other grader on this machine holds.
    process = StudentProcess(submission, [t.grade_id for t in tests], limits, hide, mode)
    try:
        process.start()
        result = _run_tests(process, tests, failed)
    finally:
        process.close()  # also joins the thread that collects the process's output, and ends the lease
    result.output = _tail(process)
    result.seconds = time.monotonic() - start
    result.student, result.submission, result.assignment = student, str(submission), source.stem
    return result


def _run_tests(process: StudentProcess, tests: list[TestCell], failed: Callable[..., GradeResult]) -> GradeResult:
    """Wait for the notebook to run, then run every test cell against it."""
    try:
        cell_errors = process.wait_ready()
    except StudentGone as exc:
        return failed(str(exc))
    session = Session(process)
    namespace: dict[str, Any] = {"__name__": "__grader__"}
    cells: list[CellGrade] = []
    gone: str | None = None
    for test in tests:
        if gone is not None:
            cells.extend(_zero_cells([test], f"not run: {gone}"))
            continue
        try:
            cells.append(run_test_cell(test, session, namespace))
        except StudentGone as exc:
            gone = str(exc)
            cells.extend(_zero_cells([test], gone))
    if gone is not None:
        return failed(gone, cells, cell_errors=cell_errors)
    score = round(sum(c.earned for c in cells), 2)
    return GradeResult("", "", "", score, sum(t.points for t in tests), "graded", "", cells, cell_errors)


def _tail(process: StudentProcess) -> str:
    text = bytes(process.output).decode("utf-8", errors="replace")
    return text[-4000:]


def _unreadable_reason(submission: Path) -> str:
    """Why the grader will not run a submission file, or '' if it will."""
    import json

    import nbformat

    if not submission.is_file():
        return f"submission not found: {submission}"
    size = submission.stat().st_size
    if size > MAX_SUBMISSION_BYTES:
        return f"submission is {size / 1e6:.0f} MB; the limit is {MAX_SUBMISSION_BYTES / 1e6:.0f} MB (clear large outputs)"
    try:
        data = json.loads(submission.read_bytes())
        nb = nbformat.from_dict(data)
        nbformat.validate(nbformat.v4.upgrade(nb) if nb.get("nbformat", 4) < 4 else nb)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"not a valid notebook file ({first[:200]}); re-download it from Jupyter (File → Download)"
    return ""


# --- feedback, CSV, batches ------------------------------------------------------------------

#: Longest reason kept in a CSV row, a feedback file or the terminal (a submission's process writes some reasons).
MAX_REASON_CHARS = 500
#: Longest check message, hint or cell error kept in feedback.
MAX_DETAIL_CHARS = 300
#: Cell errors listed in feedback; the rest are counted.
MAX_CELL_ERRORS = 20
#: Status of a submission the grader itself failed on (a bug of the grader, not the learner's doing).
GRADER_ERROR = "grader error"


class GraderFailure(RuntimeError):
    """The grader itself failed, not a submission: the command exits non-zero."""


class CanaryFailed(GraderFailure):
    """The source solution, graded as a submission before the batch, did not get full marks."""


def _bounded(value: Any, limit: int) -> str:
    """``value`` as one line of at most ``limit`` characters, whatever its type (results carry untrusted text)."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (bool, int, float)):
        text = str(value)
    else:
        text = f"<{type(value).__name__}>"  # never repr() an unknown object: it may be huge or raise
    text = " ".join(text[: limit + 1].split())  # cut before collapsing: a 60 MB reason costs nothing here
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float:
    """A finite float for a score or a duration, 0.0 for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def valid_cell_errors(errors: Any) -> tuple[list[tuple[int, str]], int]:
    """The well-formed ``{"index": int, "error": str}`` entries as ``(index, error)``, and how many were not."""
    if not isinstance(errors, list):
        return [], 0 if errors in (None, ()) else 1
    valid = [(error["index"], _bounded(error["error"], MAX_DETAIL_CHARS)) for error in errors
             if isinstance(error, dict) and type(error.get("index")) is int and isinstance(error.get("error"), str)]
    return valid, len(errors) - len(valid)


def feedback_markdown(result: GradeResult, lang: str = "en") -> str:
    """Per-student feedback. Hidden checks: name and result only, never code or expected values.

    Every field is treated as untrusted (bounded, type-checked): rendering never raises for what a
    submission sent, so one submission cannot stop the batch. ``lang``: the grader's own words in that
    language (``messages.FEEDBACK``); the checks' names, messages and hints are shown as the source wrote them.
    """
    def say(key: str, **values: object) -> str:
        return feedback_text(lang, key, **values)

    lines = [say("title", student=_bounded(result.student, 100), assignment=_bounded(result.assignment, 100)), "",
             say("score", score=_number(result.score), max_score=_number(result.max_score)), ""]
    if result.reason:
        lines += [f"> {_bounded(result.reason, MAX_REASON_CHARS)}", ""]
    for cell in result.cells if isinstance(result.cells, list) else []:
        lines.append(f"## {_bounded(cell.grade_id, 100)}: {_number(cell.earned):g} / {_number(cell.points):g}")
        for number, check in enumerate(cell.checks, start=1):
            mark = "✓" if check.passed else "✗"
            if check.hidden:
                lines.append(f"- {mark} {say('hidden_test', number=number)}")
            else:
                detail = "" if check.passed else " — " + _bounded(check.message, MAX_DETAIL_CHARS)
                detail += f" ({say('hint')}: {_bounded(check.hint, MAX_DETAIL_CHARS)})" if detail and check.hint else ""
                lines.append(f"- {mark} {_bounded(check.name, MAX_DETAIL_CHARS)}{detail}")
        lines.append("")
    errors, malformed = valid_cell_errors(result.cell_errors)
    if errors or malformed:
        lines.append(say("cell_errors"))
        lines += ["- " + say("code_cell", index=index, error=error) for index, error in errors[:MAX_CELL_ERRORS]]
        if len(errors) > MAX_CELL_ERRORS:
            lines.append("- " + say("more_errors", count=len(errors) - MAX_CELL_ERRORS))
        if malformed:
            lines.append("- " + say("malformed", count=malformed))
        lines.append("")
    return "\n".join(lines)


def _safe_name(text: str) -> str:
    """A file name for a student's feedback; names that lose characters get a hash, so 李雷 and 王芳 do not collide."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
    if safe == text and safe not in (".", ".."):
        return safe
    import hashlib

    return f"{safe or 'student'}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def find_submissions(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    """``(student, notebook)`` pairs: files as given, folders searched (``student/NN.ipynb`` or ``student.ipynb``)."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for nb in sorted(path.rglob("*.ipynb")):
                if ".ipynb_checkpoints" in nb.parts:
                    continue
                relative = nb.relative_to(path)
                student = relative.parts[0] if len(relative.parts) > 1 else nb.stem
                found.append((student, nb))
        else:
            found.append((path.stem, path))
    # Two files with the same name (alice/00.ipynb, bob/00.ipynb given as files): name them by folder too.
    counts: dict[str, int] = {}
    for student, _ in found:
        counts[student] = counts.get(student, 0) + 1
    unique: list[tuple[str, Path]] = []
    taken: set[str] = set()
    for student, nb in found:
        name = student if counts[student] == 1 else f"{nb.parent.name}_{student}"
        base, n = name, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        unique.append((name, nb))
    return unique


#: What a grading engine yields per submission: who, which file, and the result or what the grader raised.
Outcome = tuple[str, Path, GradeResult | BaseException]


class LocalRunner:
    """Grades submissions on this machine, ``jobs`` at a time (threads waiting on confined processes)."""

    def __init__(self, source: Path, tests: list[TestCell], limits: Limits, hide: list[Path], jobs: int,
                 unsafe_same_user: bool = False) -> None:
        self.source, self.tests, self.limits, self.hide, self.jobs = source, tests, limits, hide, jobs
        self.unsafe_same_user = unsafe_same_user

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def grade(self, submissions: list[tuple[str, Path]]) -> Iterator[Outcome]:
        """Outcomes in the order they finish."""
        def one(student: str, path: Path) -> GradeResult:
            # as root, each submission's process leases a uid that no grader on this machine holds
            return grade_submission(path, self.source, student, self.limits, self.hide, self.tests, self.unsafe_same_user)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = {pool.submit(one, student, path): (student, path) for student, path in submissions}
            try:
                for future in as_completed(futures):
                    student, path = futures[future]
                    error = future.exception()
                    yield student, path, error if error is not None else future.result()
            finally:  # the batch stopped early (a broken source): start nothing more
                pool.shutdown(wait=True, cancel_futures=True)


def grader_error(student: str, submission: str, assignment: str, tests: list[TestCell], error: BaseException) -> GradeResult:
    """The row of a submission the grader failed on: zero, and the grader's exception as the reason."""
    reason = _bounded(f"{GRADER_ERROR}: {type(error).__name__}: {error}", MAX_REASON_CHARS)
    return GradeResult(student, submission, assignment, 0.0, sum(t.points for t in tests), GRADER_ERROR, reason,
                       _zero_cells(tests, "not graded"))


def finish(outcome: Outcome, source: Path, tests: list[TestCell], lang: str = "en") -> tuple[GradeResult, str, list[Any]]:
    """One submission's result, feedback and CSV row, inside its own failure boundary.

    Whatever the result holds (forged messages, huge strings, wrong types), this returns: a failure
    here turns into a "grader error" row for this submission only, and the rest of the batch goes on.
    """
    student, path, result = outcome
    if isinstance(result, SourceError):
        raise result  # the source notebook is broken: every row would be wrong
    try:
        if not isinstance(result, GradeResult):
            raise result if isinstance(result, BaseException) else TypeError(f"got {type(result).__name__}")
        result.student, result.submission = student, str(path)  # a cluster worker graded a copy elsewhere
        feedback, row = feedback_markdown(result, lang), csv_row(result, tests)
        # What the caller keeps (and the command line prints) is bounded too.
        result.reason = _bounded(result.reason, MAX_REASON_CHARS)
        result.cell_errors = [{"index": index, "error": error} for index, error in valid_cell_errors(result.cell_errors)[0]]
        return result, feedback, row
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - the batch goes on, the reason is recorded
        failed = grader_error(student, str(path), source.stem, tests, exc)
        return failed, feedback_markdown(failed, lang), csv_row(failed, tests)


def check_canary(result: GradeResult | BaseException, source: Path) -> None:
    """Raise :class:`CanaryFailed` unless the source solution, graded as a submission, got full marks.

    A grader that cannot give the reference solution full marks (a broken environment, a jail that
    cannot start, submissions placed where the jail cannot work) would give every learner a wrong
    score; the message carries the canary's reason and the last lines its process printed.
    """
    if isinstance(result, BaseException):
        raise CanaryFailed(f"the canary (the source solution {source.name}, graded as a submission) made the "
                           f"grader fail: {type(result).__name__}: {_bounded(str(result), MAX_REASON_CHARS)}")
    if result.status == "graded" and _number(result.score) == _number(result.max_score):
        return
    lost = [f"{cell.grade_id}: {check.name}: {check.message}" for cell in result.cells for check in cell.checks
            if not check.passed]
    lines = [f"the canary (the source solution {source.name}, graded as a submission in the same environment "
             f"and limits) scored {_number(result.score):g} / {_number(result.max_score):g}, so no submission "
             f"was graded and nothing was written."]
    if result.reason:
        lines.append(f"reason: {_bounded(result.reason, MAX_REASON_CHARS)}")
    lines += [f"failed: {_bounded(text, MAX_DETAIL_CHARS)}" for text in lost[:5]]
    tail = [line for line in result.output.splitlines() if line.strip()][-15:]
    if tail:
        lines.append("last lines of the canary's process:")
        lines += [f"    {line[:MAX_DETAIL_CHARS]}" for line in tail]
    raise CanaryFailed("\n".join(lines))


def _prepare_output(out_dir: Path) -> Path:
    """Create ``out_dir/feedback`` and prove it writable before any submission runs."""
    feedback_dir = out_dir / "feedback"
    try:
        feedback_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=feedback_dir, prefix=".write_test_"):
            pass
    except OSError as exc:
        raise GraderFailure(f"cannot write into the output folder {out_dir}: {exc.strerror or exc}") from None
    return feedback_dir


def _submission_folders(path: Path) -> list[Path]:
    """A submission's folder and the one above it (``submissions/<student>/NN.ipynb``): no learner reads another's.

    Never the temporary directory or an ancestor of it: the jail builds each submission's scratch there.
    """
    temp = Path(tempfile.gettempdir()).resolve()
    folders = [Path(path).resolve().parent, Path(path).resolve().parent.parent]
    return [f for f in folders if not (f == temp or f in temp.parents)]


def grade_batch(
    submissions: list[tuple[str, Path]],
    source: Path,
    out_dir: Path,
    jobs: int = 1,
    limits: Limits | None = None,
    progress: bool = True,
    extra_hide: Iterable[Path] = (),
    unsafe_same_user: bool = False,
    canary: bool = True,
    scheduler: str | None = None,
    lang: str = "en",
) -> list[GradeResult]:
    """Grade many submissions; write ``grades.csv`` and ``feedback/<student>.md`` into ``out_dir``.

    First the canary (``canary=True``): the source solution is graded like a submission, in the same
    environment and limits, and anything short of full marks raises :class:`CanaryFailed` before
    anything is written. Then every submission, each in its own failure boundary: one submission's
    result, however malformed, never stops the batch. ``scheduler`` (``tcp://HOST:PORT``) grades on
    a Dask cluster instead of ``jobs`` local threads, with the same CSV and feedback. ``lang``: the
    language of the feedback files' own words (``en`` or ``ko``).
    Raises :class:`GraderFailure` when the grader itself cannot work (nothing trustworthy to write), and
    :class:`~course_lib.grading.trust.IsolationUnavailable` (nothing written) where submissions cannot be
    confined, unless ``unsafe_same_user`` (``--unsafe-same-user``).
    """
    from tqdm import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    feedback_text(lang, "hint")  # an unknown language fails before anything runs
    trust.isolation_mode(unsafe_same_user)
    tests = load_tests(source)  # once, and a broken source fails before any student runs
    limits = limits or Limits()
    if scheduler is not None:
        from course_lib.grading.cluster import DaskRunner

        runner: LocalRunner | DaskRunner = DaskRunner(scheduler, source, tests, limits)  # workers hide their own copies
    else:
        folders = [folder for _, path in submissions for folder in _submission_folders(path)]
        hide = _paths_to_hide([source.parent, out_dir, *folders, *extra_hide])
        runner = LocalRunner(source, tests, limits, hide, jobs, unsafe_same_user)
    results: list[tuple[GradeResult, list[Any]]] = []
    with runner:
        if canary:
            [(_, _, outcome)] = list(runner.grade([("canary", source)]))
            check_canary(outcome, source)
        feedback_dir = _prepare_output(out_dir)
        outcomes = runner.grade(submissions)
        for outcome in tqdm(outcomes, total=len(submissions), desc="grading", unit="nb", disable=not progress):
            result, feedback, row = finish(outcome, source, tests, lang)
            _write(feedback_dir / f"{_safe_name(result.student)}.md", feedback)
            results.append((result, row))
    results.sort(key=lambda pair: (pair[0].student, pair[0].submission))
    _write_rows([row for _, row in results], tests, out_dir / "grades.csv")
    return [result for result, _ in results]


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GraderFailure(f"cannot write {path}: {exc.strerror or exc}") from None


def _paths_to_hide(paths: Iterable[Path]) -> list[Path]:
    """Folders to cover in the student's view: ``paths`` and every repository (the policy: :func:`trust.paths_to_hide`)."""
    return [Path(p) for p in trust.paths_to_hide(paths)]


CSV_COLUMNS = ["student", "submission", "assignment", "score", "max_score", "status", "reason", "seconds"]


def _csv_text(value: Any, limit: int) -> str:
    """Bounded text that a spreadsheet will not run as a formula (``=``, ``+``, ``-``, ``@`` lead)."""
    text = _bounded(value, limit)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def csv_row(result: GradeResult, tests: list[TestCell]) -> list[Any]:
    """One student's row: total, status, reason (bounded), and points per test cell of the source."""
    by_id = {cell.grade_id: _number(cell.earned) for cell in result.cells if isinstance(cell, CellGrade)}
    return ([_csv_text(result.student, 200), _csv_text(result.submission, 1000), _csv_text(result.assignment, 200),
             _number(result.score), _number(result.max_score), _csv_text(result.status, 40),
             _csv_text(result.reason, MAX_REASON_CHARS), f"{_number(result.seconds):.1f}"]
            + [by_id.get(t.grade_id, 0.0) for t in tests])


def _write_rows(rows: list[list[Any]], tests: list[TestCell], path: Path) -> None:
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS + [t.grade_id for t in tests])
            writer.writerows(rows)
    except OSError as exc:
        raise GraderFailure(f"cannot write {path}: {exc.strerror or exc}") from None


def write_csv(results: list[GradeResult], tests: list[TestCell], path: Path) -> None:
    """One row per student: total, status, reason and points per test cell; a row that cannot be built says so."""
    rows = []
    for result in results:
        try:
            rows.append(csv_row(result, tests))
        except Exception as exc:  # noqa: BLE001 - one bad result must not cost the others their rows
            student, submission, assignment = (_bounded(getattr(result, name, "?"), 1000)
                                               for name in ("student", "submission", "assignment"))
            failed = grader_error(student, submission, assignment, tests, exc)
            rows.append(csv_row(failed, tests))
    _write_rows(rows, tests, path)


def default_source_for(submission: Path, source_dir: Path) -> Path:
    """The source notebook a submission belongs to, matched by file name."""
    candidate = source_dir / submission.name
    if candidate.is_file():
        return candidate
    available = ", ".join(sorted(p.name for p in source_dir.glob("*.ipynb"))) or "none"
    raise FileNotFoundError(
        f"no source notebook named {submission.name} in {source_dir} (available: {available}); pass --source"
    )

