"""Choosing a model under a budget (lecture 01): measure candidates, find the Pareto front, pick.

A *candidate* is a model and the data resolution it runs at. :func:`measure_candidate`
trains it briefly on the same data as every other candidate and measures it the same
way, into a :class:`~course_lib.report.Record`. :func:`pareto_front` keeps the candidates
that no other candidate beats on both cost and accuracy; :func:`best_under_budget` picks
the most accurate candidate whose costs all stay within a budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from course_lib import data, train
from course_lib.report import Record

COSTS = ("macs", "params", "bytes", "latency_ms")


def measure_candidate(
    name: str, model: nn.Module, split: data.Split, epochs: int = 20, lr: float = 3e-3, seed: int = 0,
    latency_repeats: int = 100, on: str = "val",
) -> Record:
    """Train ``model`` on ``split`` and measure params, MACs, bytes, latency (1 thread, batch 1) and top-1.

    Top-1 (with its interval) is measured on the **validation** images by
    default: candidates are *chosen* on validation, and only the chosen one
    is scored on the test images, once (``on="test"``), so that the
    reported accuracy is not the maximum of several noisy test scores. The
    measurement is :func:`course_lib.runtimes.measure`, the same one the
    capstone uses for every model and file.
    """
    from course_lib import runtimes

    if on not in ("val", "test"):
        raise ValueError(f"on must be 'val' (to choose) or 'test' (to report the chosen model), got {on!r}")
    loaders = data.torch_loaders(split, batch_size=64, seed=seed)
    history = train.fit(model, loaders["train"], loaders["val"], epochs=epochs, lr=lr, seed=seed, progress=False)
    x, y = (split.x_val, split.y_val) if on == "val" else (split.x_test, split.y_test)
    record = runtimes.measure_one(name, model, x, y, rounds=5, repeats=max(1, latency_repeats // 5))
    record.notes = f"{history.epochs} epochs, input {tuple(split.input_shape)}, top-1 on {on}"
    return record


def _value(record: Record, field: str) -> float:
    value = getattr(record, field, None)
    if value is None:
        raise ValueError(f"record {record.name!r} has no {field}; measure it first")
    return float(value)


def pareto_front(records: Iterable[Record], cost: str = "macs", metric: str = "top1") -> list[Record]:
    """Records not dominated by another (one with cost ≤ and metric ≥, one of them strictly), by rising cost."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    items = sorted(records, key=lambda r: (_value(r, cost), -_value(r, metric)))
    front, best = [], float("-inf")
    for record in items:
        if _value(record, metric) > best:
            front.append(record)
            best = _value(record, metric)
    return front


def best_under_budget(records: Iterable[Record], metric: str = "top1", **budget: float) -> Record:
    """The record with the highest ``metric`` among those within every budget, e.g. ``macs=2e5, bytes=50_000``.

    Ties go to the cheaper model (by the first budgeted cost).
    """
    unknown = set(budget) - set(COSTS)
    if unknown or not budget:
        raise ValueError(f"give at least one budget among {COSTS}; got {sorted(budget)}")
    within = [r for r in records if all(_value(r, k) <= v for k, v in budget.items())]
    if not within:
        raise ValueError(f"no candidate fits the budget {budget}")
    first = next(iter(budget))
    return max(within, key=lambda r: (_value(r, metric), -_value(r, first)))


def plot_tradeoff(records: list[Record], cost: str = "macs", metric: str = "top1", budget: float | None = None,
                  ax: Any = None) -> Any:
    """Scatter of metric against cost (log scale), the Pareto front as a line, the budget as a vertical line."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([_value(r, cost) for r in records], [_value(r, metric) for r in records], color="tab:gray")
    for r in records:
        ax.annotate(r.name, (_value(r, cost), _value(r, metric)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(records, cost, metric)
    ax.plot([_value(r, cost) for r in front], [_value(r, metric) for r in front], color="tab:blue", marker="o",
            label="Pareto front")
    if budget is not None:
        ax.axvline(budget, color="tab:red", linestyle="--", label=f"budget {budget:,.0f}")
    ax.set_xscale("log")
    ax.set_xlabel(cost)
    ax.set_ylabel(metric)
    ax.legend(loc="lower right")
    return ax
