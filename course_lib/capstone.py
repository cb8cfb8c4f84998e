"""Lecture 12, the capstone: compress the course CNN to a budget, step by step, and report it fairly.

The pipeline (:func:`run_pipeline`) applies what the lectures before it taught, one
step at a time, and measures every step the same way
(:func:`course_lib.runtimes.measure`) into :class:`~course_lib.report.Record` s:

1. **baseline** — the course CNN (32/64 channels), fp32;
2. three ways to a **half-width** CNN (16/32 channels, ~3.8× fewer MACs: the
   step that buys speed), each trained for the *same* number of epochs as
   the baseline (an equal training budget):

   * **design** — trained from scratch (lecture 01);
   * **distilled** — trained from scratch against the baseline's soft
     targets (:func:`course_lib.distill.distill`, lecture 07);
   * **channel** — the baseline with half of its convolution channels removed
     (:func:`course_lib.prune.channel_prune`, lecture 03), then fine-tuned;

   the one with the best *validation* top-1 goes on (a rule fixed before any
   test image is looked at) and is exported to every runtime;
3. **pruned** — global magnitude pruning of that model, fine-tuned (the zeros
   make the file compress; they do not make it faster);
4. **int8** — post-training static quantization of the pruned model.

The baseline and the chosen half-width model are measured as PyTorch models
(``state_dict``) and as the files the three runtimes ship: ExecuTorch
``.pte``, ONNX Runtime ``.onnx`` and LiteRT ``.tflite``; the other two
half-width models as PyTorch models only (same architecture, so the same
latency: only their accuracy differs); the pruned model like the baseline;
int8 as the three files. The workload is digits upsampled to 28×28
(``Recipe.image_size``), where the convolutions, not the Python call, take
most of a batch-1 call. :func:`check_budget` judges every record:

* size — gzip bytes against the baseline file *in the same format*;
* speed — against the **fastest fp32 deployable file of the baseline**, in
  absolute time (a speedup over a slow runtime is not a speedup), with a
  bootstrap interval paired by interleaved round; the within-runtime ratio
  is kept as a second view;
* accuracy — top-1 change against the baseline on the same images, with a
  paired bootstrap interval;

and every line is "met", "not met" or "inconclusive" (the interval crosses
the line). The pruned model gets ``prune_steps × finetune_epochs`` of
fine-tuning on top of its step's budget, and the channel-pruned model starts
from the baseline's training (both stated in the results).

The graded capstone (exercise 12) scores a learner's artefact with
:func:`course_lib.grading.artefact.grade_artefact`: the grader measures size,
latency and accuracy on a hold-out split itself, in a separate confined
process, against the fastest of the fp32 baseline files it builds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib import data, deploy, distill, prune, runtimes, stats, train
from course_lib.models.cnn import SmallCNN
from course_lib.report import Record

#: Steps of the pipeline, in order.
STEPS = ("baseline", "design", "distilled", "channel", "pruned", "int8")
#: The three half-width variants (same architecture, same training budget); the best on validation goes on.
HALF_WIDTH = ("design", "distilled", "channel")
#: Runtime labels used in record names, by framework.
RUNTIME_LABELS = {"pytorch": "PyTorch", "executorch": "ExecuTorch", "onnxruntime": "ONNX Runtime", "litert": "LiteRT"}


@dataclass(frozen=True)
class Budget:
    """What "compressed enough" means.

    Attributes:
        size_ratio: the baseline file's gzip bytes / the artefact's gzip bytes, same
            format, at least this (gzip: a proxy for what a download costs).
        speedup: latency of the fastest fp32 deployable file of the baseline /
            the artefact's latency (batch 1, one thread, runtime only), at least this.
        max_top1_drop: top-1 may fall by at most this much against the baseline
            on the same images (0.01 = one point).
        speed_tolerance: how far (relative) a speed ratio moves between runs of
            the whole pipeline (fresh processes, another moment's load), beyond
            its within-run interval. The within-run interval pairs rounds of one
            process, so it is narrower than what a re-run shows; the speed
            verdict widens it by this much on both sides (:func:`speed_interval`),
            so that a ratio a re-run could move across the line reads
            "inconclusive" instead of flipping. 0.10: between two independent
            runs of the pipeline here (lecture 12 and ``python -m course_lib
            report``, a load average of ~20), the largest move of a speedup was
            7 % (the eager baseline, 0.44× → 0.41×; 4 % for a deployable file).
            Re-check on another machine with ``benchmarks/capstone_ratios.py --repeat 3``.
    """

    size_ratio: float = 10.0
    speedup: float = 1.5
    max_top1_drop: float = 0.01
    speed_tolerance: float = 0.10


def speed_interval(ratio: stats.Interval, tolerance: float) -> stats.Interval:
    """``ratio``'s interval widened by ``tolerance`` on each side (multiplicatively: ratios move by a factor)."""
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"speed_tolerance must be in [0, 1), got {tolerance}")
    return stats.Interval(ratio.estimate, ratio.low * (1 - tolerance), ratio.high * (1 + tolerance), ratio.level)


