"""Translations keyed to the English source: the staleness check fails, with a message naming the cell."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from course_lib import i18n

ROOT = Path(__file__).resolve().parent.parent


def test_every_translation_in_the_repository_matches_its_english_cell():
    """Fails when an English markdown cell changed and its Korean translation was not updated."""
    statuses = i18n.status_all(ROOT, "ko")  # also raises on a broken file or an unknown cell
    assert not any(s.stale for s in statuses), i18n.stale_report(statuses, "ko")


def _checkout(tmp_path: Path, notebook: str = "notebooks/02_architecture_search.ipynb") -> tuple[Path, Path]:
    """A minimal checkout holding one notebook and a full translation of it."""
    root = tmp_path / "repo"
    source = root / notebook
    source.parent.mkdir(parents=True)
    shutil.copyfile(ROOT / notebook, source)
    path, _ = i18n.stub(source, root, "ko")
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, entry in data["cells"].items():
        entry["ko"] = f"번역 {key}"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return root, source


def _edit_first_markdown(source: Path, extra: str) -> str:
    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "markdown")
    cell.source = extra + i18n.source_text(cell)
    nbformat.write(nb, source)
    return str(cell.id)


def test_changing_an_english_cell_makes_its_translation_stale_and_names_it(tmp_path):
    root, source = _checkout(tmp_path)
    status, _ = i18n.check(source, root, "ko")
    assert status.stale == [] and status.missing == [] and len(status.translated) > 0
    key = _edit_first_markdown(source, "Changed words first. ")
    status, _ = i18n.check(source, root, "ko")
    assert [k for k, _ in status.stale] == [key]
    message = i18n.stale_report([status])
    assert "notebooks/02_architecture_search.ipynb" in message and key in message and "Changed words first." in message
    # accept records the new hash once the translator has updated the text
    i18n.accept(source, root, [key], "ko")
    assert i18n.check(source, root, "ko")[0].stale == []


def test_stale_and_missing_cells_show_english_with_a_marker(tmp_path):
    root, source = _checkout(tmp_path)
    key = _edit_first_markdown(source, "New. ")
    path = i18n.translation_path(source, root)
    data = json.loads(path.read_text(encoding="utf-8"))
    missing_key = list(data["cells"])[1]
    data["cells"][missing_key]["ko"] = ""
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    english = nbformat.read(source, as_version=4)
    korean = i18n.localize(source, root, "ko")
    by_key = {c.id: c for c in korean.cells}
    assert "i18n-stale" in by_key[key].source and "New." in by_key[key].source
    assert "i18n-missing" in by_key[missing_key].source
    translated = [k for k in data["cells"] if k not in (key, missing_key)]
    assert by_key[translated[0]].source == f"번역 {translated[0]}"
    # code cells and their stored outputs are the English notebook's, untouched
    for en, ko in zip(english.cells, korean.cells):
        if en.cell_type == "code":
            assert en.source == ko.source and en.outputs == ko.outputs


def test_a_file_that_is_not_json_is_an_error_naming_the_file(tmp_path):
    root, source = _checkout(tmp_path)
    path = i18n.translation_path(source, root)
    path.write_text('{"source": "notebooks/02_architecture_search.ipynb", "cells": {', encoding="utf-8")
    with pytest.raises(i18n.TranslationError, match=r"02_architecture_search\.json: not valid JSON"):
        i18n.check(source, root, "ko")


def test_a_file_naming_a_cell_that_does_not_exist_is_an_error(tmp_path):
    root, source = _checkout(tmp_path)
    path = i18n.translation_path(source, root)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["cells"]["no-such-cell"] = {"source_sha256": "0" * 64, "ko": "x"}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(i18n.TranslationError, match=r"02_architecture_search\.json: names cells .*no-such-cell"):
        i18n.check(source, root, "ko")


def test_exercise_cells_are_keyed_by_their_nbgrader_grade_id(tmp_path):
    root, source = _checkout(tmp_path, "exercises/00_measuring_models.ipynb")
    keys = set(json.loads(i18n.translation_path(source, root).read_text(encoding="utf-8"))["cells"])
    assert {"intro", "q1_text"} <= keys
    assert i18n.translation_path(source, root) == root / "i18n" / "ko" / "exercises" / "00_measuring_models.json"


def test_hash_is_sha256_of_the_joined_utf8_source():
    cell = nbformat.v4.new_markdown_cell(source="가지치기\nline")
    cell["source"] = ["가지치기\n", "line"]  # nbformat on disk may split lines
    import hashlib

    assert i18n.source_sha256(i18n.source_text(cell)) == hashlib.sha256("가지치기\nline".encode()).hexdigest()


def test_grader_feedback_in_korean_uses_the_one_string_table():
    from course_lib.grading import grader
    from course_lib.grading.messages import FEEDBACK, feedback_text

    assert set(FEEDBACK["ko"]) == set(FEEDBACK["en"]), "every feedback string needs its Korean version"
    result = grader.grader_error("kim", "kim.ipynb", "00_measuring_models", [], RuntimeError("boom"))
    result.cell_errors = [{"index": 3, "error": "NameError"}]
    korean = grader.feedback_markdown(result, "ko")
    assert korean.startswith("# 피드백: kim · 00_measuring_models") and "**점수: 0 / 0**" in korean
    assert "## 오류가 난 여러분의 셀" in korean and "코드 셀 3: NameError" in korean
    assert grader.feedback_markdown(result).startswith("# Feedback: kim")
    with pytest.raises(ValueError, match="'fr' is not available"):
        feedback_text("fr", "hint")
