"""The course as a website and as lecture slides, in every language, from the notebooks as they are.

Nothing is executed: pages and slides show the outputs stored in the notebooks (the ones nbval checks).
Everything the pages load comes from the pinned environment, so the site builds and reads offline:
MathJax 2.7 from ``jupyter-server-mathjax``, reveal.js 3.9 from ``rise`` (its ``static/reveal.js``; the
``jupyterlab-rise`` package bundles reveal.js inside webpack chunks that cannot be loaded on their own).

Site: Sphinx + MyST-NB (``site/conf.py``), one build per language into ``<out>/<lang>/`` from a staging
folder that mirrors the repository (``notebooks/``, ``exercises/``, ``results/``) so the notebooks'
relative links keep working. Slides: nbconvert's reveal.js exporter with the course's template
(``site/slides/``), one deck per lecture into ``<out>/<lang>/NN_name.slides.html``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from course_lib import i18n

#: Every language the site and slides are built in; English is the source.
SITE_LANGUAGES = ("en", *i18n.LANGUAGES)
LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}
#: The README each language's landing page takes its course map from, and that section's heading.
LANDING = {"en": ("README.md", "## Course map"), "ko": ("README.ko.md", "## 강의 지도")}
PAGE_TEXT = {
    "en": {"lectures": "Lectures", "exercises": "Exercises", "results": "Results",
           "slides": "Slides: `make slides` builds one reveal.js deck per lecture into `build/slides/`."},
    "ko": {"lectures": "강의", "exercises": "연습 문제", "results": "결과",
           "slides": "슬라이드: `make slides` 로 강의마다 reveal.js 슬라이드를 `build/slides/` 에 만듭니다."},
}
RESULTS_NOTE = {"ko": "> 이 표는 `python -m course_lib report` 가 측정해 자동으로 만드는 영어 원문입니다 "
                      "(측정값은 번역하지 않습니다).\n\n"}


class PublishError(RuntimeError):
    """The site or the slides could not be built (missing package asset, Sphinx or nbconvert failure)."""


def _package_dir(name: str) -> Path:
    """Where an installed package's files are, without importing it (``rise`` imports pkg_resources)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise PublishError(f"the package {name!r} is not installed; run `make setup` (it is in the [site] extra)")
    return Path(next(iter(spec.submodule_search_locations)))


def mathjax_dir() -> Path:
    """MathJax 2.7 as ``jupyter-server-mathjax`` ships it (``MathJax.js`` and its config, fonts, outputs)."""
    return _package_dir("jupyter_server_mathjax") / "static"


def reveal_dir() -> Path:
    """reveal.js 3.9 as ``rise`` ships it (``js/reveal.js``, ``css/``, ``plugin/notes``)."""
    return _package_dir("rise") / "static" / "reveal.js"


def site_config_dir(root: Path) -> Path:
    """``site/`` of the checkout: Sphinx's ``conf.py``, templates, CSS and the slides template."""
    return root / "site"


def readme_section(text: str, heading: str) -> str:
    """The section of a markdown file that starts at ``heading`` (up to the next heading of that level)."""
    level = heading.split(" ", 1)[0]
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise PublishError(f"no section starting with {heading!r} in the README")
    end = next((i for i in range(start + 1, len(lines)) if re.match(rf"{level} ", lines[i])), len(lines))
    return "\n".join(lines[start:end]).strip() + "\n"