@dataclass(frozen=True)
class Recipe:
    """The pipeline's settings; the defaults are the lecture's (chosen before looking at test accuracy).

    Every model trains for ``epochs`` (an equal budget): the baseline and the
    design from scratch, the distilled student from scratch against the
    baseline, the channel-pruned model as fine-tuning after the cut (it
    starts from the baseline's trained weights — what channel pruning is for).
    Unstructured pruning adds ``prune_steps × finetune_epochs`` to the chosen
    half-width model.
    """

    epochs: int = 5
    image_size: int = 28
    design_channels: tuple[int, int] = (16, 32)
    design_hidden: int = 32
    temperature: float = 4.0
    alpha: float = 0.9
    sparsity: float = 0.7
    prune_steps: int = 2
    finetune_epochs: int = 1
    seed: int = 0
    rounds: int = 7
    repeats: int = 50


def cnn(channels: tuple[int, int] = (32, 64), hidden: int = 32, seed: int | None = 0, image_size: int = 8) -> SmallCNN:
    """A seeded :class:`SmallCNN` of any width (the baseline is ``channels=(32, 64)``)."""
    if seed is not None:
        torch.manual_seed(seed)
    return SmallCNN(image_size=image_size, channels=channels, hidden=hidden)


def _runtime_label(artefact_name: str) -> str:
    return artefact_name.replace(" fp32", "").replace(" int8", "")


def measure_steps(
    steps: list[tuple[str, nn.Module | None, dict[str, Path]]], split: data.Split, reference: np.ndarray,
    rounds: int = 7, repeats: int = 50, cold: bool = True,
) -> list[Record]:
    """Measure every step's PyTorch model and files with :func:`course_lib.runtimes.measure`, all on one thread.

    ``steps`` holds ``(step, model or None, {artefact name: path})``. Every
    model and file is timed runtime-only in the same ``rounds`` interleaved
    rounds (the course's wrapper cost apart, as ``wrapper_overhead_ms``);
    each file's cold start and memory come from a fresh process of its own;
    top-1 has its interval and its change against ``reference`` (the
    baseline's logits) a paired one.
    """
    unknown = [step for step, _, _ in steps if step not in STEPS]
    if unknown:
        raise ValueError(f"steps must be named from {STEPS} (the budget check compares with 'baseline'); got {unknown}")
    models: dict[str, runtimes.LoadedModel] = {}
    step_of_name: dict[str, str] = {}
    for step, model, artefacts in steps:
        if model is not None:
            models[f"{step} · PyTorch"] = runtimes.wrap(model, threads=1)
            step_of_name[f"{step} · PyTorch"] = step
        for artefact_name, path in artefacts.items():
            name = f"{step} · {_runtime_label(artefact_name)}"
            models[name] = runtimes.load(path, threads=1)
            step_of_name[name] = step
    return runtimes.measure(models, split.x_test, split.y_test, reference_logits=reference, rounds=rounds,
                            repeats=repeats, cold=cold, wrapper=True, steps=step_of_name)


def step_of(record: Record) -> str:
    """The pipeline step a record belongs to (its ``step``; older files: from its notes or name)."""
    candidates = [record.step or "", record.notes.split(";")[0].removeprefix("step ").strip(),
                  record.name.split(" · ")[0].strip()]
    for part in candidates:
        if part in STEPS:
            return part
    raise ValueError(f"record {record.name!r} is not from the capstone pipeline (no step in its name or notes)")


