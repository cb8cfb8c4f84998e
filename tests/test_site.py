"""The website and the slides, built from the repository and checked in a real headless Chromium.

Builds both languages into a temporary folder (stored outputs, no execution), serves it on localhost and
opens every lecture page and deck: no console errors, a heading, a figure, a table and math rendered, the
language switch and the landing page's links working; nothing loaded from the network. A screenshot of one
page is kept in build/test-artifacts/.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from course_lib import publish

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LECTURES = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted(p.stem for p in (ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))
ARTEFACTS = ROOT / "build" / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium: `make setup` installs it (apt-get install chromium fonts-nanum)"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("published")
    publish.build_site(ROOT, out / "site")
    publish.build_slides(ROOT, out / "slides")
    return out


@pytest.fixture(scope="module")
def server(built: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no request log in the test output
            pass

    handler = functools.partial(Quiet, directory=str(built))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Page:
    """A browser tab that records console errors, page errors and failed requests (everything that went wrong)."""

    def __init__(self, browser, base: str):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.base = base
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text} ({m.location.get('url')})")
                     if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}")
                     if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)

    def open(self, path: str) -> None:
        """Load a page and let MathJax finish (leaving earlier would abort its font requests)."""
        self.problems.clear()
        self.page.goto(f"{self.base}/{path}", wait_until="load")
        self.page.wait_for_function("!window.MathJax || (MathJax.isReady && MathJax.Hub.queue.pending === 0)", timeout=20000)

    def wait_for_math(self) -> int:
        """Wait until MathJax has typeset the page; return how many formulas it rendered."""
        self.page.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && MathJax.isReady", timeout=20000)
        return self.page.evaluate("document.querySelectorAll('span.MathJax, div.MathJax_Display').length")


def test_nothing_is_loaded_from_the_network(built):
    assert publish.external_references(built) == []


def test_every_lecture_page_renders_in_both_languages(browser, server, built):
    tab = Page(browser, server)
    for lang in publish.SITE_LANGUAGES:
        for stem in LECTURES:
            tab.open(f"site/{lang}/notebooks/{stem}.html")
            assert tab.page.locator("article h1").count() >= 1, f"{lang}/{stem}: no heading"
            assert tab.page.locator("html").get_attribute("lang") == lang
            assert tab.problems == [], f"{lang}/{stem}: {tab.problems}"


def test_figure_table_and_math_render(browser, server):
    tab = Page(browser, server)
    tab.open("site/en/notebooks/05_quantization_pytorch.html")
    assert tab.wait_for_math() > 0, "MathJax typeset nothing"
    images = tab.page.evaluate("[...document.querySelectorAll('article img')].map(i => i.complete && i.naturalWidth)")
    assert images and all(width and width > 0 for width in images), f"figures not rendered: {images}"
    rows = tab.page.evaluate("document.querySelectorAll('article table tr').length")
    assert rows > 2, "no table rendered"
    assert tab.problems == [], tab.problems
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTEFACTS / "site_05_quantization_pytorch.png"))


def test_landing_page_reaches_every_lecture_exercise_and_the_results(browser, server):
    tab = Page(browser, server)
    for lang in publish.SITE_LANGUAGES:
        tab.open(f"site/{lang}/index.html")
        hrefs = set(tab.page.evaluate("[...document.querySelectorAll('article a[href]')].map(a => a.href)"))
        for stem in LECTURES:
            assert f"{server}/site/{lang}/notebooks/{stem}.html" in hrefs, f"{lang}: landing page has no link to {stem}"
        for stem in EXERCISES:
            assert f"{server}/site/{lang}/exercises/{stem}.html" in hrefs, f"{lang}: landing page has no link to exercise {stem}"
        assert f"{server}/site/{lang}/results/summary.html" in hrefs
        assert tab.problems == [], tab.problems
        for href in sorted(h for h in hrefs if h.startswith(server) and "#" not in h):
            assert tab.page.request.get(href).status == 200, f"{lang}: broken link {href}"
    tab.open("site/ko/results/summary.html")
    assert tab.page.locator("article table").count() >= 1 and tab.page.locator("article img").count() >= 1


def test_language_switch_goes_to_the_same_page_in_the_other_language(browser, server):
    tab = Page(browser, server)
    tab.open("site/en/notebooks/02_architecture_search.html")
    tab.page.locator(".lang-switch a[lang=ko]").click()
    tab.page.wait_for_load_state("load")
    assert tab.page.url == f"{server}/site/ko/notebooks/02_architecture_search.html"
    assert re.search("[가-힣]", tab.page.locator("article").inner_text()), "the Korean page has no Korean text"
    tab.page.locator(".lang-switch a[lang=en]").click()
    tab.page.wait_for_load_state("load")
    assert tab.page.url == f"{server}/site/en/notebooks/02_architecture_search.html"
    assert tab.problems == [], tab.problems


def test_every_deck_presents_with_slides_code_and_outputs(browser, server):
    tab = Page(browser, server)
    for lang in publish.SITE_LANGUAGES:
        for stem in LECTURES:
            tab.open(f"slides/{lang}/{stem}.slides.html")
            tab.page.wait_for_function("window.Reveal && Reveal.isReady()", timeout=20000)
            slides = tab.page.evaluate("Reveal.getTotalSlides()")
            assert slides >= 2, f"{lang}/{stem}: {slides} slide(s)"
            assert tab.page.locator(".reveal .jp-CodeCell").count() > 0 and tab.page.locator(".reveal .jp-OutputArea-output").count() > 0
            assert tab.problems == [], f"{lang}/{stem} slides: {tab.problems}"
    tab.open("slides/en/05_quantization_pytorch.slides.html")
    tab.page.wait_for_function("window.Reveal && Reveal.isReady()", timeout=20000)
    tab.page.keyboard.press("ArrowRight")
    tab.page.wait_for_timeout(1000)  # the slide transition
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTEFACTS / "slides_05_quantization_pytorch.png"))
    tab.page.locator("a.course-lang-switch").click()
    tab.page.wait_for_load_state("load")
    assert tab.page.url.startswith(f"{server}/slides/ko/05_quantization_pytorch.slides.html")
