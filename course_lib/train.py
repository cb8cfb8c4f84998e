"""Fit and evaluate PyTorch classifiers: small, deterministic, with a progress bar.

Deterministic means: the same seed, the same thread count and the same
machine give bit-identical weights (CPU kernels are deterministic for a fixed
thread count; the shuffling generator is seeded here).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib.measure import set_mode, topk_accuracy


@dataclass
class History:
    """What :func:`fit` did, epoch by epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_top1: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
    patience: int | None = None,
    seed: int = 0,
    progress: bool = True,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> History:
    """Train ``model`` with cross-entropy (or ``loss_fn``); keep the best validation weights.

    Args:
        model: any classifier returning logits.
        train_loader / val_loader: iterables of ``(x, y)`` batches.
        epochs: at most this many passes over the training data.
        lr, weight_decay: Adam's settings (ignored if ``optimizer`` is given).
        optimizer: your own optimizer (e.g. SGD for fine-tuning).
        patience: stop when validation top-1 has not improved for this many
            epochs (needs ``val_loader``); ``None`` trains every epoch.
        seed: seeds PyTorch before training, for reproducible dropout etc.
        progress: show a tqdm bar over epochs with the loss and val top-1.
        loss_fn: ``loss_fn(model, x, y)`` → the scalar loss of one batch, for
            objectives other than cross-entropy on the labels (e.g.
            distillation, which also needs a teacher's outputs);
            ``None`` uses cross-entropy of ``model(x)`` against ``y``.

    Returns:
        A :class:`History`; the model ends with the weights of its best
        validation epoch (or the last epoch without ``val_loader``).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if patience is not None and val_loader is None:
        raise ValueError("patience (early stopping) needs a val_loader to watch")
    torch.manual_seed(seed)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if loss_fn is None:
        cross_entropy = nn.CrossEntropyLoss()

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return cross_entropy(model(x), y)

    history = History()
    best_state: dict[str, torch.Tensor] | None = None
    best_top1 = -1.0
    start = time.perf_counter()

    from tqdm import tqdm

    bar = tqdm(range(epochs), desc="epochs", disable=not progress, leave=False)
    for epoch in bar:
        set_mode(model, True)
        total, count = 0.0, 0
        for x, y in train_loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, x, y)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        if count == 0:
            raise ValueError("train_loader yielded no batches")
        history.train_loss.append(total / count)
        if val_loader is not None:
            top1 = evaluate(model, val_loader)["top1"]
            history.val_top1.append(top1)
            if top1 > best_top1:
                best_top1, history.best_epoch = top1, epoch
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", val_top1=f"{top1:.3f}")
            if patience is not None and epoch - (history.best_epoch or 0) >= patience:
                history.stopped_early = True
                break
        else:
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}")
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    elif val_loader is None:
        history.best_epoch = history.epochs - 1
    set_mode(model, False)
    history.seconds = time.perf_counter() - start
    return history


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Iterable[Any] | np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Logits of ``model`` for a loader of ``(x, y)`` batches or for an array of inputs."""
    set_mode(model, False)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        x = torch.as_tensor(data)
        batches: Iterable[Any] = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    else:
        batches = (batch[0] for batch in data)
    outputs = [model(xb).float().cpu().numpy() for xb in batches]
    if not outputs:
        raise ValueError("no data to predict on")
    return np.concatenate(outputs)


def evaluate(model: nn.Module, loader: Iterable[Any], topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy and mean cross-entropy of ``model`` over ``loader``."""
    logits, labels = [], []
    set_mode(model, False)
    with torch.inference_mode():
        for x, y in loader:
            logits.append(model(x).float())
            labels.append(torch.as_tensor(y))
    if not logits:
        raise ValueError("loader yielded no batches")
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    result = topk_accuracy(all_logits.numpy(), all_labels.numpy(), k=topk)
    result["loss"] = float(nn.functional.cross_entropy(all_logits, all_labels))
    return result