def _readme_intro(text: str) -> str:
    """The README's title and opening paragraphs (up to its first section)."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    return "\n".join(lines[:end]).strip() + "\n"


def _notebook_entry(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def landing_page(root: Path, lang: str) -> str:
    """The site's index: the README's title, intro and course map, and the table of contents."""
    readme, heading = LANDING[lang]
    text = (root / readme).read_text(encoding="utf-8")
    words = PAGE_TEXT[lang]
    lectures = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    exercises = sorted((root / "exercises").glob("[0-9][0-9]_*.ipynb"))

    def toc(caption: str, entries: list[str]) -> str:
        return "```{toctree}\n:caption: " + caption + "\n:maxdepth: 1\n\n" + "\n".join(entries) + "\n```\n"

    return "\n".join([
        _readme_intro(text),
        readme_section(text, heading),
        words["slides"] + "\n",
        toc(words["lectures"], [_notebook_entry(p) for p in lectures]),
        toc(words["exercises"], [_notebook_entry(p) for p in exercises]),
        toc(words["results"], ["results/summary"]),
    ])


def stage_site(root: Path, lang: str, stage: Path) -> Path:
    """Write the Sphinx source of one language: landing page, notebooks (translated), exercises, results."""
    if stage.exists():
        shutil.rmtree(stage)
    for folder in i18n.FOLDERS:
        (stage / folder).mkdir(parents=True)
    (stage / "index.md").write_text(landing_page(root, lang), encoding="utf-8")
    for path in i18n.notebooks(root):
        target = stage / path.parent.name / path.name
        if lang == "en":
            shutil.copyfile(path, target)
        else:
            nbformat.write(i18n.localize(path, root, lang), target)
    (stage / "results").mkdir()
    summary = (root / "results" / "summary.md").read_text(encoding="utf-8")
    (stage / "results" / "summary.md").write_text(RESULTS_NOTE.get(lang, "") + summary, encoding="utf-8")
    for png in (root / "results").glob("*.png"):
        shutil.copyfile(png, stage / "results" / png.name)
    shutil.copytree(mathjax_dir(), stage / "_mathjax" / "mathjax")
    return stage


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a build step; its failure raises with the tool's own last lines, not a traceback of ours."""
    done = subprocess.run(command, capture_output=True, text=True, env=None if env is None else {**os.environ, **env})
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise PublishError(f"{what} failed (exit {done.returncode}):\n{tail}")


def build_site(root: Path, out: Path, languages: tuple[str, ...] = SITE_LANGUAGES, jobs: int = 2) -> Path:
    """Build the website into ``out/<lang>/`` (plus ``out/index.html`` that opens the English one)."""
    out.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        stage = stage_site(root, lang, out / "_source" / lang)
        _run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", str(jobs), "-c", str(site_config_dir(root)),
              "-D", f"language={lang}", str(stage), str(out / lang)], f"sphinx-build ({lang})",
             env={"COURSE_SITE_EXTRA": str(stage / "_mathjax")})
    (out / "index.html").write_text(_redirect_page("en/index.html"), encoding="utf-8")
    return out


def _redirect_page(target: str) -> str:
    links = " · ".join(f'<a href="{target.replace("en/", f"{lang}/", 1)}">{LANGUAGE_NAMES[lang]}</a>' for lang in SITE_LANGUAGES)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={target}">'
            f"<title>Lightweight DL</title></head><body>{links}</body></html>\n")


# ---------------------------------------------------------------- slides

def heading_level(source: str) -> int:
    """The level of the markdown heading a cell starts with (0 when it does not start with one)."""
    match = re.match(r"\s*(#{1,6})\s", source)
    return len(match.group(1)) if match else 0


def slide_types(nb: Any) -> list[str]:
    """Each cell's reveal.js role: its ``slideshow.slide_type`` metadata if set, else from its headings.

    A cell starting with a level-1 or level-2 heading opens a slide, a level-3 heading a sub-slide (below
    it in reveal.js); any other cell continues the current slide (``-``). Cells set to ``notes`` (JupyterLab:
    property inspector → Slide Type → Notes, the same metadata RISE reads) become speaker notes, ``skip``
    leaves a cell out.
    """
    roles = []
    for index, cell in enumerate(nb.cells):
        explicit = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        if explicit:
            roles.append(explicit)
            continue
        level = heading_level(i18n.source_text(cell)) if cell.cell_type == "markdown" else 0
        roles.append("slide" if index == 0 or level in (1, 2) else "subslide" if level == 3 else "-")
    return roles


def slides_notebook(path: Path, root: Path, lang: str) -> Any:
    """The notebook to export: translated if needed, each cell's slide role set (from the English text)."""
    english = nbformat.read(path, as_version=4)
    nb = english if lang == "en" else i18n.localize(path, root, lang)
    for cell, role in zip(nb.cells, slide_types(english)):
        cell.metadata.setdefault("slideshow", {})["slide_type"] = role
    nb.metadata["language_code"] = lang
    return nb


