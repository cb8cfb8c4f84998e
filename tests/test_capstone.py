"""The capstone's budget logic, results files and README block, and the grader's artefact measurement."""

import json
from pathlib import Path

import pytest
import torch

from course_lib import capstone, cli, measure
from course_lib.report import Record

ROOT = Path(__file__).resolve().parent.parent


def _record(step, framework, gzip_bytes, latency_ms, top1, raw=None, delta=None, spread=0.02):
    """A record timed in 5 rounds whose per-round medians move by ±``spread`` (the same load in every row)."""
    fmt = {"pytorch": "state_dict", "executorch": ".pte", "onnxruntime": ".onnx", "litert": ".tflite"}[framework]
    load = [1.0, 1.0 + spread, 1.0 - spread, 1.0 + 2 * spread, 1.0]
    low, high = delta if delta else (top1 - 0.964, top1 - 0.964)
    return Record(f"{step} · {framework}", framework=framework, format=fmt, bytes=raw or gzip_bytes * 2,
                  gzip_bytes=gzip_bytes, latency_ms=latency_ms, latency_rounds_ms=[latency_ms * f for f in load],
                  latency_min_ms=latency_ms * (1 - spread), latency_max_ms=latency_ms * (1 + 2 * spread), threads=1,
                  top1=top1, top1_low=top1 - 0.02, top1_high=min(1.0, top1 + 0.02), top1_delta=top1 - 0.964,
                  top1_delta_low=low, top1_delta_high=high, images=450, step=step, notes="agreement 1.000")


RECORDS = [
    _record("baseline", "pytorch", 200_000, 0.30, 0.964),
    _record("baseline", "executorch", 200_000, 0.20, 0.964),      # a slow runtime's fp32 file
    _record("baseline", "litert", 190_000, 0.10, 0.964),          # the fastest fp32 deployable: the speed reference
    _record("int8", "executorch", 19_000, 0.08, 0.960, delta=(-0.008, 0.0)),   # 2.5× within ExecuTorch, only 1.25× absolute
    _record("int8", "litert", 10_000, 0.05, 0.962, delta=(-0.006, 0.002)),     # 2× faster than the fastest fp32: meets all
    _record("design", "executorch", 80_000, 0.04, 0.950, delta=(-0.025, -0.004)),  # fast, accuracy interval crosses 1 point
]


def test_budget_lines_are_judged_in_absolute_time_with_intervals():
    table = capstone.check_budget(RECORDS).set_index(["step", "runtime"])
    pte, tfl = table.loc[("int8", "executorch")], table.loc[("int8", "litert")]
    assert pte["size_ratio"] == pytest.approx(200_000 / 19_000) and pte["size"] == "met"
    assert pte["within_speedup"] == pytest.approx(2.5)  # the within-runtime view is kept...
    assert pte["speedup"] == pytest.approx(1.25) and pte["speed"] == "not met"  # ...but judged against LiteRT's 0.10 ms
    assert tfl["speedup"] == pytest.approx(2.0) and tfl["verdict"] == "met" and bool(tfl["meets_budget"])
    assert tfl["speedup_low"] <= 2.0 <= tfl["speedup_high"]
    assert table.loc[("design", "executorch"), "accuracy"] == "inconclusive"
    assert table.loc[("design", "executorch"), "verdict"] == "not met"  # size 2.5× fails regardless
    best = capstone.best_artefact(capstone.check_budget(RECORDS))
    assert (best["step"], best["runtime"]) == ("int8", "litert")  # the fastest file meeting size and accuracy
    assert "meets every budget line" in capstone.verdict(RECORDS)


def test_a_ratio_near_the_line_is_inconclusive_not_a_coin_flip():
    noisy = [r if r.step != "int8" else _record(r.step, r.framework, r.gzip_bytes, 0.066, r.top1, spread=0.15)
             for r in RECORDS]  # 0.10 / 0.066 = 1.52×, with rounds that move by ±15–30 %
    table = capstone.check_budget(noisy).set_index(["step", "runtime"])
    assert table.loc[("int8", "litert"), "speed"] == "inconclusive"
    text = capstone.verdict(noisy)
    assert "cannot be said to meet the budget" in text and "Files whose speed line is met" in text
    nothing = capstone.verdict(RECORDS, capstone.Budget(size_ratio=30))
    assert "does not meet the budget" in nothing


def test_speed_verdicts_widen_the_interval_by_the_between_run_tolerance():
    ratio = capstone.stats.Interval(1.6, 1.58, 1.62)  # a tight within-run interval just above the line
    assert capstone.stats.verdict(ratio, 1.5) == "met"
    widened = capstone.speed_interval(ratio, 0.10)
    assert widened.low == pytest.approx(1.58 * 0.9) and widened.high == pytest.approx(1.62 * 1.1)
    table = capstone.check_budget(RECORDS, capstone.Budget(speedup=1.9)).set_index(["step", "runtime"])
    assert table.loc[("int8", "litert"), "speed"] == "inconclusive"  # 2.0× is within 10 % of a 1.9× line
    assert capstone.check_budget(RECORDS, capstone.Budget(speedup=1.9, speed_tolerance=0.0)).set_index(
        ["step", "runtime"]).loc[("int8", "litert"), "speed"] == "met"
    with pytest.raises(ValueError, match="speed_tolerance"):
        capstone.speed_interval(ratio, 1.5)


