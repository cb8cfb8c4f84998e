"""One record per measured model variant, and the tables built from lists of them.

Every lecture ends with a table of variants (fp32, pruned, int8, ONNX, ...);
they all use :class:`Record`, so the capstone can put any of them side by side.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class Record:
    """What was measured of one variant of a model. Leave unknown fields ``None``.

    Attributes:
        name: a short label, e.g. ``"cnn fp32"`` or ``"cnn int8 (PT2E)"``.
        framework: ``"pytorch"``, ``"keras"``, ``"onnxruntime"``, ``"litert"``, ``"executorch"``.
        format: the artefact, e.g. ``"state_dict"``, ``".onnx"``, ``".tflite"``, ``".pte"``.
        bytes / gzip_bytes: artefact size raw and gzip-compressed.
        params / nonzero_params / macs: counts from :mod:`course_lib.measure`.
        latency_ms / latency_p90_ms: median and p90 per call.
        latency_min_ms / latency_max_ms: the lowest and highest per-round median
            when timed in interleaved rounds (the spread a re-run shows).
        wrapper_overhead_ms: what the course's Python wrapper adds to the
            runtime's own call (conversion, layout, int8 quantization), if timed.
        threads / batch_size: the conditions the latency was measured in.
        cold_start_ms: load + first call in a fresh process of its own.
        peak_memory_bytes: memory growth of loading and running it once
            (in a fresh process when measured by :mod:`course_lib.runtimes`).
        latency_rounds_ms: the per-round medians (pair two records' rounds for a ratio interval).
        top1 / top5: accuracy on the test split; top1_low / top1_high its 95 %
            interval (Wilson) over ``images`` test images.
        top1_delta (_low / _high): top-1 minus a reference model's on the same
            images, with a paired bootstrap 95 % interval.
        step: the pipeline step the record belongs to (e.g. the capstone's).
        notes: anything a reader must know to trust the row.
    """

    name: str
    framework: str = "pytorch"
    format: str | None = None
    bytes: int | None = None
    gzip_bytes: int | None = None
    params: int | None = None
    nonzero_params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    latency_rounds_ms: list[float] | None = None
    wrapper_overhead_ms: float | None = None
    threads: int | None = None
    batch_size: int | None = None
    cold_start_ms: float | None = None
    peak_memory_bytes: int | None = None
    top1: float | None = None
    top1_low: float | None = None
    top1_high: float | None = None
    top1_delta: float | None = None
    top1_delta_low: float | None = None
    top1_delta_high: float | None = None
    top5: float | None = None
    images: int | None = None
    step: str | None = None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Record fields: {sorted(unknown)}")
        return cls(**data)


def to_frame(records: Iterable[Record], drop_empty: bool = True) -> Any:
    """A pandas DataFrame with one row per record; columns that are empty in every row dropped."""
    import pandas as pd

    rows = [r.to_dict() for r in records]
    if not rows:
        raise ValueError("no records to tabulate")
    frame = pd.DataFrame(rows)
    if "latency_rounds_ms" in frame:  # raw per-round values: for computing, not for reading in a table
        frame = frame.drop(columns="latency_rounds_ms")
    if drop_empty:
        frame = frame.dropna(axis=1, how="all")
        if "notes" in frame and (frame["notes"] == "").all():
            frame = frame.drop(columns="notes")
    return frame


def _format(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if column.startswith(("top1", "top5")) and isinstance(value, float):
        return f"{value:.3f}"
    if column.endswith("_ms") and isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:.4g}"
    return str(value)


def to_markdown(records: Iterable[Record]) -> str:
    """A GitHub-flavoured Markdown table of the records (no extra dependency)."""
    frame = to_frame(records)
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in frame.itertuples(index=False):
        cells = [_format(None if _isnan(v) else (int(v) if _is_int_column(frame, c) else v), c) for v, c in zip(row, columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _is_int_column(frame: Any, column: str) -> bool:
    return column in {"bytes", "gzip_bytes", "params", "nonzero_params", "macs", "threads", "batch_size", "peak_memory_bytes",
                      "images"}


def save_json(records: Iterable[Record], path: str | Path) -> Path:
    """Write records as a JSON list (the source of the README's results table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_dict() for r in records], indent=2) + "\n", encoding="utf-8")
    return path


def load_json(path: str | Path) -> list[Record]:
    """Read records written by :func:`save_json`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no records file at {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of records")
    return [Record.from_dict(d) for d in data]


def plot_tradeoffs(records: Iterable[Record], group: Any = None, label: Any = None, connect: bool = False) -> Any:
    """Two panels: top-1 against gzip size (kB, log scale) and top-1 against batch-1 latency (ms).

    ``group(record)`` picks a series (e.g. the runtime; one marker each);
    ``label(record)`` the text next to a point (default: the name; ``None``
    or ``""`` for no text). With ``connect`` a series' points are joined in
    the order given (e.g. the steps of a pipeline). Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    records = list(records)
    group = group or (lambda r: r.framework)
    label = label or (lambda r: r.name)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    markers = iter("osD^v<>p*")
    for key in dict.fromkeys(group(r) for r in records):
        members = [r for r in records if group(r) == key and r.top1 is not None]
        marker = next(markers, "o")
        for ax, cost, scale in zip(axes, ("gzip_bytes", "latency_ms"), (1e-3, 1.0)):
            points = [(getattr(r, cost) * scale, r.top1, label(r)) for r in members if getattr(r, cost) is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, linestyle="-" if connect else "",
                    alpha=0.8, label=key)
            for x, y, text in points:
                if text:
                    ax.annotate(text, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set_xscale("log")
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    axes[0].set_xlabel("gzip kB (download size, log scale)")
    axes[1].set_xlabel("median latency, ms (batch 1, one thread)")
    for ax in axes:
        ax.set_ylabel("test top-1")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# --- budget tables (rendered from a budget table, e.g. ``capstone.check_budget``) ---------------------

_MARK = {"met": "✓", "not met": "✗", "inconclusive": "?"}


def budget_markdown(table: Any) -> str:
    """Every record against the budget in absolute terms: ✓ met, ✗ not met, ? inconclusive (size / speed / accuracy).

    Speed is against the fastest fp32 deployable file of the baseline, with
    the 95 % interval of the ratio paired by interleaved round; latency shows
    the median and the range of per-round medians; accuracy the top-1 change
    against the baseline on the same images with its paired interval.
    """
    lines = ["| step | runtime | file | gzip bytes | × smaller (gzip) | ms, batch 1 (round range) | × faster than fastest fp32 [95 % CI] "
             "| top-1 [95 % CI] | Δ top-1, points [95 % CI] | size / speed / accuracy |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in table.itertuples(index=False):
        marks = "".join(_MARK[v] for v in (row.size, row.speed, row.accuracy))
        top1 = f"{row.top1:.3f}" + (f" [{row.top1_low:.3f}, {row.top1_high:.3f}]" if row.top1_low == row.top1_low and
                                     row.top1_low is not None else "")
        lines.append(
            f"| {row.step} | {row.runtime} | {row.format} | {row.gzip_bytes:,} | {row.size_ratio:.1f} | "
            f"{row.latency_ms:.3f} ({row.latency_min_ms:.3f}–{row.latency_max_ms:.3f}) | "
            f"{row.speedup:.2f} [{row.speedup_low:.2f}, {row.speedup_high:.2f}] | {top1} | "
            f"{100 * row.top1_change:+.1f} [{100 * row.top1_change_low:+.1f}, {100 * row.top1_change_high:+.1f}] | "
            f"{marks} **{row.verdict}** |"
        )
    return "\n".join(lines)


def within_runtime_markdown(table: Any) -> str:
    """The second view: each file's speedup over the baseline file *of its own runtime* (with its interval).

    Fair when the platform fixes the runtime; misleading for choosing
    between runtimes, where a slow baseline inflates the ratio.
    """
    lines = ["| step | runtime | file | ms, batch 1 | × faster than the same runtime's baseline [95 % CI] |",
             "|---|---|---|---:|---:|"]
    for row in table.itertuples(index=False):
        lines.append(f"| {row.step} | {row.runtime} | {row.format} | {row.latency_ms:.3f} | "
                     f"{row.within_speedup:.2f} [{row.within_speedup_low:.2f}, {row.within_speedup_high:.2f}] |")
    return "\n".join(lines)
