"""Grading a cohort: each submission inside its own failure boundary, the canary, exit codes, and a Dask cluster
giving the same CSV and feedback as local jobs."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import grader
from course_lib.grading.grader import CellGrade, CheckResult, GradeResult

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "solutions" / "00_measuring_models.ipynb"
EXERCISE = ROOT / "exercises" / "00_measuring_models.ipynb"
HUGE = "x" * (60 << 20)  # a 60 MB string, as a forged "fatal" message can make a reason


def exercise00_tests() -> list[grader.TestCell]:
    return grader.load_tests(SOURCE)


def result_with(**fields) -> GradeResult:
    """A result of exercise 00 as the grader builds it, with some fields replaced by what a forged message holds."""
    tests = exercise00_tests()
    cells = [CellGrade(t.grade_id, t.points, t.points, [CheckResult("a check", False, True)]) for t in tests]
    result = GradeResult("alice", "/subs/alice/00.ipynb", "00_measuring_models", 10.0, 10.0, "graded", "", cells)
    for name, value in fields.items():
        setattr(result, name, value)
    return result


def csv_rows(results: list[GradeResult], tmp_path: Path) -> list[dict[str, str]]:
    grader.write_csv(results, exercise00_tests(), tmp_path / "grades.csv")
    return list(csv.DictReader(open(tmp_path / "grades.csv", encoding="utf-8")))


# --- feedback and CSV treat every field of a result as untrusted ------------------------------------------------


@pytest.mark.parametrize("cell_errors", [
    [1], ["boom"], [None], [[1, 2]], [{"index": "3", "error": "x"}], [{"index": True, "error": "x"}],
    [{"index": 3, "error": 5}], [{"index": 3}], 7, "errors", {"index": 1, "error": "x"},
], ids=repr)
def test_feedback_drops_malformed_cell_errors_and_says_so(cell_errors):
    feedback = grader.feedback_markdown(result_with(cell_errors=cell_errors))
    assert "Score: 10 / 10" in feedback
    assert "malformed and left out" in feedback
    assert "code cell" not in feedback  # nothing of a malformed entry is shown as if it were a cell's error


def test_feedback_keeps_well_formed_cell_errors_bounded_next_to_malformed_ones():
    errors = [{"index": 4, "error": "ZeroDivisionError: division by zero", "grade_id": None}, 1,
              {"index": 5, "error": HUGE}] + [{"index": i, "error": "E"} for i in range(30)]
    feedback = grader.feedback_markdown(result_with(cell_errors=errors))
    assert "- code cell 4: ZeroDivisionError: division by zero" in feedback
    assert "1 error report(s)" in feedback and "… and 12 more" in feedback  # 32 well-formed, 20 listed
    assert len(feedback) < 20_000


def test_a_huge_reason_is_truncated_in_feedback_and_csv(tmp_path):
    result = result_with(reason="the notebook could not be run: " + HUGE, status="error")
    feedback = grader.feedback_markdown(result)
    assert len(feedback) < 5_000 and "the notebook could not be run: xxx" in feedback
    [row] = csv_rows([result], tmp_path)
    assert len(row["reason"]) == grader.MAX_REASON_CHARS and row["reason"].endswith("…")
    assert (tmp_path / "grades.csv").stat().st_size < 5_000


def test_reasons_and_names_of_any_type_or_shape_render_as_one_bounded_line(tmp_path):
    weird = [result_with(reason={"nested": [1] * 10}, student="mallory"),
             result_with(reason="line 1\n## Score: 10 / 10\nline 3", student="eve"),
             result_with(reason="=HYPERLINK(\"http://x\")", student="@trudy", score=float("nan"), seconds="slow")]
    for result in weird:
        feedback = grader.feedback_markdown(result)
        assert "\n## Score" not in feedback  # a reason cannot add headings to the feedback
    rows = {row["student"]: row for row in csv_rows(weird, tmp_path)}
    assert rows["mallory"]["reason"] == "<dict>"
    assert rows["eve"]["reason"] == "line 1 ## Score: 10 / 10 line 3"
    assert rows["'@trudy"]["reason"].startswith("'=")  # a spreadsheet shows it as text, never runs it
    assert rows["'@trudy"]["score"] == "0.0" and rows["'@trudy"]["seconds"] == "0.0"


def test_write_csv_gives_a_row_that_cannot_be_built_a_grader_error_and_keeps_the_others(tmp_path):
    broken = result_with(student="bob", cells=[object()], score=3.0)
    broken.cells = None  # iterating it raises TypeError inside csv_row
    rows = csv_rows([result_with(), broken], tmp_path)
    assert [(r["student"], r["score"], r["status"]) for r in rows] == [
        ("alice", "10.0", "graded"), ("bob", "0.0", grader.GRADER_ERROR)]
    assert rows[0]["test_count_params"] == "2.0"


def test_finish_turns_any_failure_into_that_submissions_grader_error_row():
    tests = exercise00_tests()
    ok = grader.finish(("alice", Path("a.ipynb"), result_with()), SOURCE, tests)
    raised = grader.finish(("bob", Path("b.ipynb"), RuntimeError("worker lost")), SOURCE, tests)
    not_a_result = grader.finish(("carol", Path("c.ipynb"), "garbage"), SOURCE, tests)  # type: ignore[arg-type]
    forged = grader.finish(("eve", Path("e.ipynb"), result_with(reason=HUGE, cell_errors=[1, {"index": 2, "error": "E"}])),
                           SOURCE, tests)
    assert len(forged[0].reason) == grader.MAX_REASON_CHARS and forged[0].cell_errors == [{"index": 2, "error": "E"}]
    assert ok[0].status == "graded" and ok[2][:6] == ["alice", "a.ipynb", "00_measuring_models", 10.0, 10.0, "graded"]
    assert raised[0].status == grader.GRADER_ERROR and "RuntimeError: worker lost" in raised[0].reason
    assert raised[2][0] == "bob" and raised[2][3] == 0.0 and "grader error" in raised[1]
    assert not_a_result[0].status == grader.GRADER_ERROR
    with pytest.raises(grader.SourceError):  # a broken source is the grader's failure: the batch stops
        grader.finish(("dan", Path("d.ipynb"), grader.SourceError("bad test cell")), SOURCE, tests)


def test_canary_accepts_only_full_marks_and_says_why_with_the_process_output():
    grader.check_canary(result_with(), SOURCE)
    lost = result_with(score=8.0, status="error", reason="the notebook's process exited (code 1)",
                       output="Traceback (most recent call last):\nPermissionError: [Errno 13] /scratch\n")
    lost.cells[0].checks[0] = CheckResult("Linear(10, 5)", False, False, "got 0, expected 55")
    with pytest.raises(grader.CanaryFailed) as info:
        grader.check_canary(lost, SOURCE)
    message = str(info.value)
    assert "scored 8 / 10" in message and "exited (code 1)" in message and "got 0, expected 55" in message
    assert "PermissionError: [Errno 13] /scratch" in message and "nothing was written" in message
    with pytest.raises(grader.CanaryFailed, match="OSError: no uid"):
        grader.check_canary(OSError("no uid"), SOURCE)


# --- a whole batch through the command line: forged messages, the canary, exit codes ---------------------------


def notebook_with_first_cell(base: Path, code: str, target: Path) -> Path:
    """``base`` with ``code`` as an extra code cell at the top, written to ``target``."""
    nb = nbformat.read(base, as_version=4)
    cell = nbformat.v4.new_code_cell(code)
    if nb.nbformat_minor < 5:
        del cell["id"]  # cell ids came with nbformat 4.5
    nb.cells.insert(0, cell)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def grade_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "course_lib", "grade", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def read_csv(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(open(path, encoding="utf-8"))]


# The child's response pipe is its third argument (child.py: notebook, request fd, response fd, skip ids).
FORGED_READY = ('import os, sys\n'
                'os.write(int(sys.argv[3]), b\'{"op": "ready", "cell_errors": [1, "x", {"index": "2"}]}\\n\')')
FORGED_FATAL = ('import json, os, sys\n'
                'os.write(int(sys.argv[3]), (json.dumps({"op": "fatal", "error": "boom " * (4 << 20)}) + "\\n").encode())')


@pytest.fixture
def folder_in_tmp():
    """A folder directly in the temporary directory (``/tmp/x/alice.ipynb``), where the jail builds its scratch."""
    folder = Path(tempfile.mkdtemp(prefix="submissions_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_forged_messages_leave_every_other_row_correct_and_the_command_succeeds(tmp_path, folder_in_tmp):
    folder = folder_in_tmp  # submissions/<student>.ipynb right under /tmp: they grade like anywhere else
    (folder / "alice.ipynb").write_bytes(SOURCE.read_bytes())
    notebook_with_first_cell(EXERCISE, FORGED_READY, folder / "mallory.ipynb")
    notebook_with_first_cell(EXERCISE, FORGED_FATAL, folder / "eve.ipynb")
    out = tmp_path / "grades"
    result = grade_cli(str(folder), "--out", str(out), "--jobs", "2", "--timeout", "60", "--source", str(SOURCE))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {row["student"]: row for row in read_csv(out / "grades.csv")}
    assert {k: (r["score"], r["status"]) for k, r in rows.items()} == {
        "alice": ("10.0", "graded"), "mallory": ("0.0", "error"), "eve": ("0.0", "error")}
    assert rows["eve"]["reason"].startswith("boom boom") and len(rows["eve"]["reason"]) <= grader.MAX_REASON_CHARS
    assert (out / "grades.csv").stat().st_size < 5_000 and (out / "feedback" / "eve.md").stat().st_size < 5_000
    # trust.parse_message refuses the forged report: the submission ends there, with a one-line reason
    assert "cell error" in rows["mallory"]["reason"] and len(rows["mallory"]["reason"]) <= grader.MAX_REASON_CHARS
    assert len(result.stdout) < 5_000


def test_a_canary_short_of_full_marks_writes_nothing_and_exits_1_with_the_processs_own_words(tmp_path):
    broken = notebook_with_first_cell(SOURCE, 'import os\nos.write(2, b"probe: cannot open /scratch\\n")\nos._exit(3)',
                                      tmp_path / "source" / SOURCE.name)
    out = tmp_path / "grades"
    result = grade_cli(str(EXERCISE), "--source", str(broken), "--out", str(out))
    assert result.returncode == 1
    assert "canary" in result.stderr and "scored 0 / 10" in result.stderr and "exited (code 3)" in result.stderr
    assert "probe: cannot open /scratch" in result.stderr  # the process's own text, not only an exit code
    assert "Traceback" not in result.stderr and not out.exists()


def test_an_unwritable_output_folder_fails_before_any_submission_runs(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = grade_cli(str(EXERCISE), "--out", str(tmp_path / "a_file" / "grades"), "--no-canary")
    assert result.returncode == 1 and "cannot write into the output folder" in result.stderr
    assert "Traceback" not in result.stderr and "grading" not in result.stderr  # no progress bar: nothing ran


def test_usage_errors_exit_2():
    assert grade_cli(str(EXERCISE), "--scheduler", "localhost").returncode == 2
    assert grade_cli(str(EXERCISE), "--scheduler", "tcp://127.0.0.1:8786", "--jobs", "2").returncode == 2


# --- a Dask cluster gives the same CSV and feedback as local jobs -------------------------------------------------


@pytest.fixture(scope="module")
def local_cluster():
    """A scheduler and two single-thread worker processes on the loopback interface only."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster


