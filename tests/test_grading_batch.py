"""Grading a cohort: each submission inside its own failure boundary, the canary, exit codes, and a Dask cluster
giving the same CSV and feedback as local jobs."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
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
