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
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.grading import checks, protocol
from course_lib.grading.sandbox import Limits, StudentGone, StudentProcess, UidLease, running_as_root
from course_lib.repo import library_root

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
    return cells


# --- proxies to the student's objects --------------------------------------------------------


class StudentError(Exception):
    """The learner's code raised while a check was computing its value."""


class Session:
    """The grader's side of the conversation with one student process."""

    def __init__(self, process: StudentProcess) -> None:
        self.process = process

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

    def call_in_student(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", None)
        if not module or not qualname or "<" in qualname:
            raise SourceError("in_student() needs a function importable by module and name")
        return self.session.ask({"op": "call_function", "module": module, "qualname": qualname,
                                 "args": protocol.dump_args(args, kwargs)})


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
    status: str  # "graded" or "error"
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
    namespace.setdefault("check", checks.check)  # always the grader's, even if the cell forgot the import
    namespace.setdefault("in_student", checks.in_student)
    for name in _free_names(ast.parse(test.source)):
        namespace.setdefault(name, Remote(session, {"name": name}))
    checks.set_recorder(recorder)
    failure: str | None = None
    try:
        for stmt, is_check, hidden in test.statements:
            recorder.hidden = hidden
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
    passed = sum(r.passed for r in recorder.results)
    earned = round(test.points * passed / test.n_checks, 2) if test.n_checks else 0.0
    return CellGrade(test.grade_id, test.points, earned, recorder.results)


def grade_submission(
    submission: Path,
    source: Path,
    student: str | None = None,
    limits: Limits | None = None,
    hide: Iterable[Path] = (),
    uid: int | None = None,
    tests: list[TestCell] | None = None,
) -> GradeResult:
    """Grade one notebook against ``source``. Never raises for anything the submission does."""
    start = time.monotonic()
    limits = limits or Limits()
    tests = tests if tests is not None else load_tests(source)
    student = student or submission.stem
    max_score = sum(t.points for t in tests)

    def failed(reason: str, cells: list[CellGrade] | None = None, **extra: Any) -> GradeResult:
        cells = cells if cells is not None else _zero_cells(tests, reason)
        return GradeResult(student, str(submission), source.stem, round(sum(c.earned for c in cells), 2), max_score,
                           "error", reason, cells, seconds=time.monotonic() - start, **extra)

    problem = _unreadable_reason(submission)
    if problem:
        return failed(problem)

    lease = UidLease() if uid is None and running_as_root() else None
    if lease is not None:
        uid = lease.acquire()  # a uid no other grader on this machine is using right now
    process = StudentProcess(submission, [t.grade_id for t in tests], limits, list(hide), uid)
    try:
        process.start()
        result = _run_tests(process, tests, failed)
    finally:
        process.close()  # also joins the thread that collects the process's output
        if lease is not None:
            lease.release()
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


def feedback_markdown(result: GradeResult) -> str:
    """Per-student feedback. Hidden checks: name and result only, never code or expected values."""
    lines = [f"# Feedback: {result.student} · {result.assignment}", "",
             f"**Score: {result.score:g} / {result.max_score:g}**", ""]
    if result.reason:
        lines += [f"> {result.reason}", ""]
    for cell in result.cells:
        lines.append(f"## {cell.grade_id}: {cell.earned:g} / {cell.points:g}")
        for number, check in enumerate(cell.checks, start=1):
            mark = "✓" if check.passed else "✗"
            if check.hidden:
                lines.append(f"- {mark} hidden test {number}")
            else:
                detail = "" if check.passed else f" — {check.message}" + (f" (hint: {check.hint})" if check.hint else "")
                lines.append(f"- {mark} {check.name}{detail}")
        lines.append("")
    if result.cell_errors:
        lines.append("## Cells of yours that raised an error")
        for error in result.cell_errors[:20]:
            lines.append(f"- code cell {error.get('index')}: {str(error.get('error'))[:300]}")
        lines.append("")
    return "\n".join(lines)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "student"


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


def grade_batch(
    submissions: list[tuple[str, Path]],
    source: Path,
    out_dir: Path,
    jobs: int = 1,
    limits: Limits | None = None,
    progress: bool = True,
    extra_hide: Iterable[Path] = (),
) -> list[GradeResult]:
    """Grade many submissions in parallel; write ``grades.csv`` and ``feedback/<student>.md`` into ``out_dir``."""
    from tqdm import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    tests = load_tests(source)  # once, and a broken source fails before any student runs
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "feedback").mkdir(exist_ok=True)
    # A submission's folder and the folder above it (submissions/<student>/NN.ipynb): no student reads another's.
    folders = [q for _, p in submissions for q in (p.parent, p.parent.parent)]
    hide = _paths_to_hide([source.parent, out_dir, *folders, *extra_hide])

    def one(student: str, path: Path) -> GradeResult:
        try:
            # uid=None: as root, grade_submission leases a uid that no grader on this machine holds
            return grade_submission(path, source, student, limits, hide, None, tests)
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch goes on, the reason is recorded
            return GradeResult(student, str(path), source.stem, 0.0, sum(t.points for t in tests), "error",
                               f"grader error: {type(exc).__name__}: {exc}"[:300], _zero_cells(tests, "not graded"))

    results: list[GradeResult] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, student, path) for student, path in submissions]
        for future in tqdm(as_completed(futures), total=len(futures), desc="grading", unit="nb", disable=not progress):
            result = future.result()
            results.append(result)
            feedback = out_dir / "feedback" / f"{_safe_name(result.student)}.md"
            feedback.write_text(feedback_markdown(result), encoding="utf-8")
    results.sort(key=lambda r: (r.student, r.submission))
    write_csv(results, tests, out_dir / "grades.csv")
    return results


def _paths_to_hide(paths: Iterable[Path]) -> list[Path]:
    """Folders to cover in the student's view, minus any that hold the Python environment or course_lib."""
    import sys

    import course_lib

    needed = [Path(sys.prefix).resolve(), Path(course_lib.__file__).resolve().parent]
    hide = []
    for path in {Path(p).resolve() for p in paths}:
        if any(n == path or path in n.parents for n in needed):
            continue  # hiding it would hide the interpreter or the library the student's process needs
        hide.append(path)
    repo_tests = library_root() / "tests"
    if repo_tests.is_dir():
        hide.append(repo_tests)
    return sorted(set(hide))


def write_csv(results: list[GradeResult], tests: list[TestCell], path: Path) -> None:
    """One row per student: total, status, reason, and points per test cell."""
    columns = ["student", "submission", "assignment", "score", "max_score", "status", "reason", "seconds"]
    columns += [t.grade_id for t in tests]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for r in results:
            by_id = {c.grade_id: c.earned for c in r.cells}
            writer.writerow([r.student, r.submission, r.assignment, r.score, r.max_score, r.status, r.reason,
                             f"{r.seconds:.1f}"] + [by_id.get(t.grade_id, 0.0) for t in tests])


def default_source_for(submission: Path, source_dir: Path) -> Path:
    """The source notebook a submission belongs to, matched by file name."""
    candidate = source_dir / submission.name
    if candidate.is_file():
        return candidate
    available = ", ".join(sorted(p.name for p in source_dir.glob("*.ipynb"))) or "none"
    raise FileNotFoundError(
        f"no source notebook named {submission.name} in {source_dir} (available: {available}); pass --source"
    )