def at_resolution(split: data.Split, image_size: int) -> data.Split:
    """``split`` with every image bilinearly resized to ``image_size`` (itself if it already is)."""
    if split.input_shape[-1] == image_size:
        return split
    return dataclasses.replace(
        split, x_train=data.resize(split.x_train, image_size), x_val=data.resize(split.x_val, image_size),
        x_test=data.resize(split.x_test, image_size), name=f"{split.name}@{image_size}")


def channel_pruned(baseline: SmallCNN, recipe: Recipe = Recipe()) -> SmallCNN:
    """The baseline with its convolutions cut to ``recipe.design_channels`` by L1 magnitude (lecture 03), untrained.

    :func:`course_lib.prune.channel_prune` removes whole channels (and the
    inputs of the layers that read them); both dense layers keep their
    outputs, so the result has exactly the design's architecture and is
    rebuilt as a plain :class:`SmallCNN` (which the exporters and the Keras
    twin know).
    """
    first, second, hidden = baseline.features[0], baseline.features[2], baseline.classifier[1]
    if not (isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d) and isinstance(hidden, nn.Linear)):
        raise ValueError("channel_pruned needs the course's SmallCNN (conv, conv, linear, linear)")
    c1, c2 = first.out_channels, second.out_channels
    target = recipe.design_channels
    if target[0] * c2 != target[1] * c1 or not 0 < target[0] < c1:
        raise ValueError(f"channel pruning cuts both convolutions by one ratio: {(c1, c2)} → {target} is not one")
    ratio = 1.0 - target[0] / c1
    example = torch.zeros(1, baseline.in_channels, baseline.image_size, baseline.image_size)
    cut = prune.channel_prune(baseline, example, ratio=ratio,
                              ignored_layers=[baseline.classifier[1], baseline.classifier[3]])
    model = cnn(target, hidden.out_features, seed=None, image_size=baseline.image_size)
    model.load_state_dict(cut.state_dict())  # same layer names, and shapes that must match: a wrong cut fails here
    return model.eval()


def train_half_width(
    baseline: SmallCNN, loaders: dict[str, Any], recipe: Recipe = Recipe(),
) -> dict[str, tuple[SmallCNN, train.History]]:
    """The three half-width variants (:data:`HALF_WIDTH`), each trained for ``recipe.epochs``.

    design: cross-entropy from scratch; distilled: the same start, trained
    against the baseline's soft targets at ``recipe.temperature``; channel:
    :func:`channel_pruned` from the baseline, then fine-tuned with cross-entropy.
    """
    def fresh() -> SmallCNN:
        return cnn(recipe.design_channels, recipe.design_hidden, seed=recipe.seed, image_size=recipe.image_size)

    design, student = fresh(), fresh()
    cut = channel_pruned(baseline, recipe)
    epochs, seed = recipe.epochs, recipe.seed
    return {
        "design": (design, train.fit(design, loaders["train"], loaders["val"], epochs=epochs, seed=seed, progress=False)),
        "distilled": (student, distill.distill(student, baseline, loaders["train"], loaders["val"], epochs=epochs,
                                               temperature=recipe.temperature, alpha=recipe.alpha, seed=seed,
                                               progress=False)),
        "channel": (cut, train.fit(cut, loaders["train"], loaders["val"], epochs=epochs, seed=seed, progress=False)),
    }


def choose_half_width(variants: Mapping[str, tuple[nn.Module | None, train.History]]) -> str:
    """The variant with the best validation top-1 (ties: the first in :data:`HALF_WIDTH`); never the test set."""
    def best_val(name: str) -> float:
        history = variants[name][1]
        return max(history.val_top1) if history.val_top1 else float("-inf")

    names = [name for name in HALF_WIDTH if name in variants]
    if not names:
        raise ValueError(f"no half-width variant to choose from; expected some of {HALF_WIDTH}")
    return max(names, key=lambda name: (best_val(name), -names.index(name)))


