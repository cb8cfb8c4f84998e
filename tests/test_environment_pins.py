"""constraints.txt, pyproject.toml and environment.yml must agree (one place pins, the others follow)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert "==" in line, f"constraints.txt must pin exactly (name==version), got {line!r}"
        name, version = line.split("==")
        pins[canonical(name)] = version.strip()
    return pins


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment_pip_lines() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    return [ln.strip()[2:].strip() for ln in lines if ln.startswith("      - ")]


def test_every_pyproject_dependency_is_pinned_in_constraints_and_fits_its_range():
    pins = constraint_pins()
    project = pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    for text in requirements:
        req = Requirement(text)
        name = canonical(req.name)
        assert name in pins, f"{req.name} is a dependency in pyproject.toml but not pinned in constraints.txt"
        assert Version(pins[name]) in req.specifier, (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's range '{req.specifier}'"
        )


def test_environment_yml_pins_match_constraints():
    pins = constraint_pins()
    lines = environment_pip_lines()
    assert "-c constraints.txt" in lines, "environment.yml must install with -c constraints.txt"
    assert any(ln.startswith("-e .") for ln in lines), "environment.yml must install the course package (-e .)"
    pinned = [ln for ln in lines if "==" in ln]
    assert len(pinned) >= 20
    for line in pinned:
        name, version = line.split("==")
        assert pins.get(canonical(name)) == version, (
            f"environment.yml pins {name}=={version}, constraints.txt says {pins.get(canonical(name))}"
        )


SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")


def test_python_versions_agree():
    """pyproject admits exactly the versions the Makefile looks for; conda/Binder and CI use the first."""
    from packaging.specifiers import SpecifierSet

    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- python=3\.11\s*$", env, re.M), "environment.yml must pin python=3.11 (CI's version)"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    admitted = [f"3.{minor}" for minor in range(8, 16) if f"3.{minor}.0" in requires]
    assert tuple(admitted) == SUPPORTED_PYTHONS, f"requires-python admits {admitted}"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^SUPPORTED_PYTHONS := " + " ".join(f"python{v}" for v in SUPPORTED_PYTHONS) + "$", makefile, re.M)


def test_key_versions_are_the_ones_the_course_teaches():
    pins = constraint_pins()
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"
    assert pins["tensorflow"].startswith("2.21.")
    assert pins["tensorflow-model-optimization"] == "0.8.1"


def test_installed_versions_match_the_pins():
    """The environment the tests run in is the pinned one (catches a stale .venv)."""
    from importlib import metadata

    pins = constraint_pins()
    for name in ("torch", "tensorflow", "onnx", "onnxruntime", "executorch", "numpy", "nbval"):
        installed = metadata.version(name).split("+")[0]
        assert installed == pins[name], f"{name} {installed} is installed but constraints.txt pins {pins[name]}"
