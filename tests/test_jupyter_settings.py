"""The JupyterLab settings the environment ships are ones the installed JupyterLab knows and accepts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def installed_schemas() -> Path:
    """JupyterLab's schemas: under this venv, or under the one whose site-packages holds jupyterlab."""
    import jupyterlab

    prefixes = [Path(sys.prefix), Path(jupyterlab.__file__).resolve().parents[4]]  # <prefix>/lib/pythonX.Y/site-packages/jupyterlab
    return next(p / "share/jupyter/lab/schemas" for p in prefixes if (p / "share/jupyter/lab/schemas").is_dir())


def test_overrides_name_real_settings_with_allowed_values():
    import jsonschema

    overrides = json.loads((ROOT / "jupyter" / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false", "no news popup"
    for plugin, values in overrides.items():
        package, name = plugin.rsplit(":", 1)
        schema_path = installed_schemas() / package / f"{name}.json"
        assert schema_path.is_file(), f"no schema for {plugin} in the installed JupyterLab ({schema_path})"
        schema = json.loads(schema_path.read_text())
        for key, value in values.items():
            assert key in schema["properties"], f"{plugin} has no setting {key!r}"
            jsonschema.validate(value, schema["properties"][key])  # e.g. fetchNews is the string "false", not false


def test_the_makefile_installs_them_where_jupyterlab_reads_them():
    makefile = (ROOT / "Makefile").read_text()
    assert "LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json" in makefile
    assert "course: $(STAMP) $(LAB_OVERRIDES)" in makefile
