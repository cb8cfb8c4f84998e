"""Pruning: zero out weights (unstructured) or remove whole channels (structural).

Two different things share the word "pruning", and the lectures keep them apart:

* **Masking** (``torch.nn.utils.prune``, tfmot's ``prune_low_magnitude``) sets
  weights to zero. The tensors keep their shape, so the raw file and the dense
  latency stay the same; only a compressor (gzip) or a sparse format sees the
  zeros. :func:`sparsity_report`, :func:`prune_global`, :func:`prune_layerwise`,
  :func:`sensitivity_scan` and :func:`prune_and_finetune` work on this side.
* **Structural pruning** removes channels and rewrites every layer that reads
  them, so the model really gets smaller and faster. The dependency tracking is
  done by the maintained ``torch-pruning`` library (:func:`channel_prune`).

The Keras helpers (:func:`keras_prune`, :func:`keras_strip`, ...) are thin
wrappers around ``tensorflow_model_optimization.sparsity.keras``.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from course_lib import import_tensorflow, measure
from course_lib.train import evaluate, fit

if TYPE_CHECKING:  # heavy: imported where used
    import pandas as pd
    import tensorflow_model_optimization as tfmot
    import tf_keras

PRUNABLE = (nn.Conv2d, nn.Linear)


# --- reading sparsity ----------------------------------------------------------------------


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask that zeroes exactly ``round(sparsity · numel)`` entries of smallest ``|weight|``.

    Ties are broken by position (the earlier element is pruned first), so the
    count is exact even when many weights share a magnitude — a threshold
    ``|w| <= t`` would prune all of them.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be between 0 and 1, got {sparsity}")
    flat = weight.detach().reshape(-1).abs()
    n_prune = int(round(sparsity * flat.numel()))
    mask = torch.ones_like(flat)
    if n_prune:
        # A stable sort keeps equal magnitudes in index order.
        order = torch.sort(flat, stable=True).indices
        mask[order[:n_prune]] = 0.0
    return mask.reshape(weight.shape)


def prunable_layers(model: nn.Module, types: tuple[type[nn.Module], ...] = PRUNABLE) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every convolution / linear layer, in model order."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, types)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no {', '.join(t.__name__ for t in types)} layers to prune")
    return layers


def _weight(module: nn.Module) -> torch.Tensor:
    # After prune.* the forward pass uses module.weight = weight_orig * weight_mask.
    weight = module.weight
    assert isinstance(weight, torch.Tensor)  # PRUNABLE layers only
    return weight.detach()


def sparsity_report(model: nn.Module) -> pd.DataFrame:
    """A pandas table: one row per conv/linear weight (params, zeros, sparsity) and a ``total`` row.

    Reads the weight the forward pass uses, so it is right before and after
    ``prune.remove``. Biases are not counted: pruning leaves them alone.
    """
    import pandas as pd

    rows = []
    for name, module in prunable_layers(model):
        weight = _weight(module)
        zeros = int((weight == 0).sum())
        rows.append({"layer": name, "type": type(module).__name__, "params": weight.numel(), "zeros": zeros})
    table = pd.DataFrame(rows)
    total = {"layer": "total", "type": "", "params": int(table["params"].sum()), "zeros": int(table["zeros"].sum())}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["sparsity"] = (table["zeros"] / table["params"]).round(4)
    return table


def global_sparsity(model: nn.Module) -> float:
    """Fraction of conv/linear weights that are exactly zero."""
    weights = [_weight(m) for _, m in prunable_layers(model)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


def is_pruned(model: nn.Module) -> bool:
    """True while some layer still carries ``weight_orig`` / ``weight_mask`` (before :func:`make_permanent`)."""
    return prune.is_pruned(model)  # looks at the model and every submodule


# --- masking with torch.nn.utils.prune -------------------------------------------------------


def _check_fraction(amount: float) -> float:
    """``amount`` as the fraction it must be here; torch would read an int as a *count* of weights.

    ``prune_global(model, amount=80)`` meant 80 % but would prune 80 weights
    without a word, so integers (and bools) are refused with that explanation.
    """
    if isinstance(amount, numbers.Integral):  # bool included
        raise ValueError(
            f"amount must be a fraction between 0 and 1 (e.g. 0.8 for 80 %), got the integer {amount!r}; "
            "torch.nn.utils.prune would read an integer as a count of weights"
        )
    if not isinstance(amount, numbers.Real) or math.isnan(amount) or not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be a fraction between 0 and 1 (e.g. 0.8 for 80 %), got {amount!r}")
    return float(amount)


def prune_global(model: nn.Module, amount: float, method: type = prune.L1Unstructured) -> nn.Module:
    """Prune ``amount`` of *all* conv/linear weights together, smallest magnitude first.

    Layers compete for the budget: a layer with many small weights loses more
    of them. Applied again, ``amount`` is a fraction of the weights still
    unpruned (that is how ``torch.nn.utils.prune`` composes masks).
    """
    amount = _check_fraction(amount)
    params = [(m, "weight") for _, m in prunable_layers(model)]
    prune.global_unstructured(params, pruning_method=method, amount=amount)
    return model


def prune_layerwise(model: nn.Module, amount: float, structured: bool = False, n: int = 2) -> nn.Module:
    """Prune ``amount`` of *each* layer's weights (L1 unstructured, or L``n`` structured over output channels).

    Structured (``ln_structured``, ``dim=0``) zeroes whole filters but does not
    remove them: shapes stay, so this is still masking.
    """
    amount = _check_fraction(amount)
    for _, module in prunable_layers(model):
        if structured:
            prune.ln_structured(module, "weight", amount=amount, n=n, dim=0)
        else:
            prune.l1_unstructured(module, "weight", amount=amount)
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """``prune.remove`` on every pruned layer: fold the mask into ``weight``, drop ``weight_orig`` / ``weight_mask``.

    Without this the state_dict holds both the original weights and the masks
    (about twice the bytes), and loading it into a fresh model fails on the
    unexpected keys.
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def sensitivity_scan(
    model: nn.Module,
    score: Callable[[nn.Module], float],
    sparsities: Sequence[float] = (0.5, 0.7, 0.9),
    layers: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Prune one layer at a time (L1 unstructured) and score the model: which layers tolerate pruning?

    Args:
        model: a trained model; it is not modified (each trial works on a copy).
        score: e.g. ``lambda m: train.evaluate(m, loader)["top1"]``.
        sparsities: the fractions of the layer's weights to prune.
        layers: names of layers to scan (default: all conv/linear layers).

    Returns:
        A pandas table, one row per layer, one column per sparsity, plus the
        ``params`` of each layer (big layers are the ones worth pruning).
    """
    import pandas as pd

    names = [n for n, _ in prunable_layers(model)]
    if layers is not None:
        wanted = list(layers)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"unknown layers {unknown}; prunable layers are {names}")
        names = wanted
    rows = []
    for name in names:
        row: dict[str, Any] = {"layer": name, "params": _weight(model.get_submodule(name)).numel()}
        for sparsity in sparsities:
            trial = copy.deepcopy(model)
            prune.l1_unstructured(trial.get_submodule(name), "weight", amount=sparsity)
            row[f"{sparsity:.0%}"] = round(float(score(trial)), 4)
        rows.append(row)
    return pd.DataFrame(rows)


def sparsity_steps(target: float, steps: int) -> list[float]:
    """Cumulative sparsities for iterative pruning that prune the same fraction of the *survivors* each step.

    E.g. ``sparsity_steps(0.9, 3)`` → ``[0.536, 0.785, 0.9]``: each step keeps
    ``(1 - target) ** (1 / steps)`` of what was left.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target sparsity must be between 0 and 1 (exclusive), got {target}")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    keep = (1.0 - target) ** (1.0 / steps)
    return [round(1.0 - keep ** (i + 1), 6) for i in range(steps)]


def prune_and_finetune(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    target: float,
    steps: int = 3,
    epochs_per_step: int = 1,
    lr: float = 5e-4,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Iterative global magnitude pruning: prune a little, fine-tune, repeat until ``target`` sparsity.

    Masks stay attached during fine-tuning (the pre-hook keeps pruned weights
    at zero while the survivors learn); :func:`make_permanent` is applied at
    the end. Returns one row per step: ``sparsity``, ``top1`` before and after
    fine-tuning, measured on ``val_loader``.
    """
    history = []
    done = 0.0
    for cumulative in sparsity_steps(target, steps):
        # prune.global_unstructured's amount is a fraction of the weights still unpruned.
        prune_global(model, amount=(cumulative - done) / (1.0 - done))
        done = cumulative
        before = evaluate(model, val_loader)["top1"]
        fit(model, train_loader, val_loader, epochs=epochs_per_step, lr=lr, progress=progress)
        after = evaluate(model, val_loader)["top1"]
        history.append({"sparsity": round(global_sparsity(model), 4), "top1_pruned": before, "top1_finetuned": after})
    make_permanent(model)
    return history


# --- structural channel pruning (torch-pruning) -----------------------------------------------


def channel_prune(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: float,
    ignored_layers: Sequence[nn.Module] | None = None,
    round_to: int | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Remove ``ratio`` of the output channels of every prunable layer (L1 magnitude), for real.

    ``torch-pruning`` traces the model to find which layers share a channel
    dimension (a conv, its BatchNorm, the next conv's input, residual adds)
    and removes the channels from all of them together, so the model stays
    consistent. The classifier's output layer is kept whole by default.

    The result has new layer shapes: it no longer loads into the original
    class. Save it whole (``torch.save(model)``, read back with
    ``torch.load(path, weights_only=False)``) or rebuild it from its shapes.
    """
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be between 0 and 1 (exclusive), got {ratio}")
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    example_input = torch.as_tensor(example_input)
    with torch.no_grad():  # a wrong input shape fails here naming the first layer, not deep in torch-pruning's tracer
        measure.run_model(target, example_input)
    if ignored_layers is None:
        last_linear = [m for m in target.modules() if isinstance(m, nn.Linear)][-1:]
        ignored_layers = last_linear
    elif not inplace:
        # The caller named layers of the original model; find the same ones in the copy.
        names = {id(m): n for n, m in model.named_modules()}
        missing = [m for m in ignored_layers if id(m) not in names]
        if missing:
            raise ValueError("ignored_layers must be modules of the model being pruned")
        ignored_layers = [target.get_submodule(names[id(m)]) for m in ignored_layers]
    pruner = tp.pruner.MagnitudePruner(
        target,
        example_inputs=example_input,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=list(ignored_layers),
        round_to=round_to,
    )
    pruner.step()
    return target


# --- Keras: tensorflow-model-optimization ------------------------------------------------------


def keras_pruning_schedule(
    target: float, end_step: int, begin_step: int = 0, initial: float = 0.0, frequency: int | None = None
) -> tfmot.sparsity.keras.PolynomialDecay:
    """tfmot's ``PolynomialDecay``: sparsity rises from ``initial`` to ``target`` between the two steps.

    The curve is ``target + (initial - target) · (1 - progress)³``: fast pruning
    early, gentle near the end, when the network has less slack left.

    ``frequency`` is how many steps apart the masks are updated. tfmot's
    default is 100, which on a small dataset can mean the masks are *never*
    updated (masks change only on steps ``begin_step + k · frequency`` up to
    ``end_step``). ``None`` here picks about ten updates over the schedule.
    """
    if not 0.0 <= initial <= target < 1.0:
        raise ValueError(f"need 0 ≤ initial ≤ target < 1, got initial={initial}, target={target}")
    if end_step <= begin_step:
        raise ValueError(f"end_step ({end_step}) must be after begin_step ({begin_step})")
    if frequency is None:
        frequency = max(1, (end_step - begin_step) // 10)
    import tensorflow_model_optimization as tfmot

    import_tensorflow()
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=initial, final_sparsity=target, begin_step=begin_step, end_step=end_step, frequency=frequency
    )


def keras_prune(
    model: tf_keras.Model,
    target: float,
    end_step: int,
    begin_step: int = 0,
    frequency: int | None = None,
    layers: Sequence[str] | None = None,
) -> tf_keras.Model:
    """Wrap the prunable layers of a Keras 2 (tf_keras) model with ``prune_low_magnitude``.

    Each wrapped layer is pruned to ``target`` on its own (tfmot's pruning is
    layer-wise). ``layers`` names the layers to prune (default: all of them);
    leaving out a small, sensitive layer such as the classifier costs almost
    no sparsity and can save accuracy. Train the result with the callbacks
    from :func:`keras_pruning_callbacks`, then call :func:`keras_strip`.
    """
    import tensorflow_model_optimization as tfmot

    tf = import_tensorflow()
    sparsity = tfmot.sparsity.keras
    schedule = keras_pruning_schedule(target, end_step, begin_step=begin_step, frequency=frequency)
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(layers or ()) - names)
    if unknown:
        raise KeyError(f"no layers named {unknown}; the model has {sorted(names)}")
    try:
        # prune_low_magnitude reuses the layer objects it wraps, so training the
        # pruned model would also prune the caller's model: wrap a copy instead.
        base = tf.keras.models.clone_model(model)
        base.set_weights(model.get_weights())
        if layers is None:
            return sparsity.prune_low_magnitude(base, pruning_schedule=schedule)

        def wrap(layer: Any) -> Any:
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in layers else layer

        return tf.keras.models.clone_model(base, clone_function=wrap)
    except ValueError as error:
        raise ValueError(
            f"tfmot could not wrap this model ({error}). tfmot needs a tf_keras (Keras 2) model: "
            "call course_lib.setup() before importing TensorFlow, which sets TF_USE_LEGACY_KERAS=1."
        ) from error


def keras_pruning_callbacks(log_dir: str | None = None) -> list[Any]:
    """``UpdatePruningStep`` (required: it advances the schedule) and, given a folder, ``PruningSummaries``."""
    import tensorflow_model_optimization as tfmot

    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    if log_dir is not None:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir))
    return callbacks


