"""The command line as a user meets it: names itself, has a version, finds (or refuses) the checkout."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from course_lib import cli, repo

ROOT = Path(__file__).resolve().parent.parent


def test_help_and_version_name_the_program_it_was_called_as(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: course-lib ")
    with pytest.raises(SystemExit):
        cli.main(["--version"], prog="python -m course_lib")
    assert capsys.readouterr().out.strip() == f"python -m course_lib {metadata.version('course_lib')}"


@pytest.mark.slow
def test_python_dash_m_still_works_and_says_so():
    result = subprocess.run([sys.executable, "-m", "course_lib", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m course_lib ")


def test_the_version_is_defined_once_in_pyproject():
    import tomllib

    import course_lib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert course_lib.__version__ == metadata.version("course_lib") == version
    for path in (ROOT / "course_lib").rglob("*.py"):
        assert f'"{version}"' not in path.read_text(), f"{path} repeats the version"


def test_the_checkout_is_found_from_a_subfolder_or_refused_clearly(tmp_path, monkeypatch, capsys):
    assert repo.find_repo(ROOT / "notebooks") == ROOT
    monkeypatch.chdir(ROOT / "solutions")
    assert repo.find_repo() == ROOT
    with pytest.raises(repo.NotACourseCheckout, match="not inside a checkout of the course.*--repo DIR"):
        repo.find_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["release", "--check"]) == 2
    assert capsys.readouterr().err.startswith("error: the current directory is not inside a checkout")
    assert cli.main(["--repo", str(tmp_path / "missing"), "release", "--check"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["--repo", str(ROOT), "release", "--check"]) == 0


def test_report_into_a_folder_that_cannot_be_created_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert cli.main(["--repo", str(ROOT), "report", "--out", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create the results folder") and err.count("\n") == 1


def test_render_only_refuses_keep_artefacts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--render-only", "--keep-artefacts"])
    assert exit_info.value.code == 2
    assert "--render-only measures nothing" in capsys.readouterr().err