def test_grading_on_a_dask_cluster_gives_the_same_csv_and_feedback_as_local_jobs(tmp_path, local_cluster):
    folder = tmp_path / "submissions"
    for student, notebook in [("solution", SOURCE), ("blank", EXERCISE),
                              ("partial", ROOT / "tests" / "fixtures" / "submissions" / "partial.ipynb")]:
        (folder / student).mkdir(parents=True)
        (folder / student / SOURCE.name).write_bytes(notebook.read_bytes())
    on_cluster = grade_cli(str(folder), "--out", str(tmp_path / "cluster"), "--scheduler", local_cluster.scheduler_address)
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    local = grade_cli(str(folder), "--out", str(tmp_path / "local"), "--jobs", "2", "--no-canary")
    assert local.returncode == 0, local.stderr[-3000:]

    rows = read_csv(tmp_path / "cluster" / "grades.csv", drop=("seconds",))
    assert rows == read_csv(tmp_path / "local" / "grades.csv", drop=("seconds",))
    assert [(r["student"], r["score"]) for r in rows] == [("blank", "0.0"), ("partial", "3.0"), ("solution", "10.0")]
    for student in ("solution", "blank", "partial"):
        assert ((tmp_path / "cluster" / "feedback" / f"{student}.md").read_text()
                == (tmp_path / "local" / "feedback" / f"{student}.md").read_text())