def keras_strip(model: tf_keras.Model) -> tf_keras.Model:
    """``strip_pruning``: remove the wrappers and their masks, leaving plain layers with zeros in the kernels."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def keras_has_pruning_wrappers(model: Any) -> bool:
    """True while some layer is still a tfmot ``PruneLowMagnitude`` wrapper (call :func:`keras_strip`)."""
    return any(type(layer).__name__ == "PruneLowMagnitude" for layer in model.layers)


def keras_sparsity(model: Any, layers: Sequence[str] | None = None) -> float:
    """Fraction of zero kernel entries over the named layers (default: all Conv/Dense kernels)."""
    table = keras_sparsity_report(model)
    rows = table[table["layer"] != "total"]
    if layers is not None:
        missing = sorted(set(layers) - set(rows["layer"]))
        if missing:
            raise KeyError(f"no kernels in layers {missing}; layers with kernels: {list(rows['layer'])}")
        rows = rows[rows["layer"].isin(list(layers))]
    return float(rows["zeros"].sum() / rows["params"].sum())


def keras_predict(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of a Keras model as a NumPy array (``model(x)`` in batches, without ``predict``'s per-call overhead)."""
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)])


def keras_sparsity_report(model: tf_keras.Model) -> pd.DataFrame:
    """A pandas table: one row per kernel of a (stripped) Keras model, and a ``total`` row."""
    import pandas as pd

    rows = []
    for layer in model.layers:
        for weight in layer.weights:
            if "kernel" in weight.name:
                values = np.asarray(weight.numpy())
                rows.append({"layer": layer.name, "params": values.size, "zeros": int((values == 0).sum())})
    if not rows:
        raise ValueError("no kernels found: is this a Keras model with Conv/Dense layers?")
    table = pd.DataFrame(rows)
    total = {"layer": "total", "params": int(table["params"].sum()), "zeros": int(table["zeros"].sum())}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["sparsity"] = (table["zeros"] / table["params"]).round(4)
    return table
