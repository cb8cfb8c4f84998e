"""Translations of the course's notebooks, keyed to the English source so they cannot rot unseen.

Why this shape: a translated *copy* of a notebook goes stale the day the English one changes, and nobody
notices (d2l-ko stalled that way). Here only the English notebook exists; a translation file holds, per
markdown cell, the translated text and the SHA-256 of the English text it was made from. The Korean
notebook is assembled at build time (code and outputs shared with the English one), and a check fails
as soon as an English cell no longer matches the hash its translation recorded.

File format, one per notebook (``i18n/<lang>/<folder>/<stem>.json``)::

    {"source": "notebooks/00_measuring_models.ipynb",
     "cells": {"<cell key>": {"source_sha256": "<sha256 of the English cell>", "ko": "<translation>"}}}

The cell key is the nbformat cell id; the exercises are released without ids (``release`` strips them to
keep the files stable), so there the key is the cell's nbgrader ``grade_id``. An entry may also carry
``"en"`` (the English text, written by :func:`stub` for the translator to read); it is never used to build.
An entry whose translation is an empty string counts as missing.
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

#: The folders whose notebooks are translated (lectures and the learners' exercises).
FOLDERS = ("notebooks", "exercises")
#: Languages the course is translated into (English is the source).
LANGUAGES = ("ko",)
#: Shown above an English cell in a translated page when the cell has no translation yet.
MISSING_MARKER = {"ko": "아직 번역되지 않음 (not yet translated)"}
#: Shown above an English cell whose translation was made from older English text.
STALE_MARKER = {"ko": "번역이 영어 원문보다 오래됨 (translation out of date)"}


class TranslationError(ValueError):
    """A translation file that cannot be used: not JSON, the wrong shape, or naming cells that do not exist."""


def source_text(cell: Any) -> str:
    """A cell's source as one string (nbformat allows a list of lines on disk)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def source_sha256(text: str) -> str:
    """The hash a translation records for the English text it translates (UTF-8, hex)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cell_key(cell: Any) -> str | None:
    """The key a cell's translation is filed under: its nbformat id, else its nbgrader ``grade_id``."""
    if cell.get("id"):
        return str(cell["id"])
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return str(grade_id) if grade_id else None


def translatable_cells(nb: Any) -> dict[str, Any]:
    """The notebook's markdown cells by key, in order (code and outputs are shared, never translated)."""
    cells: dict[str, Any] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        key = cell_key(cell)
        if key is None:
            raise TranslationError(f"markdown cell {index} has neither an nbformat id nor an nbgrader grade_id to key a translation on")
        cells[key] = cell
    return cells


def translation_path(notebook: Path, root: Path, lang: str = "ko") -> Path:
    """``i18n/<lang>/<folder>/<stem>.json`` for ``<root>/<folder>/<stem>.ipynb``."""
    relative = notebook.resolve().relative_to(root.resolve())
    return root / "i18n" / lang / relative.parent / f"{relative.stem}.json"


def notebooks(root: Path) -> list[Path]:
    """Every translatable notebook of the checkout, lectures first, in course order."""
    return [path for folder in FOLDERS for path in sorted((root / folder).glob("[0-9][0-9]_*.ipynb"))]


@dataclass
class Translation:
    """One translation file, read and checked for shape (not yet against the notebook)."""

    path: Path
    source: str
    lang: str
    entries: dict[str, dict[str, str]] = field(default_factory=dict)

    def text(self, key: str) -> str:
        """The translated text of a cell ('' when it has none)."""
        return self.entries.get(key, {}).get(self.lang, "")


def load_translation(path: Path, lang: str = "ko") -> Translation:
    """Read a translation file; any problem raises :class:`TranslationError` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TranslationError(f"{path}: no such translation file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TranslationError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("source"), str) or not isinstance(data.get("cells"), dict):
        raise TranslationError(f'{path}: expected {{"source": "<folder>/<notebook>.ipynb", "cells": {{...}}}}')
    entries: dict[str, dict[str, str]] = {}
    for key, entry in data["cells"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("source_sha256"), str) or not isinstance(entry.get(lang, ""), str):
            raise TranslationError(f'{path}: cell {key!r} must be {{"source_sha256": "<hex>", "{lang}": "<text>"}}')
        entries[key] = entry
    return Translation(path=Path(path), source=data["source"], lang=lang, entries=entries)


@dataclass
class NotebookStatus:
    """How far a notebook's translation is: which markdown cells are translated, stale or missing."""

    notebook: str
    translated: list[str] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)  # (key, first words of the English cell)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (key, first words)


def first_words(text: str, count: int = 8) -> str:
    """The opening words of a cell, to name it in a message."""
    words = text.split()
    return " ".join(words[:count]) + (" …" if len(words) > count else "")


def check(notebook: Path, root: Path, lang: str = "ko") -> tuple[NotebookStatus, Translation | None]:
    """Compare a notebook with its translation file (if any); a file naming unknown cells is an error."""
    relative = notebook.resolve().relative_to(root.resolve()).as_posix()
    nb = nbformat.read(notebook, as_version=4)
    cells = translatable_cells(nb)
    path = translation_path(notebook, root, lang)
    translation = load_translation(path, lang) if path.exists() else None
    status = NotebookStatus(notebook=relative)
    if translation is not None:
        if translation.source != relative:
            raise TranslationError(f'{path}: "source" is {translation.source!r}, expected {relative!r}')
        unknown = sorted(set(translation.entries) - set(cells))
        if unknown:
            raise TranslationError(f"{path}: names cells that {relative} has no markdown cell for: {', '.join(unknown)} "
                                   "(deleted or re-created in the English notebook? run `python -m course_lib i18n stub` "
                                   "and move the translation to the new key)")
    for key, cell in cells.items():
        text = source_text(cell)
        entry = translation.entries.get(key) if translation else None
        if entry is None or not entry.get(lang):
            status.missing.append((key, first_words(text)))
        elif entry["source_sha256"] != source_sha256(text):
            status.stale.append((key, first_words(text)))
        else:
            status.translated.append(key)
    return status, translation


