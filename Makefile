# Lightweight DL — every target installs what it needs first (into .venv), so a fresh clone needs only:
#   make course   # set up and open the lectures in JupyterLab
#   make test     # set up and run every test (library, notebooks with nbval, exercises)
# Pinned versions: constraints.txt. Python 3.11, 3.12 or 3.13: the first of them that runs is used
# (set PYTHON=/path/to/python3.x to choose another).

SUPPORTED_PYTHONS := python3.11 python3.12 python3.13
# `command -v` is not enough: pyenv puts shims on PATH for versions that are not active and fail when run.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(firstword $(foreach p,$(SUPPORTED_PYTHONS),$(shell $(p) -c '' >/dev/null 2>&1 && echo $(p)))),python3.11)
endif
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
PYTEST_ARGS ?=
# JupyterLab refuses to start as root (containers, some cloud VMs) unless told it may.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.DEFAULT_GOAL := help

.PHONY: help setup course site slides browser i18n-status course-headless report lm-train bench lint test test-fast check-python doctor exercises grade bench-grading clean-venv

help:
	@echo "make course           set up .venv and open the lectures in JupyterLab"
	@echo "make test             set up .venv, lint (ruff, mypy), and run all tests"
	@echo "make test-fast        library tests without the slow ones and without the notebooks (the inner loop)"
	@echo "make lint             ruff and mypy on course_lib/ and tests/"
	@echo "make check-python PYTHON=python3.12   install into .venv-python3.12, run the quick tests and lecture 00 there"
	@echo "make course-headless  run every lecture notebook without a browser, then the capstone report into results/"
	@echo "make report           the capstone pipeline headless: results/summary.{md,json}, results/tradeoffs.png"
	@echo "make lm-train         retrain the transformer lecture's model into checkpoints/tiny_lm.pt"
	@echo "make bench            print the capstone's ratios (size, speedup per runtime, accuracy) from a fresh run"
	@echo "make doctor           versions, CPU, threads, and which runtimes import"
	@echo "make exercises        regenerate exercises/ from solutions/"
	@echo "make grade SUBMISSIONS=folder [JOBS=2]   grade a folder of submissions into grades/"
	@echo "make site             build the course website (English and Korean) into build/site/ (open build/site/index.html)"
	@echo "make slides           build a reveal.js deck per lecture (English and Korean) into build/slides/"
	@echo "make i18n-status      how far the Korean translation is: translated / stale / missing cells per notebook"
	@echo "make setup            only create .venv and install (done by the targets above)"

# Re-installs only when the pins or the package's declaration change.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c '' >/dev/null 2>&1 || { echo "error: no working $(PYTHON). The course needs Python 3.11, 3.12 or 3.13: install one, or run 'make PYTHON=/path/to/python3.x ...'." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)' || { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); the course needs 3.11, 3.12 or 3.13: run 'make PYTHON=/path/to/python3.x ...'." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned environment into $(VENV) (first time: a few minutes, ~8 GB) ..."
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -q -c constraints.txt -e ".[test]"
	@touch $@

# JupyterLab reads <venv>/share/jupyter/lab/settings/overrides.json: no "get notified about Jupyter news?"
# popup and no update check in a classroom (jupyter/overrides.json; a test checks it against the installed schema).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): jupyter/overrides.json | $(STAMP)
	install -D -m 644 $< $@

# The browser test drives the system's Chromium (Debian's package; playwright downloads no browser here) and
# needs a Korean font to render the Korean pages. Installed with apt-get when missing (as root), else explained.
BROWSER_PACKAGES := chromium fonts-nanum
browser:
	@if command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi nanum; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing $(BROWSER_PACKAGES) from the system's packages (the site's browser test uses them) ..."; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES); } \
	    || echo "note: installing $(BROWSER_PACKAGES) failed; the site's browser test will be skipped"; \
	else echo "note: the site's browser test needs Chromium and a Korean font: sudo apt-get install $(BROWSER_PACKAGES) (it is skipped without them)"; fi

