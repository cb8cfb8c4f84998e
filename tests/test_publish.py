"""The publishing helpers without a browser: slide boundaries and notes, the landing page, the offline check."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from course_lib import publish

ROOT = Path(__file__).resolve().parent.parent


def test_slides_start_at_headings_and_cell_metadata_wins():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\nintro"),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("## Section"),
        nbformat.v4.new_markdown_cell("### Detail"),
        nbformat.v4.new_markdown_cell("Say this aloud.", metadata={"slideshow": {"slide_type": "notes"}}),
        nbformat.v4.new_markdown_cell("plain text"),
        nbformat.v4.new_code_cell("# ## not a heading"),
    ])
    assert publish.slide_types(nb) == ["slide", "-", "slide", "subslide", "notes", "-", "-"]


def test_notes_cells_become_speaker_notes_in_the_deck(tmp_path):
    from nbconvert import SlidesExporter

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_markdown_cell("Remember the demo.", metadata={"slideshow": {"slide_type": "notes"}}),
    ])
    for cell, role in zip(nb.cells, publish.slide_types(nb)):
        cell.metadata.setdefault("slideshow", {})["slide_type"] = role
    exporter = SlidesExporter(extra_template_basedirs=[str(ROOT / "site"), *publish._nbconvert_templates()],
                              extra_template_paths=publish._nbconvert_templates(), template_name="course_slides",
                              reveal_url_prefix="../assets/reveal", mathjax_url="../assets/mathjax/MathJax.js")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": "t"}})
    assert '<aside class="notes">' in body and "Remember the demo." in body
    assert "unpkg.com" not in body and "cdnjs" not in body and "require.js" not in body


def test_the_landing_page_is_the_readme_course_map_with_every_page_in_its_contents():
    for lang in publish.SITE_LANGUAGES:
        page = publish.landing_page(ROOT, lang)
        assert publish.LANDING[lang][1] in page
        for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
            assert f"notebooks/{path.stem}\n" in page and f"exercises/{path.stem}\n" in page
        assert "results/summary\n" in page


def test_a_missing_readme_section_is_a_clear_error():
    with pytest.raises(publish.PublishError, match="no section starting with '## Nope'"):
        publish.readme_section("# T\n\n## Course map\n", "## Nope")


def test_the_offline_check_finds_remote_scripts_styles_and_fonts(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.example/x.js"></script><a href="https://ok.example">fine</a>')
    (tmp_path / "b.css").write_text("@import url(https://fonts.example/css);\n.x { background: url('local.png') }")
    (tmp_path / "c.html").write_text('<link rel="stylesheet" href="_static/local.css"><img src="//cdn.example/i.png">')
    found = publish.external_references(tmp_path)
    assert found == ["a.html: https://cdn.example/x.js", "b.css: https://fonts.example/css", "c.html: //cdn.example/i.png"]
