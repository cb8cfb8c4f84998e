import numpy as np
import pytest
import torch

from course_lib import data, measure, models, train
from course_lib.models.keras_twin import copy_weights_from_torch, small_cnn_keras


@pytest.mark.slow
def test_cnn_param_count_matches_its_keras_twin():
    torch_model = models.small_cnn()
    keras_model = small_cnn_keras()
    assert measure.count_parameters(torch_model) == 51_946
    assert keras_model.count_params() == 51_946


@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.slow
def test_keras_twin_computes_the_same_function_after_copying_weights(size):
    torch_model = models.small_cnn(image_size=size, seed=3)
    keras_model = copy_weights_from_torch(torch_model, small_cnn_keras(image_size=size))
    x = np.random.default_rng(0).random((5, 1, size, size), dtype=np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    got = keras_model(x.transpose(0, 2, 3, 1)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_wrong_input_shape_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 8, 8\), got \(2, 3, 8, 8\)"):
        models.small_cnn()(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="even number"):
        models.SmallCNN(image_size=7)


@pytest.mark.slow
def test_copy_weights_rejects_mismatched_twins():
    with pytest.raises(ValueError, match="same image_size"):
        copy_weights_from_torch(models.small_cnn(image_size=8), small_cnn_keras(image_size=16))


@pytest.mark.slow
def test_fit_learns_digits(trained_cnn, digits):
    result = train.evaluate(trained_cnn, data.torch_loaders(digits)["test"])
    assert result["top1"] > 0.93
    assert result["top5"] >= result["top1"]


@pytest.mark.slow
def test_fit_is_deterministic_for_a_fixed_seed_and_thread_count(digits):
    small = data.Split("part", digits.x_train[:256], digits.y_train[:256], digits.x_val, digits.y_val,
                       digits.x_test, digits.y_test, 10)
    weights = []
    for _ in range(2):
        model = models.small_cnn(seed=0)
        history = train.fit(model, data.torch_loaders(small, 32, seed=0)["train"], epochs=2, progress=False)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
        assert history.epochs == 2 and history.best_epoch == 1
    assert torch.equal(weights[0], weights[1])


@pytest.mark.slow
def test_early_stopping_and_bad_arguments(digits):
    loaders = data.torch_loaders(digits)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        train.fit(models.small_cnn(), loaders["train"], epochs=0)
    with pytest.raises(ValueError, match="needs a val_loader"):
        train.fit(models.small_cnn(), loaders["train"], patience=2)
    with pytest.raises(ValueError, match="no batches"):
        train.fit(models.small_cnn(), [], epochs=1, progress=False)
    model = models.small_cnn()
    # lr=0 never improves after epoch 0, so patience=1 stops at epoch 1
    history = train.fit(model, loaders["train"], loaders["val"], epochs=10, lr=0.0, patience=1, progress=False)
    assert history.stopped_early and history.epochs == 2


@pytest.mark.slow
def test_predict_logits_from_array_and_loader(trained_cnn, digits):
    from_array = train.predict_logits(trained_cnn, digits.x_test, batch_size=100)
    from_loader = train.predict_logits(trained_cnn, data.torch_loaders(digits, 64)["test"])
    assert from_array.shape == (450, 10)
    np.testing.assert_allclose(from_array, from_loader, atol=1e-5)
