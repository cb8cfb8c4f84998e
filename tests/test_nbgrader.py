"""The exercises work in an nbgrader course as they are: nbgrader's own generate_assignment and autograde.

The README says solutions/ can be dropped into an existing nbgrader / JupyterHub
set-up. This runs nbgrader 0.9.6 through its Python API (about 20× faster
than its CLI, see shared GRADING notes) in a temporary course directory:
the release version must lose the solutions, and the solution, submitted as a
student's notebook, must get every point in nbgrader's gradebook.
"""

from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXERCISE = "00_measuring_models"  # pure Python and NumPy/torch: light enough for a unit test


def alembic_script_folder() -> Path:
    """Where pip put the ``alembic`` command: nbgrader runs it by name to version a new gradebook."""
    dist = metadata.distribution("alembic")
    script = next(f for f in dist.files or [] if f.name == "alembic" and "bin" in f.parts)
    return Path(str(dist.locate_file(script))).resolve().parent


@pytest.mark.slow
def test_nbgrader_generates_and_autogrades_a_course_exercise(tmp_path, monkeypatch):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    # An activated venv has it on PATH; `make test` runs .venv/bin/python without activating.
    monkeypatch.setenv("PATH", f"{alembic_script_folder()}{os.pathsep}{os.environ.get('PATH', '')}")
    source = tmp_path / "source" / "ps00"
    source.mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / f"{EXERCISE}.ipynb", source)
    config = Config()
    config.CourseDirectory.root = str(tmp_path)
    config.CourseDirectory.course_id = "lightweight-dl"
    config.Execute.timeout = 300  # nbgrader's default is 30 s a cell; importing torch on a busy machine can take longer
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)

    generated = api.generate_assignment("ps00")
    assert generated["success"], generated.get("error") or generated.get("log")
    release = nbformat.read(tmp_path / "release" / "ps00" / f"{EXERCISE}.ipynb", as_version=4)
    solution_cells = [c for c in release.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert solution_cells and all("BEGIN SOLUTION" not in c.source for c in solution_cells)
    assert any("raise NotImplementedError" in c.source for c in solution_cells)

    submitted = tmp_path / "submitted" / "student1" / "ps00"
    submitted.mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / f"{EXERCISE}.ipynb", submitted)  # the solution, handed in as a student's work
    graded = api.autograde("ps00", "student1")
    assert graded["success"], graded.get("error") or graded.get("log")

    submission = api.get_submission("ps00", "student1")
    assert submission["max_score"] == 10
    assert submission["score"] == submission["max_score"], submission
