import subprocess
import sys

import nbformat
import pytest

from course_lib import cli, report


def test_records_table_markdown_and_json(tmp_path):
    records = [
        report.Record("cnn fp32", format="state_dict", bytes=211_085, params=51_946, top1=0.978, latency_ms=0.123456),
        report.Record("cnn int8", format=".pte", bytes=62_000, top1=0.976),
    ]
    frame = report.to_frame(records)
    assert list(frame["name"]) == ["cnn fp32", "cnn int8"]
    assert "macs" not in frame.columns  # empty everywhere, dropped
    md = report.to_markdown(records)
    assert "| cnn fp32 | pytorch | state_dict | 211,085 |" in md
    assert "0.978" in md and "0.123" in md
    path = report.save_json(records, tmp_path / "r" / "summary.json")
    assert report.load_json(path) == records


def test_record_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown Record fields"):
        report.Record.from_dict({"name": "x", "size": 3})
    with pytest.raises(FileNotFoundError):
        report.load_json(tmp_path / "none.json")
    with pytest.raises(ValueError, match="no records"):
        report.to_frame([])


def test_doctor_quick_lists_versions(capsys):
    assert cli.main(["doctor", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "2.14.1" in out and "logical cores" in out


def test_run_reports_a_missing_notebook(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "missing.ipynb")]) == 2
    assert "notebook not found" in capsys.readouterr().err


def test_run_executes_notebooks_and_reports_failures(tmp_path):
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 6 * 7\nprint(x)")])
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nbformat.write(good, tmp_path / "good.ipynb")
    nbformat.write(bad, tmp_path / "bad.ipynb")
    out_dir = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "course_lib", "run", str(tmp_path / "good.ipynb"), str(tmp_path / "bad.ipynb"),
         "--output-dir", str(out_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "1 of 2 notebooks ran" in result.stdout
    assert "ValueError: boom" in result.stdout
    executed = nbformat.read(out_dir / "good.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "42\n"
