"""Lecture 08, the capstone: compress the course CNN to a budget, step by step, and report it.

The pipeline (:func:`run_pipeline`) applies what lectures 01–07 taught, one
step at a time, and measures every step the same way into
:class:`~course_lib.report.Record` s:

1. **baseline** — the course CNN (32/64 channels), fp32;
2. **design** — the same CNN at half width (16/32 channels): ~3.7× fewer MACs;
3. **pruned** — global magnitude pruning of that model, fine-tuned (the zeros
   make the file compress; they do not make it faster);
4. **int8** — post-training static quantization of the pruned model.

Each step is measured as a PyTorch model (``state_dict``) and as the files
the three runtimes ship: ExecuTorch ``.pte``, ONNX Runtime ``.onnx`` and
LiteRT ``.tflite``. :func:`check_budget` compares every record with the
baseline *in the same runtime*: gzip size ratio, batch-1 one-thread speedup
and top-1 change — the budget the lecture states.

The graded capstone (exercise 08) scores a learner's artefact with
:func:`grade_artefact`: the grader measures size, latency and accuracy on a
hold-out split itself, in a separate process, against a baseline it builds.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib import data, deploy, prune, train
from course_lib.models.cnn import SmallCNN
from course_lib.repo import library_root
from course_lib.report import Record

#: Steps of the pipeline, in order.
STEPS = ("baseline", "design", "pruned", "int8")


@dataclass(frozen=True)
class Budget:
    """What "compressed enough" means, relative to the fp32 baseline in the same runtime.

    Attributes:
        size_ratio: baseline gzip bytes / artefact gzip bytes must be at least this
            (gzip: what a download or an app bundle really costs).
        speedup: baseline latency / artefact latency (batch 1, one thread) at least this.
        max_top1_drop: top-1 may fall by at most this much (0.01 = one point).
    """

    size_ratio: float = 10.0
    speedup: float = 1.5
    max_top1_drop: float = 0.01


@dataclass(frozen=True)
class Recipe:
    """The pipeline's settings; the defaults are the lecture's (chosen before looking at test accuracy)."""

    epochs: int = 15
    design_channels: tuple[int, int] = (16, 32)
    design_hidden: int = 32
    design_epochs: int = 30
    sparsity: float = 0.7
    prune_steps: int = 2
    finetune_epochs: int = 3
    seed: int = 0


def cnn(channels: tuple[int, int] = (32, 64), hidden: int = 32, seed: int | None = 0, image_size: int = 8) -> SmallCNN:
    """A seeded :class:`SmallCNN` of any width (the baseline is ``channels=(32, 64)``)."""
    if seed is not None:
        torch.manual_seed(seed)
    return SmallCNN(image_size=image_size, channels=channels, hidden=hidden)


def _runtime_label(artefact_name: str) -> str:
    return artefact_name.replace(" fp32", "").replace(" int8", "")


def measure_steps(
    steps: list[tuple[str, nn.Module | None, dict[str, Path]]], split: data.Split, reference: np.ndarray,
    rounds: int = 5, repeats: int = 60,
) -> list[Record]:
    """Measure every step's PyTorch model and artefacts; latency interleaved across all of them.

    ``steps`` holds ``(step, model or None, {artefact name: path})``. Sizes,
    cold start, memory, top-1 and agreement come from
    :func:`deploy.measure_pytorch` / :func:`deploy.measure_artefact`; the
    latency (batch 1, one thread, ExecuTorch's pool included) is then
    re-measured for all of them together in ``rounds`` interleaved rounds
    (:func:`measure.measure_latency_interleaved`), so that noise on a busy
    machine falls on every row alike.
    """
    from course_lib.measure import measure_latency_interleaved

    records: list[Record] = []
    targets: dict[str, tuple[Any, Any]] = {}
    one = np.ascontiguousarray(split.x_test[:1])
    one_nhwc = np.ascontiguousarray(one.transpose(0, 2, 3, 1))
    unknown = [step for step, _, _ in steps if step not in STEPS]
    if unknown:
        raise ValueError(f"steps must be named from {STEPS} (the budget check compares with 'baseline'); got {unknown}")
    with deploy.executorch_threads(1):
        for step, model, artefacts in steps:
            if model is not None:
                record = deploy.measure_pytorch(f"{step} · PyTorch", model, split.x_test, split.y_test, reference, repeats=10)
                records.append(record)
                targets[record.name] = (model, torch.as_tensor(one))
            for artefact_name, path in artefacts.items():
                record = deploy.measure_artefact(f"{step} · {_runtime_label(artefact_name)}", path, split.x_test,
                                                 split.y_test, reference, repeats=10, executorch_threads_count=1)
                records.append(record)
                targets[record.name] = (deploy.load_artefact(path), one_nhwc if path.suffix == ".tflite" else one)
            for record in records:
                if not record.notes.startswith("step "):
                    record.notes = f"step {step}; " + record.notes
        latencies = measure_latency_interleaved(targets, rounds=rounds, repeats=repeats, threads=1)
    for record in records:
        stats = latencies[record.name]
        record.latency_ms, record.latency_p90_ms, record.threads = stats.median_ms, stats.p90_ms, 1
    return records


def step_of(record: Record) -> str:
    """The pipeline step a record belongs to (from its notes or name)."""
    for part in [record.notes.split(";")[0].removeprefix("step ").strip(), record.name.split(" · ")[0].strip()]:
        if part in STEPS:
            return part
    raise ValueError(f"record {record.name!r} is not from the capstone pipeline (no step in its name or notes)")


def run_pipeline(
    split: data.Split, folder: str | Path, recipe: Recipe = Recipe(),
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Record], dict[str, nn.Module]]:
    """Baseline → design → pruned → int8, each measured in PyTorch and the three runtimes.

    Returns the records (15: four per fp32 step, three int8 artefacts) and
    the PyTorch models of each step. ``progress`` is called with a short
    message before each stage (the CLI drives a progress bar with it).
    """
    folder = Path(folder)
    say = progress or (lambda message: None)
    loaders = data.torch_loaders(split, batch_size=64, seed=recipe.seed)

    say("train the baseline")
    baseline = cnn(seed=recipe.seed)
    train.fit(baseline, loaders["train"], loaders["val"], epochs=recipe.epochs, seed=recipe.seed, progress=False)
    say("export the baseline")
    baseline_files = deploy.build_artefacts(baseline, split, folder / "baseline", int8=False)

    say("train the half-width design")
    small = cnn(recipe.design_channels, recipe.design_hidden, seed=recipe.seed)
    train.fit(small, loaders["train"], loaders["val"], epochs=recipe.design_epochs, seed=recipe.seed, progress=False)
    say("export the design")
    design_files = deploy.build_artefacts(small, split, folder / "design", int8=False)

    say("prune and fine-tune")
    pruned = cnn(recipe.design_channels, recipe.design_hidden, seed=None)
    pruned.load_state_dict(small.state_dict())
    prune.prune_and_finetune(pruned, loaders["train"], loaders["val"], target=recipe.sparsity,
                             steps=recipe.prune_steps, epochs_per_step=recipe.finetune_epochs)
    say("quantize and export")
    pruned_files = deploy.build_artefacts(pruned, split, folder / "pruned", int8=True)

    say("measure every step")
    reference = train.predict_logits(baseline, split.x_test)
    records = measure_steps([
        ("baseline", baseline, baseline_files),
        ("design", small, design_files),
        ("pruned", pruned, {k: v for k, v in pruned_files.items() if k.endswith("fp32")}),
        ("int8", None, {k: v for k, v in pruned_files.items() if k.endswith("int8")}),
    ], split, reference)
    return records, {"baseline": baseline, "design": small, "pruned": pruned}


# --- the budget ----------------------------------------------------------------------------------


def check_budget(records: list[Record], budget: Budget = Budget()) -> Any:
    """One row per record: size ratio, speedup and top-1 change against the baseline in the same runtime.

    Columns ``size_ok``, ``speed_ok``, ``accuracy_ok`` and ``meets_budget``
    say which budget lines the record meets.
    """
    import pandas as pd

    baselines = {r.framework: r for r in records if step_of(r) == "baseline"}
    rows = []
    for record in records:
        base = baselines.get(record.framework)
        if base is None:
            raise ValueError(f"no baseline record for runtime {record.framework!r}")
        row = {
            "step": step_of(record), "runtime": record.framework, "format": record.format,
            "gzip_bytes": record.gzip_bytes, "size_ratio": base.gzip_bytes / record.gzip_bytes,
            "raw_size_ratio": base.bytes / record.bytes,
            "latency_ms": record.latency_ms, "speedup": base.latency_ms / record.latency_ms,
            "top1": record.top1, "top1_change": record.top1 - base.top1,
        }
        row["size_ok"] = row["size_ratio"] >= budget.size_ratio
        row["speed_ok"] = row["speedup"] >= budget.speedup
        row["accuracy_ok"] = row["top1_change"] >= -budget.max_top1_drop - 1e-9
        row["meets_budget"] = row["size_ok"] and row["speed_ok"] and row["accuracy_ok"]
        rows.append(row)
    return pd.DataFrame(rows)


def best_artefact(table: Any) -> Any:
    """The file to ship: of those meeting the whole budget, the one with the largest speedup (then the smallest).

    Every file that meets the budget is already small enough; speed is what
    still tells them apart. If none meets it, the file meeting the most
    budget lines, then the smallest.
    """
    files = table[table["runtime"] != "pytorch"]
    meeting = files[files["meets_budget"]]
    if len(meeting):
        return meeting.sort_values(["speedup", "size_ratio"], ascending=False).iloc[0]
    lines_met = files[["size_ok", "speed_ok", "accuracy_ok"]].sum(axis=1)
    return files.assign(lines=lines_met).sort_values(["lines", "size_ratio"], ascending=False).iloc[0]


# --- the graded capstone: the grader's own measurement -------------------------------------------

#: Largest artefact the grader accepts (bytes).
MAX_ARTEFACT_BYTES = 4 << 20  # the grader's protocol carries at most 4 M array elements
FORMATS = (".pte", ".onnx", ".tflite")


def exercise_split() -> data.Split:
    """The digits split of the graded capstone: the lectures' train and val, and *half* of their test set.

    The other half (:func:`holdout`) is what the grader scores accuracy on.
    It is held out by convention, not secrecy — scikit-learn ships all 1,797
    images — so that accuracy is measured on images no choice was tuned on.
    """
    split = data.load_digits()
    split.x_test, split.y_test = split.x_test[0::2].copy(), split.y_test[0::2].copy()
    split.name = "digits8-capstone"
    return split


def holdout() -> tuple[np.ndarray, np.ndarray]:
    """The grader's hold-out images and labels (225; the half of the test set :func:`exercise_split` leaves out)."""
    split = data.load_digits()
    return split.x_test[1::2].copy(), split.y_test[1::2].copy()


def artefact_payload(path: str | Path) -> dict[str, Any]:
    """A learner's artefact as data the grader can take: ``{"format": ".pte", "data": uint8 array}``.

    Runs in the learner's process. An ``.onnx`` with external weights is
    packed into one file first, so what the grader measures is the whole model.
    """
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"the artefact must be a {', '.join(FORMATS)} file, got {path.name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no artefact at {path}: save your compressed model there first")
    if path.suffix == ".onnx":
        import onnx

        blob = onnx.load(str(path)).SerializeToString()  # external data is loaded into the proto
    else:
        blob = path.read_bytes()
    if len(blob) > MAX_ARTEFACT_BYTES:
        raise ValueError(f"{path.name} has {len(blob):,} bytes; the grader accepts at most {MAX_ARTEFACT_BYTES:,}")
    return {"format": path.suffix, "data": np.frombuffer(blob, dtype=np.uint8)}


