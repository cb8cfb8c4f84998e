"""Release: generate ``exercises/`` from ``solutions/`` with nbgrader's own preprocessors.

``ClearSolutions`` replaces every ``### BEGIN SOLUTION`` … ``### END SOLUTION``
region with ``raise NotImplementedError()``, ``ClearHiddenTests`` removes the
``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS`` regions, ``ClearOutput``
drops outputs, and ``LockCells`` + ``ComputeChecksums`` write the metadata an
nbgrader installation expects, so instructors can also use these notebooks
with nbgrader. Output is deterministic, so ``--check`` can prove that
``exercises/`` is up to date.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from course_lib.grading.grader import BEGIN_HIDDEN, load_tests

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def release_notebook(source: Path) -> str:
    """The student version of one source notebook, as the text that is written to disk."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions, ComputeChecksums, LockCells

    load_tests(source)  # refuse a source that breaks the test-cell rules before releasing it
    nb = nbformat.read(source, as_version=4)
    nb = copy.deepcopy(nb)
    resources: dict = {}
    for preprocessor in (
        ClearSolutions(code_stub={"python": CODE_STUB}, enforce_metadata=True),
        ClearHiddenTests(enforce_metadata=True),
        ClearOutput(),
        LockCells(lock_grade_cells=True, lock_readonly_cells=True),
        ComputeChecksums(),
    ):
        nb, resources = preprocessor.preprocess(nb, resources)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
        cell.pop("id", None)  # ids change on every save; keep the file stable
        cell.metadata.pop("execution", None)  # timestamps of the source's last run: noise in a learner's notebook
    nb.nbformat_minor = 4  # without cell ids
    text = nbformat.writes(nb) + "\n"
    if BEGIN_HIDDEN in text or "### BEGIN SOLUTION" in text:
        raise RuntimeError(f"{source}: a solution or hidden test survived the release; check its markers")
    return text


def release(source_dir: Path, exercise_dir: Path, check_only: bool = False) -> list[str]:
    """Write (or, with ``check_only``, compare) every exercise. Returns the problems found."""
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no source notebooks in {source_dir}")
    problems = []
    expected_names = set()
    exercise_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = exercise_dir / source.name
        expected_names.add(source.name)
        text = release_notebook(source)
        if check_only:
            if not target.exists():
                problems.append(f"{target} is missing")
            elif target.read_text(encoding="utf-8") != text:
                problems.append(f"{target} differs from its source {source}")
        else:
            target.write_text(text, encoding="utf-8")
    for extra in sorted(exercise_dir.glob("*.ipynb")):
        if extra.name not in expected_names:
            problems.append(f"{extra} has no source in {source_dir}")
    return problems