def sparsify(model: SmallCNN, loaders: dict[str, Any], recipe: Recipe = Recipe()) -> tuple[SmallCNN, list[dict[str, float]]]:
    """A copy of ``model`` pruned to ``recipe.sparsity`` (global magnitude) with fine-tuning (lecture 03)."""
    pruned = cnn(recipe.design_channels, recipe.design_hidden, seed=None, image_size=recipe.image_size)
    pruned.load_state_dict(model.state_dict())
    history = prune.prune_and_finetune(pruned, loaders["train"], loaders["val"], target=recipe.sparsity,
                                       steps=recipe.prune_steps, epochs_per_step=recipe.finetune_epochs)
    return pruned.eval(), history


def run_pipeline(
    split: data.Split, folder: str | Path, recipe: Recipe = Recipe(),
    progress: Callable[[str], None] | None = None, cold: bool = True,
) -> tuple[list[Record], dict[str, nn.Module]]:
    """Baseline → three half-width variants → pruned → int8, each measured the same way.

    ``split`` is resized to ``recipe.image_size`` first. Returns the records
    (4 baseline, 3 + 3 half-width, 4 pruned, 3 int8 = 17) and the PyTorch
    models by step. ``progress`` is called with a short message before each
    stage (the CLI drives a progress bar with it); ``cold=False`` skips the
    fresh-process cold starts (the slowest part of measuring).
    """
    folder = Path(folder)
    say = progress or (lambda message: None)
    split = at_resolution(split, recipe.image_size)
    loaders = data.torch_loaders(split, batch_size=64, seed=recipe.seed)

    say("train the baseline")
    baseline = cnn(seed=recipe.seed, image_size=recipe.image_size)
    train.fit(baseline, loaders["train"], loaders["val"], epochs=recipe.epochs, seed=recipe.seed, progress=False)
    say("train the half-width variants")
    variants = train_half_width(baseline, loaders, recipe)
    chosen = choose_half_width(variants)
    say("prune and fine-tune")
    pruned, _ = sparsify(variants[chosen][0], loaders, recipe)
    say("export and quantize")
    baseline_files = deploy.build_artefacts(baseline, split, folder / "baseline", int8=False)
    chosen_files = deploy.build_artefacts(variants[chosen][0], split, folder / chosen, int8=False)
    pruned_files = deploy.build_artefacts(pruned, split, folder / "pruned", int8=True)

    say("measure every step")
    reference = train.predict_logits(baseline, split.x_test)
    steps: list[tuple[str, nn.Module | None, dict[str, Path]]] = [("baseline", baseline, baseline_files)]
    steps += [(name, model, chosen_files if name == chosen else {}) for name, (model, _) in variants.items()]
    steps += [("pruned", pruned, {k: v for k, v in pruned_files.items() if k.endswith("fp32")}),
              ("int8", None, {k: v for k, v in pruned_files.items() if k.endswith("int8")})]
    records = measure_steps(steps, split, reference, rounds=recipe.rounds, repeats=recipe.repeats, cold=cold)
    return records, {"baseline": baseline, **{name: model for name, (model, _) in variants.items()}, "pruned": pruned}


# --- the budget ----------------------------------------------------------------------------------


def _measured(record: Record, field_name: str) -> float:
    """A record's measured field, or a clear error: a budget cannot be checked against a value never measured."""
    value = getattr(record, field_name)
    if value is None:
        raise ValueError(f"record {record.name!r} has no {field_name}: measure it before checking the budget")
    return float(value)


def _ratio(reference: Record, record: Record) -> stats.Interval:
    """reference latency / record latency, with a bootstrap interval paired by round when both have rounds."""
    a, b = reference.latency_rounds_ms or [], record.latency_rounds_ms or []
    if len(a) >= 2 and len(a) == len(b):
        return stats.bootstrap_median_ratio(a, b)
    point = _measured(reference, "latency_ms") / _measured(record, "latency_ms")
    return stats.Interval(point, point, point)


def _top1_change(record: Record, base: Record) -> stats.Interval:
    if record.top1_delta is not None and record.top1_delta_low is not None and record.top1_delta_high is not None:
        return stats.Interval(record.top1_delta, record.top1_delta_low, record.top1_delta_high)
    point = _measured(record, "top1") - _measured(base, "top1")
    return stats.Interval(point, point, point)


def fastest_fp32_deployable(records: list[Record]) -> Record:
    """The speed line's reference: the baseline's fastest file in any runtime (not the eager model)."""
    files = [r for r in records if step_of(r) == "baseline" and r.framework != "pytorch" and r.latency_ms]
    if not files:
        raise ValueError("no baseline file with a latency: the speed line needs the baseline's deployable files")
    return min(files, key=lambda r: float(r.latency_ms or 0.0))  # every file here has a latency (filtered above)


