"""Sphinx configuration of the course website (built by `make site` / `python -m course_lib site`).

Why Sphinx + MyST-NB: it reads the notebooks as they are, with their stored outputs and without running
them (``nb_execution_mode = "off"``), is on PyPI (so it pins in constraints.txt like everything else), and
its search, navigation and code highlighting work from files on disk, with no server and no CDN. MathJax
is served from the pinned ``jupyter-server-mathjax`` package (see ``course_lib/publish.py``).
"""

import os

project = "Lightweight DL"
author = "Lightweight DL contributors"
extensions = ["myst_nb"]
# The staging folder holds notebooks, exercises, results and the landing page; nothing else is a page.
exclude_patterns = ["_mathjax", "**/.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# Stored outputs only: the site never runs a notebook (nbval checks those outputs; the site shows them).
nb_execution_mode = "off"
# No widget manager from a CDN (the notebooks store no widget state).
nb_ipywidgets_js = {}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# MyST would add a MathJax 3 configuration; the MathJax here is 2.7, configured below.
myst_update_mathjax = False
# The notebooks link to files that are not pages (../course_lib/*.py, checkpoints); they stay plain links.
suppress_warnings = ["myst.xref_missing", "myst.header", "misc.highlighting_failure", "toc.not_included"]

html_theme = "furo"
html_title = "Lightweight DL"
html_static_path = ["_static"]
html_css_files = ["course.css"]
templates_path = ["_templates"]
html_sidebars = {"**": ["sidebar/brand.html", "sidebar/search.html", "lang-switch.html", "sidebar/scroll-start.html",
                        "sidebar/navigation.html", "sidebar/scroll-end.html"]}
html_copy_source = False
html_show_sourcelink = False

# MathJax 2.7 from the staging folder's _mathjax/mathjax/ (copied there from jupyter-server-mathjax by
# course_lib.publish, which passes the folder in COURSE_SITE_EXTRA): it lands at <out>/mathjax/ (mathjax_path is relative to _static). No CDN.
html_extra_path = [os.environ["COURSE_SITE_EXTRA"]] if os.environ.get("COURSE_SITE_EXTRA") else []
# HTML-CSS output with the STIX-Web fonts (the only ones the package ships, as Jupyter's own MathJax setup
# uses). Its "MathJax_Blank" placeholder font points at url('about:blank'), which Chromium reports as a CORS
# console error on every page with math; a local() source does the same job without a request.
mathjax_path = "../mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True},
                   "HTML-CSS": {"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web", "webFont": "STIX-Web",
                                "imageFont": None,
                                "styles": {"@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}}},
                   # The hidden MathML kept for screen readers is styled with TeX web fonts the package does not
                   # ship (\\mathcal asks for MathJax_Script-Regular.otf: a 404): point those variants at STIX.
                   "NativeMML": {"styles": {f'[mathvariant="{variant}"]': {"font-family": "STIXGeneral, serif"}
                                            for variant in ("script", "bold-script", "fraktur", "bold-fraktur", "double-struck")}},
                   "showMathMenu": False, "messageStyle": "none"}
