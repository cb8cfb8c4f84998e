# Lightweight DL — every target installs what it needs first (into .venv), so a fresh clone needs only:
#   make course   # set up and open the lectures in JupyterLab
#   make test     # set up and run every test (library, notebooks with nbval, exercises)
# Pinned versions: constraints.txt. Python 3.11 is required (set PYTHON=/path/to/python3.11 if it is not on PATH).

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
PYTEST_ARGS ?=
# JupyterLab refuses to start as root (containers, some cloud VMs) unless told it may.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.DEFAULT_GOAL := help
.PHONY: help setup course course-headless report lm-train bench test doctor exercises grade bench-grading clean-venv

help:
	@echo "make course           set up .venv and open the lectures in JupyterLab"
	@echo "make test             set up .venv and run all tests"
	@echo "make course-headless  run every lecture notebook without a browser, then the capstone report into results/"
	@echo "make report           the capstone pipeline headless: results/summary.{md,json}, results/tradeoffs.png"
	@echo "make lm-train         retrain the transformer lecture's model into checkpoints/tiny_lm.pt"
	@echo "make bench            print the capstone's ratios (size, speedup per runtime, accuracy) from a fresh run"
	@echo "make doctor           versions, CPU, threads, and which runtimes import"
	@echo "make exercises        regenerate exercises/ from solutions/"
	@echo "make grade SUBMISSIONS=folder [JOBS=2]   grade a folder of submissions into grades/"
	@echo "make setup            only create .venv and install (done by the targets above)"

# Re-installs only when the pins or the package's declaration change.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found. The course needs Python 3.11: install it, or run 'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || { echo "error: $(PYTHON) is not Python 3.11; run 'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned environment into $(VENV) (first time: a few minutes, ~8 GB) ..."
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -q -c constraints.txt -e ".[test]"
	@touch $@

setup: $(STAMP)

course: $(STAMP)
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

# Library tests and every lecture notebook (nbval), two workers; a notebook's cells stay in one worker.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

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
