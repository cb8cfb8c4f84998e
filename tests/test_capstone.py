"""The capstone's budget logic, results files and README block, and the grader's artefact measurement."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import capstone, cli, deploy, measure, quantize
from course_lib.report import Record

ROOT = Path(__file__).resolve().parent.parent


def _record(step, framework, gzip_bytes, latency_ms, top1, raw=None):
    fmt = {"pytorch": "state_dict", "executorch": ".pte", "onnxruntime": ".onnx", "litert": ".tflite"}[framework]
    return Record(f"{step} · {framework}", framework=framework, format=fmt, bytes=raw or gzip_bytes * 2,
                  gzip_bytes=gzip_bytes, latency_ms=latency_ms, top1=top1, notes=f"step {step}; agreement 1.000")


RECORDS = [
    _record("baseline", "executorch", 200_000, 0.10, 0.964),
    _record("baseline", "litert", 190_000, 0.05, 0.964),
    _record("int8", "executorch", 19_000, 0.05, 0.958),   # 10.5× smaller, 2× faster, -0.6 points: meets all
    _record("int8", "litert", 10_000, 0.06, 0.966),       # smaller still, but slower: speed line fails
    _record("design", "executorch", 80_000, 0.04, 0.950),  # fast but -1.4 points and only 2.5× smaller
]


def test_budget_lines_are_checked_against_the_same_runtime():
    table = capstone.check_budget(RECORDS).set_index(["step", "runtime"])
    assert table.loc[("int8", "executorch"), "size_ratio"] == pytest.approx(200_000 / 19_000)
    assert table.loc[("int8", "executorch"), "speedup"] == pytest.approx(2.0)
    assert bool(table.loc[("int8", "executorch"), "meets_budget"])
    assert not bool(table.loc[("int8", "litert"), "speed_ok"])  # compared with LiteRT's 0.05 ms, not ExecuTorch's
    assert bool(table.loc[("int8", "litert"), "size_ok"])
    assert not bool(table.loc[("design", "executorch"), "accuracy_ok"])
    best = capstone.best_artefact(capstone.check_budget(RECORDS))
    assert (best["step"], best["runtime"]) == ("int8", "executorch")
    assert "meets every budget line" in capstone.verdict(RECORDS)
    # a tighter budget that nothing meets: the verdict says which lines the closest file meets
    text = capstone.verdict(RECORDS, capstone.Budget(size_ratio=30))
    assert "meets speed, accuracy only" in text or "meets size" in text
    with pytest.raises(ValueError, match="no baseline"):
        capstone.check_budget([_record("int8", "onnxruntime", 1, 1, 1)] + RECORDS)
    with pytest.raises(ValueError, match="not from the capstone"):
        capstone.step_of(Record("something else"))


def _results():
    meta = {"command": "python -m course_lib report", "date": "2026-11-23", "seconds": 60.0,
            "machine": {"cpu": "Test CPU", "cores": 2, "python": "3.11", "versions": "torch 2.14.1"}}
    return meta


def test_results_files_and_readme_block(tmp_path):
    paths = capstone.write_results(RECORDS, tmp_path / "results", _results())
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    results = capstone.load_results(paths["json"])
    assert [Record.from_dict(r) for r in results["records"]] == RECORDS
    summary = paths["markdown"].read_text()
    assert "Test CPU, 2 cores" in summary and "| int8 | executorch | .pte | 19,000 | 10.5 |" in summary
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{capstone.README_START}\nold\n{capstone.README_END}\n\nrest\n")
    assert capstone.update_readme(readme, results)
    text = readme.read_text()
    assert "old" not in text and text.startswith("# title") and text.endswith("rest\n")
    assert "`python -m course_lib report`" in text and "Test CPU" in text
    assert not capstone.update_readme(readme, results)  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no results block"):
        capstone.update_readme(readme, results)
    (tmp_path / "bad.json").write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="not a capstone results file"):
        capstone.load_results(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="course_lib report"):
        capstone.load_results(tmp_path / "none.json")


def test_readme_table_is_rendered_from_the_committed_results():
    """The README's results block must be exactly what results/summary.json renders to."""
    results = capstone.load_results(ROOT / "results" / "summary.json")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert capstone.readme_section(results) in readme, (
        "README.md's results table is not the one results/summary.json renders: "
        "run `python -m course_lib report`")
    summary = (ROOT / "results" / "summary.md").read_text(encoding="utf-8")
    assert summary == capstone.summary_markdown(results)