def test_channel_pruning_gives_the_design_architecture_with_the_baselines_weights():
    baseline = capstone.cnn(seed=0, image_size=8).eval()
    cut = capstone.channel_pruned(baseline, capstone.Recipe(design_channels=(16, 32), design_hidden=32))
    design = capstone.cnn((16, 32), 32, seed=0, image_size=8)
    assert type(cut) is type(design)
    assert {k: v.shape for k, v in cut.state_dict().items()} == {k: v.shape for k, v in design.state_dict().items()}
    originals = baseline.features[0].weight.flatten(1)
    assert all((originals == kept).all(1).any() for kept in cut.features[0].weight.flatten(1))  # filters kept, not retrained
    assert measure.count_macs(cut, torch.zeros(1, 1, 8, 8)) == measure.count_macs(design, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one ratio"):
        capstone.channel_pruned(baseline, capstone.Recipe(design_channels=(16, 48)))


def test_the_half_width_model_is_chosen_on_validation_only():
    def variant(val):
        history = capstone.train.History()
        history.val_top1 = val
        return (None, history)

    variants = {"design": variant([0.90, 0.95]), "distilled": variant([0.96]), "channel": variant([0.96, 0.93])}
    assert capstone.choose_half_width(variants) == "distilled"  # a tie goes to the earlier in HALF_WIDTH
    assert capstone.choose_half_width({"channel": variant([0.5])}) == "channel"
    with pytest.raises(ValueError, match="no half-width"):
        capstone.choose_half_width({})


def test_budget_errors():
    with pytest.raises(ValueError, match="no baseline"):
        capstone.check_budget([_record("int8", "onnxruntime", 1, 1, 1)] + RECORDS)
    with pytest.raises(ValueError, match="not from the capstone"):
        capstone.step_of(Record("something else"))
    assert capstone.step_of(Record("x", notes="step pruned; agreement 1.000")) == "pruned"  # older results files


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
    assert "Within each runtime" in summary and "1 thread(s) in every runtime" in summary
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{capstone.README_START}\nOLD-BLOCK\n{capstone.README_END}\n\nrest\n")
    assert capstone.update_readme(readme, results)
    text = readme.read_text()
    assert "OLD-BLOCK" not in text and text.startswith("# title") and text.endswith("rest\n")
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

    def fake(out, keep_artefacts, quick=False):
        calls.update(out=out, keep=keep_artefacts, quick=quick)
        return 0

    monkeypatch.setattr(cli, "report_command", fake)
    assert cli.main(["report", "--out", str(tmp_path), "--keep-artefacts"]) == 0
    assert calls == {"out": str(tmp_path), "keep": True, "quick": False}
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
        "at least 1.5× faster than the fastest fp32 baseline file (any runtime)": False,
        "hidden": True,  # the full CNN is accurate on the hold-out
    }, [(check.name, check.message) for cell in result.cells for check in cell.checks]
    assert result.score == 4.0
    feedback = (tmp_path / "out" / "feedback" / "fp32.md").read_text()
    assert "measured .pte:" in feedback and "B gzip" in feedback and "top-1" not in feedback  # no hold-out score leaked


def test_report_command_end_to_end(tmp_path):
    """`python -m course_lib report --quick` in a fresh process: every file written, every step and runtime measured.

    --quick is the same pipeline with one epoch per model and 3 timing rounds
    (a few minutes on a loaded 2-core machine instead of the full run's ~3–5):
    it proves the path end to end; the figures of a real run are checked in
    results/ and rendered into the README (test above).
    """
    import subprocess
    import sys

    readme_before = (ROOT / "README.md").read_text(encoding="utf-8")
    refused = subprocess.run([sys.executable, "-m", "course_lib", "report", "--quick"], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
    assert refused.returncode == 2 and "--out" in refused.stderr  # meaningless figures never land in results/
    done = subprocess.run([sys.executable, "-m", "course_lib", "report", "--quick", "--out", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    results = capstone.load_results(tmp_path / "results" / "summary.json")
    records = [Record.from_dict(r) for r in results["records"]]
    steps = {(capstone.step_of(r), r.framework) for r in records}
    assert len(records) == 17 and len(steps) == 17 and "--quick" in results["command"]
    assert {step for step, _ in steps} == set(capstone.STEPS)
    assert sum(framework != "pytorch" for step, framework in steps if step in capstone.HALF_WIDTH) == 3  # one exported
    assert (tmp_path / "results" / "tradeoffs.png").stat().st_size > 10_000
    assert "Best artefact" in done.stdout and "capstone" in done.stderr  # the verdict, and the progress bar on stderr
    table = capstone.check_budget(records)
    assert table[table["step"] == "int8"]["size_ok"].all()  # sizes do not depend on the machine's load
    assert all(r.threads == 1 and r.latency_min_ms <= r.latency_max_ms and r.top1_low <= r.top1 <= r.top1_high for r in records)
    assert all(r.cold_start_ms and r.peak_memory_bytes for r in records if r.framework != "pytorch")
    assert (ROOT / "README.md").read_text(encoding="utf-8") == readme_before  # --out elsewhere leaves the README alone
    assert not (tmp_path / "results" / "artefacts").exists()