def status_all(root: Path, lang: str = "ko") -> list[NotebookStatus]:
    """:func:`check` for every translatable notebook of the checkout."""
    return [check(path, root, lang)[0] for path in notebooks(root)]


def stub(notebook: Path, root: Path, lang: str = "ko") -> tuple[Path, int]:
    """Create or update a notebook's translation file so a translator can work on it.

    Adds an entry for each markdown cell that has none (``"<lang>": ""`` = not yet translated) and puts
    the current English text in ``"en"`` of every entry, so a translator sees what to translate and, for a
    stale entry, what the English says now. Never changes a translation or its recorded hash: a stale cell
    stays stale until the translator has updated the text and run :func:`accept`. Returns the file and the
    number of entries added.
    """
    status, translation = check(notebook, root, lang)
    path = translation_path(notebook, root, lang)
    cells = translatable_cells(nbformat.read(notebook, as_version=4))
    entries = dict(translation.entries) if translation else {}
    added = 0
    ordered: dict[str, dict[str, str]] = {}
    for key, cell in cells.items():  # the notebook's order, so the file reads alongside it
        text = source_text(cell)
        entry = dict(entries.get(key, {}))
        if not entry:
            entry = {"source_sha256": source_sha256(text), lang: ""}
            added += 1
        entry["en"] = text
        ordered[key] = entry
    write_translation(path, status.notebook, ordered)
    return path, added


def accept(notebook: Path, root: Path, keys: list[str], lang: str = "ko") -> Path:
    """Record that the translations of ``keys`` now match the current English text (after updating them)."""
    _, translation = check(notebook, root, lang)
    if translation is None:
        raise TranslationError(f"{translation_path(notebook, root, lang)}: no translation file yet; run `i18n stub` first")
    cells = translatable_cells(nbformat.read(notebook, as_version=4))
    for key in keys:
        if key not in translation.entries or not translation.text(key):
            raise TranslationError(f"{translation.path}: cell {key!r} has no translation to accept")
        translation.entries[key]["source_sha256"] = source_sha256(source_text(cells[key]))
        translation.entries[key]["en"] = source_text(cells[key])
    write_translation(translation.path, translation.source, translation.entries)
    return translation.path


def write_translation(path: Path, source: str, entries: dict[str, dict[str, str]]) -> None:
    """Write a translation file the way every tool here writes it (stable, readable diffs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"source": source, "cells": entries}, ensure_ascii=False, indent=1)
    path.write_text(text + "\n", encoding="utf-8")


def _marker(kind: str, text: str) -> str:
    return f'<p class="i18n-{kind}"><small>⚑ {html.escape(text)}</small></p>\n\n'


def localize(notebook: Path, root: Path, lang: str = "ko") -> Any:
    """The notebook in ``lang``: translated markdown where it is current, English with a marker elsewhere.

    Code cells and their stored outputs are the English notebook's own. The notebook's metadata gets
    ``language_code`` (read by nbconvert for ``<html lang>``).
    """
    status, translation = check(notebook, root, lang)
    nb = nbformat.read(notebook, as_version=4)
    localized = copy.deepcopy(nb)
    stale = {key for key, _ in status.stale}
    for cell in localized.cells:
        if cell.cell_type != "markdown":
            continue
        key = cell_key(cell)
        if key in status.translated and translation is not None:
            cell.source = translation.text(key)
        elif key in stale:
            cell.source = _marker("stale", STALE_MARKER.get(lang, "translation out of date")) + source_text(cell)
        else:
            cell.source = _marker("missing", MISSING_MARKER.get(lang, "not yet translated")) + source_text(cell)
    localized.metadata["language_code"] = lang
    return localized


def stale_report(statuses: list[NotebookStatus], lang: str = "ko") -> str:
    """A message naming every stale cell (notebook, key, first words), or '' when there is none."""
    lines = [f"{s.notebook}: cell {key} ({words!r}) changed in English since it was translated"
             for s in statuses for key, words in s.stale]
    if not lines:
        return ""
    return ("Stale translations — update the text in i18n/" + lang + "/..., then run "
            "`python -m course_lib i18n accept NOTEBOOK --cell KEY...`:\n  " + "\n  ".join(lines))


def format_status(statuses: list[NotebookStatus], list_missing: bool = False) -> str:
    """The table ``i18n status`` prints: counts per notebook, the stale cells named (and the missing ones if asked)."""
    width = max((len(s.notebook) for s in statuses), default=10)
    lines = [f"{'notebook':{width}}  translated  stale  missing"]
    for s in statuses:
        lines.append(f"{s.notebook:{width}}  {len(s.translated):10d}  {len(s.stale):5d}  {len(s.missing):7d}")
        for key, words in s.stale:
            lines.append(f"    stale: {key}  {words}")
        if list_missing:
            lines.extend(f"    missing: {key}  {words}" for key, words in s.missing)
    total = [sum(len(getattr(s, name)) for s in statuses) for name in ("translated", "stale", "missing")]
    lines.append(f"{'total':{width}}  {total[0]:10d}  {total[1]:5d}  {total[2]:7d}")
    return "\n".join(lines)