def test_report_command_is_wired(monkeypatch, tmp_path):
    calls = {}

    def fake(out, keep_artefacts):
        calls.update(out=out, keep=keep_artefacts)
        return 0

    monkeypatch.setattr(cli, "report_command", fake)
    assert cli.main(["report", "--out", str(tmp_path), "--keep-artefacts"]) == 0
    assert calls == {"out": str(tmp_path), "keep": True}
    assert cli.main(["report"]) == 0 and calls["out"] is None  # the repository's results/ (and README)
    # --render-only measures nothing: it re-renders summary.md from the JSON, and says so when there is none
    capstone.write_results(RECORDS, tmp_path / "r", _results())
    (tmp_path / "r" / "summary.md").write_text("stale")
    assert cli.main(["report", "--render-only", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "summary.md").read_text().startswith("# Capstone results")
    assert cli.main(["report", "--render-only", "--out", str(tmp_path / "none")]) == 2
    assert set(cli.machine_summary()) == {"cpu", "cores", "python", "versions"}


def test_interleaved_latency_pools_every_round():
    model = torch.nn.Linear(4, 2)
    stats = measure.measure_latency_interleaved({"a": (model, torch.zeros(1, 4)), "b": (lambda: None, None)},
                                                rounds=3, repeats=5, warmup=1)
    assert stats["a"].repeats == stats["b"].repeats == 15
    assert stats["a"].batch_size == 1 and stats["a"].threads == 1
    with pytest.raises(ValueError):
        measure.measure_latency_interleaved({}, rounds=1)


def test_grader_scores_an_uncompressed_submission_on_each_budget_line(tmp_path):
    """An fp32 export of the full-size CNN: it runs and is accurate, but is too big, too slow and has too many MACs."""
    import nbformat

    from course_lib.grading import grader

    source = ROOT / "solutions" / "12_capstone.ipynb"
    nb = nbformat.read(ROOT / "exercises" / "12_capstone.ipynb", as_version=4)
    bodies = {
        "train_compressed_model": "def train_compressed_model(split):\n    loaders = data.torch_loaders(split)\n"
                                  "    model = capstone.cnn(seed=0)\n"
                                  "    train.fit(model, loaders['train'], loaders['val'], epochs=15, progress=False)\n"
                                  "    return model.eval()",
        "export_artefact": "def export_artefact(model, calibration_images, folder):\n    Path(folder).mkdir(exist_ok=True)\n"
                           "    return deploy.export_executorch(model, torch.as_tensor(calibration_images[:32]), Path(folder) / 'fp32.pte')",
    }
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in bodies:
            cell.source = bodies[grade_id]
    submission = tmp_path / "subs" / "fp32" / "12_capstone.ipynb"
    submission.parent.mkdir(parents=True)
    nbformat.write(nb, submission)
    [result] = grader.grade_batch([("fp32", submission)], source, tmp_path / "out", jobs=1, progress=False, canary=False)
    marks = {check.name if not check.hidden else "hidden": check.passed for cell in result.cells for check in cell.checks}
    assert marks == {
        "at most half the MACs of the course CNN": False,
        "the file loads and returns 10 logits per image": True,
        "at most 20,000 bytes gzip": False,
        "at least 1.5× faster than the fp32 baseline in the same runtime": False,
        "hidden": True,  # the full CNN is accurate on the hold-out
    }, [(check.name, check.message) for cell in result.cells for check in cell.checks]
    assert result.score == 4.0
    feedback = (tmp_path / "out" / "feedback" / "fp32.md").read_text()
    assert "measured .pte:" in feedback and "B gzip" in feedback and "top-1" not in feedback  # no hold-out score leaked


def test_report_command_end_to_end(tmp_path):
    """`python -m course_lib report` on a fresh process: every file written, every step and runtime measured."""
    import subprocess
    import sys

    readme_before = (ROOT / "README.md").read_text(encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "course_lib", "report", "--out", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    results = capstone.load_results(tmp_path / "results" / "summary.json")
    steps = {(capstone.step_of(Record.from_dict(r)), r["framework"]) for r in results["records"]}
    assert len(results["records"]) == 15 and len(steps) == 15
    assert (tmp_path / "results" / "tradeoffs.png").stat().st_size > 10_000
    assert "Best artefact" in done.stdout and "capstone" in done.stderr  # the verdict, and the progress bar on stderr
    table = capstone.check_budget([Record.from_dict(r) for r in results["records"]])
    final = table[table["step"] == "int8"]
    assert final["size_ok"].all() and final["accuracy_ok"].all()  # sizes and accuracy do not depend on the machine's load
    assert (ROOT / "README.md").read_text(encoding="utf-8") == readme_before  # --out elsewhere leaves the README alone
    assert not (tmp_path / "results" / "artefacts").exists()
