"""Knowledge distillation: a student learns from a teacher's outputs, not only from labels.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network":
the teacher's softmax at a temperature ``T > 1`` (*soft targets*) spreads
probability over the wrong classes in proportion to how similar they look,
which one-hot labels cannot say. The student minimises

    alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 - alpha) · CE(student, labels)

The ``T²`` keeps the soft term's gradients on the same scale as the hard
term's when ``T`` changes (the gradient of the softened KL shrinks as 1/T²).
This is the loss of PyTorch's knowledge-distillation tutorial, written with
``F.kl_div(..., log_target=True)`` so that both sides are log-probabilities.

*Feature* (hint) distillation (Romero et al. 2015, FitNets) also pulls an
intermediate feature map of the student towards the teacher's; a small
trainable adapter (a 1×1 convolution) maps the student's channels onto the
teacher's, since a narrow student has fewer.

Training goes through :func:`course_lib.train.fit` with its ``loss_fn`` hook,
so distillation keeps fit's seeding, best-epoch selection and history.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.measure import set_mode
from course_lib.train import History, fit


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be a 2-D tensor of logits (batch × classes), got {shape}")


def soft_targets(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension: a higher ``T`` flattens the distribution.

    At ``T = 1`` a confident teacher puts almost all mass on one class; at
    ``T = 4`` the small probabilities it gives to look-alike classes become
    visible (and learnable).
    """
    _check_temperature(temperature)
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
        raise ValueError("logits must be a tensor with a class dimension last")
    return torch.softmax(logits / temperature, dim=-1)