def check_budget(records: list[Record], budget: Budget = Budget()) -> Any:
    """One row per record: size, speed and accuracy against the budget, each with its verdict.

    Columns: ``size_ratio`` (gzip, same format), ``speedup`` with
    ``speedup_low`` / ``speedup_high`` (against the fastest fp32 deployable),
    ``within_speedup`` (+ interval; against the baseline in the same runtime),
    ``top1_change`` (+ interval); the verdicts ``size`` / ``speed`` /
    ``accuracy`` ("met", "not met", "inconclusive"), their booleans
    ``size_ok`` / ``speed_ok`` / ``accuracy_ok`` (met), ``meets_budget`` (all
    met) and ``verdict`` for the whole budget.
    """
    import pandas as pd

    baselines = {r.framework: r for r in records if step_of(r) == "baseline"}
    fastest = fastest_fp32_deployable(records)
    reference_top1 = baselines.get("pytorch", fastest)
    rows = []
    for record in records:
        base = baselines.get(record.framework)
        if base is None:
            raise ValueError(f"no baseline record for runtime {record.framework!r}")
        size_ratio = _measured(base, "gzip_bytes") / _measured(record, "gzip_bytes")
        speed, within = _ratio(fastest, record), _ratio(base, record)
        change = _top1_change(record, reference_top1)
        verdicts = {
            "size": stats.MET if size_ratio >= budget.size_ratio else stats.NOT_MET,  # bytes do not vary between runs
            "speed": stats.verdict(speed_interval(speed, budget.speed_tolerance), budget.speedup),
            "accuracy": stats.verdict(change, -budget.max_top1_drop - 1e-9),
        }
        overall = stats.MET if all(v == stats.MET for v in verdicts.values()) else (
            stats.NOT_MET if stats.NOT_MET in verdicts.values() else stats.INCONCLUSIVE)
        rows.append({
            "step": step_of(record), "runtime": record.framework, "format": record.format, "name": record.name,
            "gzip_bytes": record.gzip_bytes, "size_ratio": size_ratio, "raw_size_ratio": _measured(base, "bytes") / _measured(record, "bytes"),
            "latency_ms": record.latency_ms, "latency_min_ms": record.latency_min_ms or record.latency_ms,
            "latency_max_ms": record.latency_max_ms or record.latency_ms,
            "speedup": speed.estimate, "speedup_low": speed.low, "speedup_high": speed.high,
            "within_speedup": within.estimate, "within_speedup_low": within.low, "within_speedup_high": within.high,
            "top1": record.top1, "top1_low": record.top1_low, "top1_high": record.top1_high,
            "top1_change": change.estimate, "top1_change_low": change.low, "top1_change_high": change.high,
            **verdicts, **{f"{k}_ok": v == stats.MET for k, v in verdicts.items()},
            "meets_budget": overall == stats.MET, "verdict": overall,
        })
    return pd.DataFrame(rows)


def best_artefact(table: Any) -> Any:
    """The file to ship: the fastest (absolute latency) of those whose size and accuracy lines are met.

    If none has both met, the fastest whose size line is met and accuracy
    line is not "not met"; failing that, the smallest file.
    """
    files = table[table["runtime"] != "pytorch"]
    for mask in (files["size_ok"] & files["accuracy_ok"], files["size_ok"] & (files["accuracy"] != stats.NOT_MET)):
        if mask.any():
            return files[mask].sort_values(["latency_ms", "gzip_bytes"]).iloc[0]
    return files.sort_values(["gzip_bytes", "latency_ms"]).iloc[0]


# --- the results report (``python -m course_lib report``) ----------------------------------------

README_START = "<!-- capstone-results:start (written by `python -m course_lib report` from results/summary.json) -->"
README_END = "<!-- capstone-results:end -->"


def budget_markdown(records: list[Record], budget: Budget = Budget()) -> str:
    """The budget table in absolute terms (:func:`course_lib.report.budget_markdown` of :func:`check_budget`)."""
    from course_lib.report import budget_markdown as render

    return render(check_budget(records, budget))