def _copy_slide_assets(out: Path) -> None:
    """reveal.js laid out where nbconvert's reveal template looks (``dist/``), and MathJax, once per build."""
    assets = out / "assets"
    if assets.exists():
        shutil.rmtree(assets)
    reveal = reveal_dir()
    target = assets / "reveal"
    (target / "dist" / "theme").mkdir(parents=True)
    shutil.copyfile(reveal / "css" / "reveal.css", target / "dist" / "reveal.css")
    shutil.copyfile(reveal / "css" / "theme" / "white.css", target / "dist" / "theme" / "white.css")
    shutil.copytree(reveal / "lib" / "font", target / "lib" / "font")  # white.css imports its font from here
    shutil.copytree(reveal / "js", target / "js")
    shutil.copytree(reveal / "plugin" / "notes", target / "plugin" / "notes")
    shutil.copytree(mathjax_dir(), assets / "mathjax")


def _nbconvert_templates() -> list[str]:
    """nbconvert's own templates beside the install prefix it came from (found by jupyter's data path only
    when Python runs from that prefix, which a venv layered on another does not)."""
    import nbconvert

    prefix = Path(nbconvert.__file__).resolve().parents[4]
    templates = prefix / "share" / "jupyter" / "nbconvert" / "templates"
    return [str(templates)] if templates.is_dir() else []


def build_slides(root: Path, out: Path, languages: tuple[str, ...] = SITE_LANGUAGES) -> list[Path]:
    """One reveal.js deck per lecture and language into ``out/<lang>/``; returns the decks written."""
    from nbconvert import SlidesExporter

    out.mkdir(parents=True, exist_ok=True)
    _copy_slide_assets(out)
    exporter = SlidesExporter(extra_template_basedirs=[str(site_config_dir(root)), *_nbconvert_templates()],
                              extra_template_paths=_nbconvert_templates(), template_name="course_slides",
                              reveal_url_prefix="../assets/reveal", reveal_theme="white", reveal_scroll=True,
                              mathjax_url="../assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full")
    written = []
    lectures = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for lang in languages:
        (out / lang).mkdir(exist_ok=True)
        index_links = []
        for path in lectures:
            nb = slides_notebook(path, root, lang)
            other = "ko" if lang == "en" else "en"
            resources = {"metadata": {"name": path.stem}, "language_code": lang,
                         "course": {"other_lang": other, "other_name": LANGUAGE_NAMES[other],
                                    "other_href": f"../{other}/{path.stem}.slides.html"}}
            try:
                body, _ = exporter.from_notebook_node(nb, resources=resources)
            except Exception as exc:  # nbconvert's errors are deep; name the notebook
                raise PublishError(f"slides for {path.name} ({lang}): {type(exc).__name__}: {exc}") from exc
            deck = out / lang / f"{path.stem}.slides.html"
            deck.write_text(body, encoding="utf-8")
            written.append(deck)
            index_links.append(f'<li><a href="{deck.name}">{path.stem}</a></li>')
        (out / lang / "index.html").write_text(
            f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>Lightweight DL slides</title></head>'
            f"<body><h1>Lightweight DL — slides ({LANGUAGE_NAMES[lang]})</h1><ul>{''.join(index_links)}</ul></body></html>\n",
            encoding="utf-8")
    (out / "index.html").write_text(_redirect_page("en/index.html"), encoding="utf-8")
    return written


def external_references(folder: Path) -> list[str]:
    """Every asset the built pages would fetch from off the machine: ``<script src>``, ``<link href>``,
    ``<img src>`` in the HTML and ``@import`` / ``url()`` in the CSS (plain ``<a href>`` links are fine)."""
    html_pattern = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']((?:https?:)?//[^\"']+)", re.I)
    css_pattern = re.compile(r"(?:@import\s+|url\()\s*[\"']?((?:https?:)?//[^\"')\s]+)", re.I)
    found = []
    for path in sorted(folder.rglob("*")):
        pattern = html_pattern if path.suffix == ".html" else css_pattern if path.suffix == ".css" else None
        if pattern is not None:
            for match in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
                found.append(f"{path.relative_to(folder)}: {match.group(1)}")
    return found
