"""course_lib.distill and course_lib.stats: the KD loss against its formula, feature hints, the training loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import data, distill, stats, train
from course_lib.models.cnn import SmallCNN


def _logits(seed: int, shape: tuple[int, int] = (6, 10)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_soft_targets_flatten_with_temperature_and_sum_to_one():
    logits = torch.tensor([[4.0, 1.0, 0.0]])
    cold, hot = distill.soft_targets(logits, 1.0), distill.soft_targets(logits, 5.0)
    assert torch.allclose(cold.sum(1), torch.ones(1)) and torch.allclose(hot.sum(1), torch.ones(1))
    assert hot.max() < cold.max() and hot.min() > cold.min()
    assert torch.equal(hot.argmax(1), cold.argmax(1))  # temperature never changes the ranking
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        distill.soft_targets(logits, 0.0)


def test_class_similarity_averages_soft_targets_per_true_class():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 1, 0, 2])
    matrix = distill.class_similarity(logits, labels, 2.0)
    soft = distill.soft_targets(logits, 2.0)
    assert torch.allclose(matrix[0], (soft[0] + soft[2]) / 2) and torch.allclose(matrix[2], soft[3])
    assert torch.allclose(matrix.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="missing: \\[2\\]"):
        distill.class_similarity(logits[:3], labels[:3])


def test_kd_loss_matches_the_written_out_formula():
    s, t, y = _logits(0), _logits(1), torch.arange(6) % 10
    temperature, alpha = 3.0, 0.7
    p_t = torch.softmax(t / temperature, 1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / temperature, 1))).sum(1).mean()
    expected = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, y)
    assert torch.allclose(distill.kd_loss(s, t, y, temperature, alpha), expected, atol=1e-5)


def test_kd_loss_limits_alpha_zero_is_cross_entropy_and_identical_logits_cost_nothing():
    s, t, y = _logits(2), _logits(3), torch.arange(6)
    assert torch.allclose(distill.kd_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))
    assert float(distill.kd_loss(s, s.clone(), y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_does_not_train_the_teacher():
    s = _logits(4).requires_grad_()
    t = _logits(5).requires_grad_()
    distill.kd_loss(s, t, torch.zeros(6, dtype=torch.long)).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 1.5}, "alpha must be a number in"),
    ({"temperature": -1.0}, "temperature must be a positive"),
    ({"teacher_logits": torch.zeros(6, 9)}, "same shape"),
    ({"labels": torch.zeros(5, dtype=torch.long)}, "labels must be a 1-D tensor of 6"),
    ({"student_logits": torch.zeros(6)}, "2-D tensor of logits"),
])
def test_kd_loss_rejects_bad_arguments_clearly(kwargs, message):
    arguments = {"student_logits": _logits(0), "teacher_logits": _logits(1), "labels": torch.zeros(6, dtype=torch.long)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        distill.kd_loss(**arguments)


def test_hint_loss_uses_the_adapter_and_explains_shape_mismatch():
    layer = distill.adapter(4, 8)
    student_feature, teacher_feature = torch.randn(2, 4, 5, 5), torch.randn(2, 8, 5, 5)
    assert torch.allclose(distill.hint_loss(student_feature, teacher_feature, layer),
                          F.mse_loss(layer(student_feature), teacher_feature))
    with pytest.raises(ValueError, match="same spatial size"):
        distill.hint_loss(student_feature, torch.randn(2, 8, 3, 3), layer)
    with pytest.raises(ValueError, match="positive integer"):
        distill.adapter(0, 8)


def test_feature_tap_keeps_the_output_and_names_the_layers_on_a_typo():
    model = SmallCNN()
    with distill.FeatureTap(model, "features.3") as tap:
        model(torch.zeros(2, 1, 8, 8))
        assert tap.output.shape == (2, 64, 8, 8)
    assert not model.features[3]._forward_hooks  # removed on exit
    with pytest.raises(ValueError, match="available"):
        distill.FeatureTap(model, "features.99")


@pytest.fixture(scope="module")
def small_data():
    split = data.load_digits()
    keep = slice(0, 300)
    split.x_train, split.y_train = split.x_train[keep], split.y_train[keep]
    return split


def test_distill_trains_the_student_only_and_alpha_zero_equals_fit(small_data):
    teacher = SmallCNN(channels=(8, 16), hidden=16)
    teacher_before = copy.deepcopy(teacher.state_dict())
    torch.manual_seed(0)
    student = SmallCNN(channels=(4, 8), hidden=8)
    twin = copy.deepcopy(student)
    history = distill.distill(student, teacher, data.torch_loaders(small_data)["train"], epochs=2, alpha=0.0,
                              progress=False)
    train.fit(twin, data.torch_loaders(small_data)["train"], epochs=2, progress=False)
    assert history.epochs == 2
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())  # handed back as it came
    teacher.features[0].weight.requires_grad_(False)
    distill.distill(SmallCNN(channels=(4, 8), hidden=8), teacher, data.torch_loaders(small_data)["train"], epochs=1,
                    progress=False)
    assert not teacher.features[0].weight.requires_grad and teacher.features[0].bias.requires_grad
    # alpha = 0 is cross-entropy on the same data order: the same weights as train.fit
    for (name, a), b in zip(student.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_feature_distillation_runs_and_rejects_a_wrong_pair(small_data):
    teacher, student = SmallCNN(channels=(8, 16), hidden=16), SmallCNN(channels=(4, 8), hidden=8)
    loaders = data.torch_loaders(small_data)
    history = distill.distill(student, teacher, loaders["train"], epochs=1, feature_layers=("features.3", "features.3"),
                              progress=False)
    assert np.isfinite(history.train_loss[0])
    assert not student.features[3]._forward_hooks and not teacher.features[3]._forward_hooks
    with pytest.raises(ValueError, match="pair"):
        distill.distill(student, teacher, loaders["train"], epochs=1, feature_layers=("features.3",), progress=False)
    with pytest.raises(ValueError, match="two different models"):
        distill.distill(student, student, loaders["train"], epochs=1, progress=False)


def test_t_interval_and_paired_difference():
    interval = stats.t_interval([1.0, 2.0, 3.0])
    assert interval.mean == pytest.approx(2.0)
    assert interval.half_width == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) = 4.3027
    paired = stats.paired_difference([0.92, 0.94, 0.93], [0.90, 0.91, 0.91])
    assert paired.mean == pytest.approx(0.0233333, rel=1e-4)
    assert paired.verdict() == "higher"
    assert stats.paired_difference([0.9, 0.8, 0.9], [0.85, 0.85, 0.85]).verdict() == "inconclusive"
    assert stats.t_interval([-3.0, -2.0, -2.5]).verdict() == "lower"
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.t_interval([1.0])
    with pytest.raises(ValueError, match="as many values"):
        stats.paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        stats.t_interval([1.0, float("nan")])


def test_cross_fit_splits_test_every_image_exactly_once():
    split = data.load_digits()
    folds = data.cross_fit_splits(split, folds=5)
    total = sum(len(s.y_test) for s in folds)
    assert total == 1797
    pooled = np.concatenate([s.x_test.reshape(len(s.y_test), -1) for s in folds])
    assert len(np.unique(pooled, axis=0)) == len(np.unique(np.concatenate(
        [split.x_train, split.x_val, split.x_test]).reshape(1797, -1), axis=0))
    for s in folds:
        assert len(s.y_val) == 180 and len(s.y_train) + len(s.y_val) + len(s.y_test) == 1797
    with pytest.raises(ValueError, match="folds must be an integer"):
        data.cross_fit_splits(split, folds=1)