def class_similarity(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Row ``c``: the mean soft target (at ``temperature``) over the examples labelled ``c``.

    The off-diagonal entries are the "dark knowledge" labels lack: how much
    a teacher thinks each class looks like each other class. Every class in
    ``0 … classes-1`` must occur in ``labels``.
    """
    _check_logits(logits, "logits")
    labels = torch.as_tensor(labels).long()
    if labels.dim() != 1 or len(labels) != len(logits):
        raise ValueError(f"labels must be a 1-D tensor of {len(logits)} class indices, got {tuple(labels.shape)}")
    classes = logits.shape[1]
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in 0 … {classes - 1}")
    counts = torch.bincount(labels, minlength=classes)
    if (counts == 0).any():
        raise ValueError(f"every class needs at least one example; missing: {torch.nonzero(counts == 0).flatten().tolist()}")
    probabilities = soft_targets(logits.detach().float(), temperature)
    sums = torch.zeros(classes, classes).index_add_(0, labels, probabilities)
    return sums / counts[:, None]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton's distillation loss, averaged over the batch.

    ``alpha · T² · KL(p_teacher^T ‖ p_student^T) + (1 - alpha) · CE(student, labels)``.
    ``alpha = 0`` is plain cross-entropy; ``alpha = 1`` learns from the teacher only.
    The teacher's logits are detached: the teacher is not trained.
    """
    _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, "teacher_logits")
    _check_temperature(temperature)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)} (same batch, same classes)"
        )
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or len(labels) != len(student_logits):
        raise ValueError(f"labels must be a 1-D tensor of {len(student_logits)} class indices, got {tuple(labels.shape)}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2
    hard = F.cross_entropy(student_logits, labels.long())
    return alpha * soft + (1.0 - alpha) * hard


def adapter(student_channels: int, teacher_channels: int) -> nn.Conv2d:
    """A 1×1 convolution mapping the student's feature channels onto the teacher's (FitNets' regressor)."""
    for name, value in (("student_channels", student_channels), ("teacher_channels", teacher_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, adapter_layer: nn.Module) -> torch.Tensor:
    """Mean squared error between ``adapter_layer(student_feature)`` and the (detached) teacher feature."""
    mapped = adapter_layer(student_feature)
    if mapped.shape != teacher_feature.shape:
        raise ValueError(
            f"the adapted student feature has shape {tuple(mapped.shape)} but the teacher's has "
            f"{tuple(teacher_feature.shape)}: pick layers with the same spatial size and an adapter "
            f"mapping {student_feature.shape[1] if student_feature.dim() > 1 else '?'} → "
            f"{teacher_feature.shape[1] if teacher_feature.dim() > 1 else '?'} channels"
        )
    return F.mse_loss(mapped, teacher_feature.detach())


class FeatureTap:
    """Keeps the latest output of one submodule (a forward hook), e.g. ``FeatureTap(model, "features.2")``.

    Use as a context manager so the hook is removed afterwards.
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        modules = dict(model.named_modules())
        if layer not in modules:
            names = [name for name in modules if name]
            raise ValueError(f"no submodule named {layer!r}; available: {names}")
        self.output: torch.Tensor | None = None
        self._handle = modules[layer].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.output = output

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def feature_channels(model: nn.Module, layer: str, example: torch.Tensor) -> int:
    """Channels of ``layer``'s output for ``example`` (to size an :func:`adapter`)."""
    set_mode(model, False)
    with FeatureTap(model, layer) as tap, torch.inference_mode():
        model(example)
    assert tap.output is not None
    return int(tap.output.shape[1])


def _one_example(loader: Iterable[Any]) -> torch.Tensor:
    """One input of ``loader`` as a batch of 1, read from its dataset.

    Not ``next(iter(loader))``: starting an iteration draws from a shuffled
    loader's generator and would change the batch order training then sees,
    so a distilled and a label-trained student would no longer see the same data.
    """
    dataset = getattr(loader, "dataset", None)
    if dataset is None or len(dataset) == 0:
        raise ValueError("feature distillation needs a DataLoader over a non-empty dataset (to size the adapter)")
    return torch.as_tensor(dataset[0][0]).unsqueeze(0)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    temperature: float = 4.0,
    alpha: float = 0.9,
    feature_layers: tuple[str, str] | None = None,
    beta: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Train ``student`` with :func:`kd_loss` against a frozen ``teacher`` (through :func:`train.fit`).

    Args:
        student, teacher: classifiers returning logits for the same inputs.
        train_loader, val_loader, epochs, lr, seed, progress: as for :func:`train.fit`
            (Adam at ``lr``; the adapter, if any, is trained with the student).
        temperature, alpha: of :func:`kd_loss`.
        feature_layers: ``(student_layer, teacher_layer)`` names (as in
            ``named_modules()``) to add a hint loss between their outputs,
            weighted by ``beta``; ``None`` distils the logits only.

    Returns:
        fit's :class:`History`. The teacher is left in eval mode and unchanged.
    """
    _check_temperature(temperature)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if student is teacher:
        raise ValueError("student and teacher must be two different models")
    set_mode(teacher, False)
    trainable = [parameter.requires_grad for parameter in teacher.parameters()]
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    parameters = list(student.parameters())
    taps: tuple[FeatureTap, FeatureTap] | None = None
    adapter_layer: nn.Module | None = None
    if feature_layers is not None:
        if len(feature_layers) != 2:
            raise ValueError("feature_layers must be a pair (student_layer, teacher_layer)")
        example = _one_example(train_loader)
        torch.manual_seed(seed)
        adapter_layer = adapter(feature_channels(student, feature_layers[0], example),
                                feature_channels(teacher, feature_layers[1], example))
        parameters += list(adapter_layer.parameters())
        taps = (FeatureTap(student, feature_layers[0]), FeatureTap(teacher, feature_layers[1]))

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss = kd_loss(model(x), teacher_logits, y, temperature, alpha)
        if taps is not None and adapter_layer is not None:
            student_features, teacher_features = taps[0].output, taps[1].output
            if student_features is None or teacher_features is None:
                raise RuntimeError("a feature tap saw no forward pass; the feature_layers are not on the forward path")
            loss = loss + beta * hint_loss(student_features, teacher_features, adapter_layer)
        return loss

    optimizer = torch.optim.Adam(parameters, lr=lr)
    try:
        return fit(student, train_loader, val_loader, epochs=epochs, optimizer=optimizer, seed=seed,
                   progress=progress, loss_fn=loss_fn)
    finally:
        if taps is not None:
            for tap in taps:
                tap.close()
        for parameter, flag in zip(teacher.parameters(), trainable):
            parameter.requires_grad_(flag)
