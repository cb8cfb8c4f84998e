"""Exercises and the grader: release stays in sync, solutions score full marks, blanks score zero,
and every hostile submission in tests/fixtures/submissions gets the score it deserves without
hanging the grader or leaving anything behind."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import check, compare, grader, release
from course_lib.grading.sandbox import BASE_UID, Limits, _processes_of, running_as_root

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "solutions" / "00_measuring_models.ipynb"
EXERCISE = ROOT / "exercises" / "00_measuring_models.ipynb"
CORPUS = ROOT / "tests" / "fixtures" / "submissions"

needs_root = pytest.mark.skipif(not running_as_root(), reason="full isolation (own uid, private mounts) needs root")


# --- authoring and release ---------------------------------------------------------------------

def test_exercises_are_in_sync_with_solutions():
    problems = release.release(ROOT / "solutions", ROOT / "exercises", check_only=True)
    assert not problems, "exercises/ is out of date; run `make exercises`:\n" + "\n".join(problems)


def test_release_strips_solutions_and_hidden_tests_and_keeps_visible_tests():
    source_text = SOURCE.read_text()
    text = release.release_notebook(SOURCE)
    assert "### BEGIN SOLUTION" in source_text and "### BEGIN HIDDEN TESTS" in source_text
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "expected=51946" not in text  # a hidden expected value
    nb = nbformat.reads(text, as_version=4)
    stubs = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert stubs and all("raise NotImplementedError()" in c.source for c in stubs)
    visible = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert all("check(" in c.source for c in visible)
    assert all("checksum" in c.metadata["nbgrader"] for c in visible)  # nbgrader can still use it
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_source_rules_give_clear_errors():
    with pytest.raises(grader.SourceError, match="top level"):
        grader.parse_test_cell("t", 1, "for i in range(3):\n    check('x', i, expected=i)")
    with pytest.raises(grader.SourceError, match="without"):
        grader.parse_test_cell("t", 1, "check('x', 1, expected=1)\n### BEGIN HIDDEN TESTS\ncheck('y', 2, expected=2)")
    with pytest.raises(grader.SourceError, match="no check"):
        grader.parse_test_cell("t", 1, "x = 1")
    cell = grader.parse_test_cell("t", 2, "a = 1\ncheck('x', a, expected=1)\n### BEGIN HIDDEN TESTS\ncheck('y', a, expected=1)\n### END HIDDEN TESTS")
    assert cell.n_checks == 2 and [hidden for _, is_check, hidden in cell.statements if is_check] == [False, True]


# --- the learner's self-check --------------------------------------------------------------------

def test_check_passes_with_a_tick_and_fails_with_an_explanation(capsys):
    check("two and two", 2 + 2, expected=4)
    assert "✓ two and two" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"✗ sum: expected 5, got 4\.\n  Hint: add again"):
        check("sum", 4, expected=5, hint="add again")


def test_compare_handles_numbers_arrays_and_containers():
    import numpy as np

    assert compare(0.1 + 0.2, 0.3)[0]
    assert not compare("55", 55)[0]
    assert not compare(True, 1)[0]
    assert compare(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]))[0]
    assert "shape" in compare(np.zeros(3), np.zeros(4))[1]
    assert compare({"a": [1, 2.0]}, {"a": (1, 2)})[0]
    assert "key 'b'" in compare({"a": 1, "b": 2}, {"a": 1, "b": 3})[1]
    assert not compare(None, 0)[0]


# --- grading ------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.stem)
def test_solution_scores_full_marks_and_blank_exercise_scores_zero(source, tmp_path):
    exercise = ROOT / "exercises" / source.name
    # A generous timeout: CI grades these while another worker executes notebooks on the same 2 cores
    # (exercise 12 takes about a minute alone: training, export, the grader's own measurements).
    results = grader.grade_batch([("solution", source), ("blank", exercise)], source, tmp_path, jobs=2, progress=False,
                                 limits=Limits(timeout_s=300), canary=False)  # the solution is graded anyway
    by_student = {r.student: r for r in results}
    assert by_student["solution"].score == by_student["solution"].max_score > 0, by_student["solution"]
    assert by_student["blank"].score == 0 and by_student["blank"].status == "graded"
    assert all("NotImplementedError" in c.message for cell in by_student["blank"].cells for c in cell.checks if not c.hidden)
    rows = list(csv.DictReader(open(tmp_path / "grades.csv")))
    assert [(r["student"], float(r["score"])) for r in rows] == [("blank", 0.0), ("solution", by_student["solution"].max_score)]
    feedback = (tmp_path / "feedback" / "blank.md").read_text()
    assert "hidden test" in feedback and f"Score: 0 / {by_student['blank'].max_score:g}" in feedback
    hidden_source = source.read_text().split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
    assert "expected=" in hidden_source
    for line in hidden_source.split("\\n"):  # hidden tests: name and result only, never their code
        if "check(" in line:
            assert line.strip().strip('"') not in feedback


def test_solutions_are_stored_executed_without_errors():
    for source in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = nbformat.read(source, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{source.name}: re-run it with `python -m course_lib run --inplace`"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{source.name} stored an error"


@needs_root
def test_hostile_corpus_is_graded_correctly_without_hanging_or_leaving_anything(tmp_path):
    expected = json.loads((CORPUS / "expected.json").read_text())
    guarded = [ROOT / "course_lib" / "grading" / "checks.py", ROOT / "course_lib" / "grading" / "grader.py"]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in guarded}
    timeout = 30.0  # generous: on 2 busy cores the fork bomb alone needs ~11 s to hit its limit
    start = time.monotonic()
    results = grader.grade_batch(grader.find_submissions([CORPUS]), SOURCE, tmp_path / "out", jobs=2,
                                 limits=Limits(timeout_s=timeout, processes=48), progress=False, canary=False)
    elapsed = time.monotonic() - start

    by_student = {r.student: r for r in results}
    assert set(by_student) == set(expected)
    wrong = []
    for name, want in expected.items():
        got = by_student[name]
        if got.score != want["score"] or got.status != want["status"]:
            wrong.append(f"{name}: got {got.score} ({got.status}: {got.reason}), expected {want['score']} ({want['status']})")
        if "reason" in want and want["reason"] not in got.reason:
            wrong.append(f"{name}: reason {got.reason!r} does not mention {want['reason']!r}")
        if "cell_error" in want and not any(want["cell_error"] in e["error"] for e in got.cell_errors):
            wrong.append(f"{name}: no cell error mentioning {want['cell_error']} in {got.cell_errors}")
    assert not wrong, "\n".join(wrong)

    # every submission ended within its timeout plus a few seconds
    assert max(r.seconds for r in results) < timeout + 10
    assert elapsed < 21 * (timeout + 10) / 2
    # nothing survives outside the scratch directories
    for marker in ("/tmp/course_lib_hostile_marker", "/var/tmp/course_lib_hostile_marker",
                   "/dev/shm/course_lib_hostile_marker", "/run/lock/course_lib_hostile_marker",
                   str(ROOT / "course_lib_hostile_marker")):
        assert not os.path.exists(marker), f"{marker} was left behind"
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in guarded} == before
    assert not _processes_of(BASE_UID) and not _processes_of(BASE_UID + 1), "a submission's process outlived grading"
    # the gradebook is the grader's: one row per submission, with the grader's scores
    rows = {r["student"]: float(r["score"]) for r in csv.DictReader(open(tmp_path / "out" / "grades.csv"))}
    assert rows == {name: by_student[name].score for name in expected}


def test_grade_command_line(tmp_path):
    folder = tmp_path / "submissions"
    (folder / "alice").mkdir(parents=True)
    (folder / "bob").mkdir()
    (folder / "alice" / "00_measuring_models.ipynb").write_bytes(SOURCE.read_bytes())
    (folder / "bob" / "00_measuring_models.ipynb").write_bytes(EXERCISE.read_bytes())
    out = tmp_path / "grades"
    result = subprocess.run([sys.executable, "-m", "course_lib", "grade", str(folder), "--out", str(out), "--jobs", "2"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout and "10 / 10" in result.stdout and "0 / 10" in result.stdout
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert {r["student"]: r["score"] for r in rows} == {"alice": "10.0", "bob": "0.0"}
    assert (out / "feedback" / "alice.md").exists() and (out / "feedback" / "bob.md").exists()

    missing = subprocess.run([sys.executable, "-m", "course_lib", "grade", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert missing.returncode == 2 and "not found" in missing.stderr
    no_source = subprocess.run([sys.executable, "-m", "course_lib", "grade", str(SOURCE.parent / "none.ipynb")],
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert no_source.returncode == 2


def test_uid_leases_are_unique_across_grader_processes(tmp_path):
    """Two graders at once must not share a uid: each kills every process of its uid when a submission ends."""
    import subprocess
    import sys

    from course_lib.grading.sandbox import UidLease

    first, second = UidLease(tmp_path), UidLease(tmp_path)
    assert first.acquire() == BASE_UID and second.acquire() == BASE_UID + 1
    code = ("import sys; from course_lib.grading.sandbox import UidLease; "
            f"print(UidLease({str(tmp_path)!r}).acquire())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert int(other.stdout.strip()) == BASE_UID + 2  # another process skips the uids this one holds
    first.release()
    with UidLease(tmp_path) as uid:
        assert uid == BASE_UID  # released, so free again
    second.release()


def test_run_confined_runs_trusted_code_on_untrusted_files_without_the_graders_privileges(tmp_path):
    """What grading.facts and grading.artefact use to measure a learner's model file: the jail, limits, a timeout."""
    from course_lib.grading.sandbox import run_confined

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "answers.txt").write_text("42")
    code = ("import os, sys; print(os.getuid(), open('data.bin', 'rb').read().decode(), "
            f"os.path.exists({str(secret / 'answers.txt')!r}))")
    returncode, out, _ = run_confined(["-c", code], {"data.bin": b"hello"}, Limits(timeout_s=60), hide=[secret])
    uid, data, sees_secret = out.split()
    assert returncode == 0 and data == "hello"
    if running_as_root():
        assert int(uid) >= BASE_UID and sees_secret == "False"
    returncode, _, _ = run_confined(["-c", "while True: pass"], {}, Limits(timeout_s=3))
    assert returncode is None  # timed out, and killed