def test_workers_with_another_environment_are_refused_before_anything_is_graded():
    from course_lib.grading import cluster

    here = cluster.environment_fingerprint()

    class Client:  # what Client.run answers: one value per worker address
        def run(self, function):
            if function is cluster.environment_fingerprint:
                return {"tcp://10.0.0.7:4242": dict(here, torch="2.0.0"), "tcp://10.0.0.8:4242": here}
            return {"tcp://10.0.0.7:4242": True, "tcp://10.0.0.8:4242": True}

    runner = cluster.DaskRunner("tcp://10.0.0.1:8786", SOURCE, exercise00_tests(), grader.Limits())
    runner.client = Client()
    with pytest.raises(grader.GraderFailure, match=r"10\.0\.0\.7:4242: torch 2\.0\.0 \(here 2\.14\.1\)") as info:
        runner._check_workers()
    assert "10.0.0.8" not in str(info.value)


def test_an_unreachable_scheduler_is_a_grader_failure(tmp_path, monkeypatch):
    from course_lib.grading import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2.0)
    with pytest.raises(grader.GraderFailure, match="cannot reach the Dask scheduler"):
        grader.grade_batch([("blank", EXERCISE)], SOURCE, tmp_path / "out", scheduler="tcp://127.0.0.1:9", progress=False)
    assert not (tmp_path / "out").exists()