_BASELINE_LOCK = threading.Lock()
_BASELINE_DIR: dict[str, Path] = {}


def baseline_artefact(fmt: str) -> Path:
    """The fp32 baseline CNN as a ``fmt`` file, built once per process (weights do not change latency)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    with _BASELINE_LOCK:
        if fmt not in _BASELINE_DIR:
            folder = Path(tempfile.mkdtemp(prefix="capstone-baseline-"))
            model = cnn(seed=0)
            example = torch.as_tensor(data.load_digits().x_train[:32])
            if fmt == ".pte":
                path = deploy.export_executorch(model, example, folder / "baseline.pte")
            elif fmt == ".onnx":
                from course_lib.onnx_io import export_onnx

                path = export_onnx(model, example, folder / "baseline.onnx", external_data=False)
            else:
                from course_lib import tflite
                from course_lib.models.keras_twin import keras_twin_of

                path = folder / "baseline.tflite"
                tflite.convert_keras(keras_twin_of(model), "fp32", path=path)
            _BASELINE_DIR[fmt] = path
        return _BASELINE_DIR[fmt]


def measure_for_grading(
    path: str | Path, baseline: str | Path, on: str = "holdout", rounds: int = 5, repeats: int = 100,
) -> dict[str, Any]:
    """Size, latency ratio to ``baseline`` and top-1 of one artefact (runs in a child process).

    ``on`` is ``"holdout"`` (the grader) or ``"test"`` (the exercise's own
    test half, for a learner checking their work).

    Latency is batch 1 on one thread, the artefact and the baseline timed in
    alternating rounds so that a busy machine slows both alike; the speedup
    is the ratio of their medians.
    """
    from course_lib.measure import measure_latency_interleaved

    path, baseline = Path(path), Path(baseline)
    if on not in ("holdout", "test"):
        raise ValueError(f"on must be 'holdout' or 'test', got {on!r}")
    if on == "holdout":
        x, y = holdout()
    else:
        split = exercise_split()
        x, y = split.x_test, split.y_test
    x_run = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if path.suffix == ".tflite" else x
    with deploy.executorch_threads(1 if path.suffix == ".pte" else None):
        model = deploy.load_artefact(path)
        reference = deploy.load_artefact(baseline)
        logits = np.asarray(model.predict(x_run))
        if logits.shape != (len(y), 10):
            raise ValueError(f"the artefact returned logits of shape {logits.shape}; expected ({len(y)}, 10)")
        stats = measure_latency_interleaved({"ours": (model, x_run[:1]), "baseline": (reference, x_run[:1])},
                                            rounds=rounds, repeats=repeats, threads=1)
    raw, gz = deploy.artefact_bytes(path)
    _, base_gz = deploy.artefact_bytes(baseline)
    latency, base_latency = stats["ours"].median_ms, stats["baseline"].median_ms
    return {
        "format": path.suffix, "bytes": raw, "gzip_bytes": gz, "baseline_gzip_bytes": base_gz,
        "latency_ms": latency, "baseline_latency_ms": base_latency, "speedup": base_latency / latency,
        "top1": float((logits.argmax(1) == y).mean()), "evaluated_on": on, "images": int(len(y)),
    }


def _under_grader() -> bool:
    from course_lib.grading import checks

    return checks._recorder() is not None


def grade_artefact(payload: Any, timeout_s: float = 180.0) -> dict[str, Any]:
    """The grader's measurement of a learner's artefact (a dict from :func:`artefact_payload`).

    Under the course's grader, accuracy is measured on the hold-out half of
    the test set (:func:`holdout`); in a learner's own notebook, on the
    half the learner has (``exercise_split().x_test``), so the hold-out
    stays unseen. The bytes (and the grader's baseline file) are measured
    by :func:`measure_for_grading` in a fresh process confined like a
    submission (:func:`course_lib.grading.sandbox.run_confined`: its own uid
    and private mounts when grading as root, limits, a timeout): the file
    is untrusted input to native parsers, so a file that crashes or hangs a
    runtime costs the learner the checks, and nothing it could exploit runs
    with the grader's privileges. Returns the measurements, or
    ``{"error": "..."}`` saying what went wrong.
    """
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS or not isinstance(payload.get("data"), np.ndarray):
        return {"error": "no artefact: the submission must set ARTEFACT to the path of a .pte, .onnx or .tflite file"}
    blob = np.asarray(payload["data"])
    if blob.size > MAX_ARTEFACT_BYTES or blob.size == 0 or blob.min() < 0 or blob.max() > 255:
        return {"error": "the artefact is empty, too large or not bytes"}
    from course_lib.grading.sandbox import Limits, run_confined

    fmt = payload["format"]
    files = {f"submission{fmt}": blob.astype(np.uint8).tobytes(), f"baseline{fmt}": baseline_artefact(fmt).read_bytes()}
    code = ("import json, sys, course_lib as cl; cl.setup(threads=1); from course_lib import capstone; "
            "print('RESULT' + json.dumps(capstone.measure_for_grading(*sys.argv[1:4])))")
    on = "holdout" if _under_grader() else "test"
    repository = library_root()
    hide = [repository / name for name in ("solutions", "tests") if (repository / name).is_dir()]
    returncode, stdout, stderr = run_confined(["-c", code, f"submission{fmt}", f"baseline{fmt}", on], files,
                                              Limits(timeout_s=timeout_s), hide)
    if returncode is None:
        return {"error": f"measuring the artefact took longer than {timeout_s:.0f} s"}
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT")]
    if returncode != 0 or not lines:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), f"exit code {returncode}")
        return {"error": f"the artefact could not be run: {last[:300]}"}
    return json.loads(lines[-1][len("RESULT"):])


def describe(result: dict[str, Any], accuracy: bool = True) -> str:
    """One line of the grader's measurement, for feedback and for the learner's own check.

    ``accuracy=False`` leaves top-1 out (feedback on size and speed must not
    reveal the hold-out score).
    """
    if "error" in result:
        return result["error"]
    text = (f"measured {result['format']}: {result['gzip_bytes']:,} B gzip (fp32 baseline {result['baseline_gzip_bytes']:,} B); "
            f"{result['latency_ms']:.3f} ms vs baseline {result['baseline_latency_ms']:.3f} ms ({result['speedup']:.2f}× faster)")
    return text + (f"; top-1 {result['top1']:.3f} on the {result['evaluated_on']} images" if accuracy else "")


# --- the results report (``python -m course_lib report``) ----------------------------------------

README_START = "<!-- capstone-results:start (written by `python -m course_lib report` from results/summary.json) -->"
README_END = "<!-- capstone-results:end -->"


def budget_markdown(records: list[Record], budget: Budget = Budget()) -> str:
    """The budget table: every record against the baseline in its runtime, with ✓ / ✗ per budget line."""
    table = check_budget(records, budget)
    lines = ["| step | runtime | file | gzip bytes | × smaller (gzip) | × smaller (raw) | ms, batch 1 | × faster | top-1 | Δ top-1 (points) | budget |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in table.itertuples(index=False):
        marks = "".join("✓" if ok else "✗" for ok in (row.size_ok, row.speed_ok, row.accuracy_ok))
        lines.append(
            f"| {row.step} | {row.runtime} | {row.format} | {row.gzip_bytes:,} | {row.size_ratio:.1f} | "
            f"{row.raw_size_ratio:.1f} | {row.latency_ms:.3f} | {row.speedup:.2f} | {row.top1:.3f} | "
            f"{100 * row.top1_change:+.1f} | {marks}{' **met**' if row.meets_budget else ''} |"
        )
    return "\n".join(lines)


def verdict(records: list[Record], budget: Budget = Budget()) -> str:
    """One paragraph: which artefact is best and which budget lines it meets, in measured figures."""
    best = best_artefact(check_budget(records, budget))
    lines = {"size": best.size_ok, "speed": best.speed_ok, "accuracy": best.accuracy_ok}
    state = "meets every budget line" if best.meets_budget else \
        "meets " + (", ".join(k for k, v in lines.items() if v) or "no budget line") + " only"
    return (f"Best artefact: **{best.step} {best.format} in {best.runtime}**, {best.gzip_bytes:,} B gzip "
            f"({best.size_ratio:.1f}× smaller than its fp32 baseline; {best.raw_size_ratio:.1f}× raw), "
            f"{best.speedup:.2f}× faster at batch 1 on one thread, top-1 {best.top1:.3f} "
            f"({100 * best.top1_change:+.1f} points): it {state} "
            f"(budget: ≥ {budget.size_ratio:g}× smaller gzip, ≥ {budget.speedup:g}× faster, "
            f"≤ {100 * budget.max_top1_drop:g} point top-1 drop).")


def summary_markdown(results: dict[str, Any]) -> str:
    """``results/summary.md``: how it was produced, the budget table, the verdict, the full records."""
    from course_lib.report import to_markdown

    records = [Record.from_dict(r) for r in results["records"]]
    budget = Budget(**results["budget"])
    machine = results["machine"]
    return "\n".join([
        "# Capstone results",
        "",
        f"Produced by `{results['command']}` on {results['date']} in {results['seconds']:.0f} s; "
        f"machine: {machine['cpu']}, {machine['cores']} cores; {machine['versions']}.",
        "",
        "## Against the budget (each row compared with the fp32 baseline in the same runtime)",
        "",
        budget_markdown(records, budget),
        "",
        verdict(records, budget),
        "",
        "Budget columns: size / speed / accuracy. Latency: median of interleaved rounds, batch 1, one thread.",
        "",
        "## Every record",
        "",
        to_markdown(records),
        "",
        "![top-1 against size and latency](tradeoffs.png)",
        "",
    ])


def readme_section(results: dict[str, Any]) -> str:
    """The README's results block, rendered from ``results/summary.json``."""
    records = [Record.from_dict(r) for r in results["records"]]
    budget = Budget(**results["budget"])
    machine = results["machine"]
    return "\n".join([
        README_START,
        budget_markdown(records, budget),
        "",
        verdict(records, budget),
        "",
        f"Measured by `{results['command']}` ({results['seconds']:.0f} s) on {results['date']}: "
        f"{machine['cpu']}, {machine['cores']} cores; {machine['versions']}. "
        "Source: [`results/summary.json`](results/summary.json); table and plots: [`results/summary.md`](results/summary.md).",
        README_END,
    ])


def update_readme(readme: str | Path, results: dict[str, Any]) -> bool:
    """Replace the results block between the markers in ``readme``; return whether it changed."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no results block; add the two marker lines:\n{README_START}\n{README_END}")
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    new = before + readme_section(results) + after
    readme.write_text(new, encoding="utf-8")
    return new != text


def write_results(records: list[Record], folder: str | Path, meta: dict[str, Any], budget: Budget = Budget()) -> dict[str, Path]:
    """Write ``summary.json`` (records + how they were made), ``summary.md`` and ``tradeoffs.png`` into ``folder``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from course_lib.report import plot_tradeoffs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    results = dict(meta, budget=asdict(budget), records=[r.to_dict() for r in records])
    paths = {"json": folder / "summary.json", "markdown": folder / "summary.md", "plot": folder / "tradeoffs.png"}
    paths["json"].write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(summary_markdown(results), encoding="utf-8")
    figure = plot_tradeoffs(records, label=lambda r: step_of(r) if r.framework == "executorch" else None, connect=True)
    figure.savefig(paths["plot"], dpi=110)
    plt.close(figure)
    return paths


def load_results(path: str | Path) -> dict[str, Any]:
    """Read ``summary.json``; a clear error if it is missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}: run `python -m course_lib report` first")
    results = json.loads(path.read_text(encoding="utf-8"))
    missing = {"command", "date", "seconds", "machine", "budget", "records"} - set(results)
    if missing:
        raise ValueError(f"{path} is not a capstone results file (missing {sorted(missing)})")
    return results