setup: $(STAMP) $(LAB_OVERRIDES) browser

course: $(STAMP) $(LAB_OVERRIDES) browser
	$(BIN)/python -m jupyter lab $(LAB_FLAGS) notebooks/

# Every lecture in order, then the capstone's measured pipeline into results/ (and the README's table).
course-headless: $(STAMP)
	$(BIN)/python -m course_lib run
	$(BIN)/python -m course_lib report

# The capstone's measured pipeline without the notebook (about a minute on 2 cores): results/ and the README's table.
report: $(STAMP)
	$(BIN)/python -m course_lib report $(REPORT_ARGS)

# The transformer lecture's model: trains it (300 steps; 59 min measured on a heavily loaded 2-core machine) into checkpoints/tiny_lm.pt, which is committed.
lm-train: $(STAMP)
	$(BIN)/python -m course_lib lm-train

bench: $(STAMP)
	$(BIN)/python benchmarks/capstone_ratios.py

doctor: $(STAMP)
	$(BIN)/python -m course_lib doctor

lint: $(STAMP)
	$(BIN)/python -m ruff check course_lib tests
	$(BIN)/python -m mypy course_lib

# With several workers on a small machine, each gets one thread (torch, TensorFlow via course_lib.setup, OpenMP):
# two notebooks side by side on 2 cores must not oversubscribe them, or one notebook's training lands inside the
# other's timing and a speed claim fails for a reason that is not the model's. Stored outputs do not depend on it.
TEST_ENV = $(if $(filter 1,$(JOBS)),,COURSE_LIB_MAX_THREADS=1 OMP_NUM_THREADS=1)

# Lint, then library tests and every lecture notebook (nbval), two workers; a notebook's cells stay in one worker.
test: lint browser
	$(TEST_ENV) $(BIN)/python -m pytest -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

# The inner loop: library tests not marked slow, no notebooks (seconds to a minute or two, not ten).
test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -n $(JOBS) --dist loadfile -m "not slow" tests $(PYTEST_ARGS)

# Another supported Python in its own venv: install the pins, then the quick tests and lecture 00 (nbval).
# e.g. make check-python PYTHON=python3.12  (or PYTHON=/path/to/python3.13)
CHECK_VENV = .venv-$(notdir $(PYTHON))
check-python:
	$(MAKE) VENV=$(CHECK_VENV) PYTHON=$(PYTHON) setup
	$(CHECK_VENV)/bin/python -c 'import platform; print("Python", platform.python_version())'
	$(CHECK_VENV)/bin/course-lib --version
	$(CHECK_VENV)/bin/python -m pytest -n $(JOBS) --dist loadfile -m "not slow" tests notebooks/00_measuring_models.ipynb $(PYTEST_ARGS)

# The website and the slides from the notebooks' stored outputs (nothing is executed), offline, both languages.
site: $(STAMP)
	$(BIN)/python -m course_lib site --out build/site
	@echo "open build/site/index.html in a browser (or: $(BIN)/python -m http.server -d build/site 8000)"

slides: $(STAMP)
	$(BIN)/python -m course_lib slides --out build/slides
	@echo "open build/slides/index.html; in a deck press s for the speaker view, f for full screen"

i18n-status: $(STAMP)
	$(BIN)/python -m course_lib i18n status

clean-venv:
	rm -rf $(VENV)

# Instructors: regenerate the student notebooks after editing solutions/.
exercises: $(STAMP)
	$(BIN)/python -m course_lib release

# Instructors: grade a folder of submissions (student/NN_name.ipynb or student.ipynb) into grades/.
SUBMISSIONS ?= submissions
grade: $(STAMP)
	$(BIN)/python -m course_lib grade $(SUBMISSIONS) --jobs $(JOBS) --out grades

# Prints how grading time scales with the batch size and --jobs (a benchmark, not a test).
bench-grading: $(STAMP)
	$(BIN)/python benchmarks/grading_batch.py