def within_runtime_markdown(records: list[Record], budget: Budget = Budget()) -> str:
    """The within-runtime speedups (:func:`course_lib.report.within_runtime_markdown`), the second view."""
    from course_lib.report import within_runtime_markdown as render

    return render(check_budget(records, budget))


def _names(rows: Any) -> str:
    return ", ".join(f"{r.step} {r.format} in {r.runtime}" for r in rows.itertuples(index=False)) or "none"


def verdict(records: list[Record], budget: Budget = Budget()) -> str:
    """One paragraph: the best artefact and each budget line's verdict, in measured figures with intervals."""
    table = check_budget(records, budget)
    best = best_artefact(table)
    fastest = fastest_fp32_deployable(records)
    files = table[table["runtime"] != "pytorch"]
    state = {stats.MET: "meets every budget line", stats.NOT_MET: "does not meet the budget",
             stats.INCONCLUSIVE: "cannot be said to meet the budget or not (an interval crosses a line)"}[best.verdict]
    text = (f"Best artefact (the fastest file whose size and accuracy lines hold): **{best.step} {best.format} in "
            f"{best.runtime}**, {best.gzip_bytes:,} B gzip ({best.size_ratio:.1f}× smaller than its fp32 baseline), "
            f"{best.latency_ms:.3f} ms at batch 1 on one thread, {best.speedup:.2f}× "
            f"[{best.speedup_low:.2f}, {best.speedup_high:.2f}] faster than the fastest fp32 file of the baseline "
            f"({fastest.name}, {fastest.latency_ms:.3f} ms), top-1 {best.top1:.3f} "
            f"({100 * best.top1_change:+.1f} [{100 * best.top1_change_low:+.1f}, {100 * best.top1_change_high:+.1f}] points): "
            f"size {best['size']}, speed {best['speed']}, accuracy {best['accuracy']} — it {state} "
            f"(budget: ≥ {budget.size_ratio:g}× smaller gzip, ≥ {budget.speedup:g}× faster than the fastest fp32 "
            f"deployable, ≤ {100 * budget.max_top1_drop:g} point top-1 drop; 95 % intervals, the speed interval widened "
            f"by ±{100 * budget.speed_tolerance:g} % for the variation between runs).")
    if not best.meets_budget:
        fast = files[files["speed"] == stats.MET]
        text += (f" Files whose speed line is met: {_names(fast)}; files meeting size and accuracy: "
                 f"{_names(files[files['size_ok'] & files['accuracy_ok']])}.")
    return text


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
        "## Against the budget",
        "",
        *_budget_block(records, budget),
        "",
        "## Within each runtime (second view: fair only when the platform fixes the runtime)",
        "",
        within_runtime_markdown(records, budget),
        "",
        "## Every record",
        "",
        to_markdown(records),
        "",
        "![top-1 against size and latency](tradeoffs.png)",
        "",
    ])


def _budget_block(records: list[Record], budget: Budget) -> list[str]:
    """The budget table, the verdict and the legend: what both summary.md and the README show."""
    return [budget_markdown(records, budget), "", verdict(records, budget), "", _legend(records)]


def _legend(records: list[Record]) -> str:
    threads = sorted({r.threads for r in records if r.threads is not None})
    images = sorted({r.images for r in records if r.images})
    return (f"Columns size / speed / accuracy: ✓ met, ✗ not met, ? inconclusive (the 95 % interval crosses the line). "
            f"Latency: runtime-only (the course's Python wrapper timed apart), batch 1, "
            f"{'/'.join(map(str, threads)) or '?'} thread(s) in every runtime, median of interleaved rounds with the "
            f"range of per-round medians; top-1 on {'/'.join(map(str, images)) or '?'} test images; cold start and "
            "memory (table below) from a fresh process per file — ExecuTorch's Python bindings import PyTorch, so its "
            "figures include PyTorch's, which an app linking the C++ runtime would not load.")


def readme_section(results: dict[str, Any]) -> str:
    """The README's results block, rendered from ``results/summary.json``."""
    records = [Record.from_dict(r) for r in results["records"]]
    budget = Budget(**results["budget"])
    machine = results["machine"]
    return "\n".join([
        README_START,
        *_budget_block(records, budget),
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
