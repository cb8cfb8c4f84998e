"""course_lib.prune: exact masks, sparsity reports, the prune → fine-tune loop, channel pruning, Keras wrappers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import data, measure, prune, train
from course_lib.models import small_cnn


def test_magnitude_mask_prunes_an_exact_count_and_breaks_ties_by_position():
    weight = torch.tensor([[0.5, -0.1, 0.1], [0.1, 2.0, -3.0]])
    mask = prune.magnitude_mask(weight, 0.5)
    assert int((mask == 0).sum()) == 3
    # three weights tie at |0.1|; all three are the smallest, so exactly those go
    assert mask.tolist() == [[1, 0, 0], [0, 1, 1]]
    tied = torch.ones(10)
    assert int((prune.magnitude_mask(tied, 0.3) == 0).sum()) == 3
    assert prune.magnitude_mask(tied, 0.3)[:3].sum() == 0  # earlier elements go first
    with pytest.raises(ValueError, match="between 0 and 1"):
        prune.magnitude_mask(tied, 1.5)


def test_sparsity_report_reads_masked_and_permanent_models_alike():
    model = prune.prune_global(small_cnn(), 0.8)
    report = prune.sparsity_report(model)
    assert list(report["layer"]) == ["features.0", "features.2", "classifier.1", "classifier.3", "total"]
    assert report.iloc[-1]["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert prune.is_pruned(model)
    prune.make_permanent(model)
    assert not prune.is_pruned(model)
    assert prune.sparsity_report(model).iloc[-1]["zeros"] == report.iloc[-1]["zeros"]
    assert "features.0.weight" in model.state_dict() and "features.0.weight_mask" not in model.state_dict()


def test_layerwise_pruning_gives_each_layer_the_same_fraction_and_structured_zeroes_whole_filters():
    layerwise = prune.sparsity_report(prune.prune_layerwise(small_cnn(), 0.5))
    assert (layerwise["sparsity"].round(2) == 0.5).all()
    structured = prune.prune_layerwise(small_cnn(), 0.25, structured=True)
    conv2 = structured.features[2].weight
    dead = int((conv2.flatten(1).abs().sum(dim=1) == 0).sum())
    assert dead == 16 and conv2.shape == (64, 32, 3, 3)


@pytest.mark.parametrize("amount", [80, True, 1.5, -0.1, float("nan"), "0.8"])
def test_pruning_amounts_must_be_fractions(amount):
    """torch reads an int amount as a count of weights: 80 for "80 %" would prune 80 weights silently."""
    model = small_cnn()
    for prune_all in (prune.prune_global, prune.prune_layerwise):
        with pytest.raises(ValueError, match="amount must be a fraction between 0 and 1"):
            prune_all(model, amount=amount)
    assert prune.global_sparsity(model) == 0.0


def test_no_prunable_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="no Conv2d, Linear layers"):
        prune.sparsity_report(nn.Sequential(nn.ReLU()))


def test_sparsity_steps_reach_the_target_geometrically():
    steps = prune.sparsity_steps(0.9, 3)
    assert steps[-1] == pytest.approx(0.9)
    kept = [1 - s for s in [0.0, *steps]]
    ratios = [b / a for a, b in zip(kept, kept[1:])]
    assert np.allclose(ratios, ratios[0])
    with pytest.raises(ValueError):
        prune.sparsity_steps(1.0, 3)


@pytest.mark.slow
def test_prune_and_finetune_reaches_the_target_and_keeps_accuracy(trained_cnn, digits):
    loaders = data.torch_loaders(digits)
    dense_top1 = train.evaluate(trained_cnn, loaders["test"])["top1"]
    model = copy.deepcopy(trained_cnn)
    history = prune.prune_and_finetune(model, loaders["train"], loaders["val"], target=0.8, steps=2, epochs_per_step=2)
    assert len(history) == 2
    assert prune.global_sparsity(model) == pytest.approx(0.8, abs=1e-3)
    assert not prune.is_pruned(model)  # masks folded in at the end
    assert train.evaluate(model, loaders["test"])["top1"] >= dense_top1 - 0.02
    # the zeros make the file compressible, not smaller
    dense_size, sparse_size = measure.state_dict_size(trained_cnn), measure.state_dict_size(model)
    assert abs(sparse_size.bytes - dense_size.bytes) < 1000
    assert dense_size.gzip_bytes / sparse_size.gzip_bytes > 3


@pytest.mark.slow
def test_sensitivity_scan_leaves_the_model_alone_and_names_bad_layers(trained_cnn, digits):
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    x, y = torch.as_tensor(digits.x_val), digits.y_val
    table = prune.sensitivity_scan(trained_cnn, lambda m: float((m(x).argmax(1).numpy() == y).mean()), sparsities=(0.5, 0.9))
    assert list(table.columns) == ["layer", "params", "50%", "90%"]
    assert all(torch.equal(before[k], v) for k, v in trained_cnn.state_dict().items())
    with pytest.raises(ValueError, match="unknown layers"):
        prune.sensitivity_scan(trained_cnn, lambda m: 0.0, layers=["nope"])


def test_channel_prune_really_shrinks_and_keeps_the_classifier():
    model = small_cnn()
    x = torch.zeros(1, 1, 8, 8)
    slim = prune.channel_prune(model, x, ratio=0.5)
    assert model.features[0].out_channels == 32  # original untouched
    assert slim.features[0].out_channels == 16 and slim.features[2].out_channels == 32
    assert slim.classifier[3].out_features == 10
    assert measure.count_macs(slim, x) < 0.3 * measure.count_macs(model, x)
    assert slim(x).shape == (1, 10)
    with pytest.raises(ValueError, match="ratio"):
        prune.channel_prune(model, x, ratio=1.0)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 8, 8\), got \(1, 3, 8, 8\)"):
        prune.channel_prune(model, torch.zeros(1, 3, 8, 8), ratio=0.5)  # said before torch-pruning's tracer fails


@pytest.mark.slow
def test_channel_prune_follows_residual_connections():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.zeros(1, 3, 32, 32)
    slim = prune.channel_prune(model, x, ratio=0.3, round_to=8)
    assert slim(x).shape == (1, 10)
    assert measure.count_macs(slim, x) < 0.6 * measure.count_macs(model, x)


@pytest.mark.slow
def test_keras_pruning_schedule_prunes_to_the_target(digits):
    pytest.importorskip("tensorflow_model_optimization")
    from course_lib import import_tensorflow
    from course_lib.models.keras_twin import small_cnn_keras

    tf = import_tensorflow()
    model = small_cnn_keras()
    x, y = digits.nhwc("train")[:256], digits.y_train[:256]
    pruned = prune.keras_prune(model, 0.7, end_step=8, layers=["conv2", "fc1"])
    pruned.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=prune.keras_pruning_callbacks())
    stripped = prune.keras_strip(pruned)
    report = prune.keras_sparsity_report(stripped).set_index("layer")
    assert report.loc["conv2", "sparsity"] == pytest.approx(0.7, abs=0.01)
    assert report.loc["fc1", "sparsity"] == pytest.approx(0.7, abs=0.01)
    assert report.loc["conv1", "sparsity"] == 0.0
    assert (np.asarray(model.get_layer("fc1").kernel.numpy()) != 0).all()  # the original stays dense
    everything = prune.keras_prune(model, 0.7, end_step=8)
    everything.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    everything.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=prune.keras_pruning_callbacks())
    assert prune.keras_sparsity_report(prune.keras_strip(everything)).iloc[-1]["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert (np.asarray(model.get_layer("fc1").kernel.numpy()) != 0).all()
    with pytest.raises(KeyError, match="no layers named"):
        prune.keras_prune(model, 0.5, end_step=8, layers=["fc9"])
    with pytest.raises(ValueError, match="end_step"):
        prune.keras_pruning_schedule(0.5, end_step=0)


@pytest.mark.slow
def test_keras_sparsity_and_predict(digits):
    pytest.importorskip("tensorflow_model_optimization")
    from course_lib.models.keras_twin import small_cnn_keras

    model = small_cnn_keras()
    kernel = model.get_layer("fc1").kernel
    kernel.assign(np.zeros(kernel.shape, dtype=np.float32))
    assert prune.keras_sparsity(model, ["fc1"]) == 1.0
    assert prune.keras_sparsity(model) == pytest.approx(32768 / 51808)
    with pytest.raises(KeyError, match="no kernels"):
        prune.keras_sparsity(model, ["pool"])
    logits = prune.keras_predict(model, digits.nhwc("test")[:300], batch_size=128)
    assert logits.shape == (300, 10)
