import gzip
import pickle
import struct

import numpy as np
import pytest

from course_lib import data


def test_digits_split_is_fixed_and_disjoint(digits):
    assert digits.sizes() == {"train": 1167, "val": 180, "test": 450}
    assert digits.input_shape == (1, 8, 8)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    again = data.load_digits()
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    # no image appears in two parts
    rows = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}
    assert not rows(digits.x_test) & rows(digits.x_train)
    # stratified: every class is in the test set
    assert set(digits.y_test.tolist()) == set(range(10))


@pytest.mark.parametrize("size", [16, 28])
def test_digits_upsampled(size):
    split = data.load_digits(image_size=size)
    assert split.x_train.shape[1:] == (1, size, size)
    assert split.nhwc("test").shape == (450, size, size, 1)


def test_bad_arguments_give_clear_errors(digits):
    with pytest.raises(ValueError, match="image_size must be 8, 16 or 28"):
        data.load_digits(image_size=10)
    with pytest.raises(ValueError, match="part must be"):
        digits.nhwc("validation")
    with pytest.raises(TypeError, match="nhwc takes the name of a part .* got ndarray"):
        digits.nhwc(digits.x_test)  # the array instead of its name: said plainly, not NumPy's "truth value" error
    with pytest.raises(ValueError, match="batch_size"):
        data.torch_loaders(digits, batch_size=0)
    with pytest.raises(ValueError, match="N × C × H × W"):
        data.resize(np.zeros((8, 8), np.float32), 16)


def test_torch_loaders_shuffle_reproducibly(digits):
    first = next(iter(data.torch_loaders(digits, 32, seed=1)["train"]))[1]
    second = next(iter(data.torch_loaders(digits, 32, seed=1)["train"]))[1]
    assert first.tolist() == second.tolist()
    test_batch = next(iter(data.torch_loaders(digits, 32)["test"]))[1]
    assert test_batch.tolist() == digits.y_test[:32].tolist()  # test order is never shuffled


@pytest.mark.slow
def test_tf_datasets_hold_the_same_arrays(digits):
    ds = data.tf_datasets(digits, batch_size=450)["test"]
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), digits.nhwc("test"))
    np.testing.assert_array_equal(y.numpy(), digits.y_test)


def test_synthetic_is_learnable_shape():
    split = data.synthetic(n=100, input_shape=(3, 4, 4), num_classes=3)
    assert split.sizes() == {"train": 60, "val": 20, "test": 20}
    assert split.x_train.shape[1:] == (3, 4, 4)


def write_idx(path, array, gz=False):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    # Closed explicitly: from Python 3.12 GzipFile buffers writes, and an unclosed one left a truncated file.
    with (gzip.open if gz else open)(path, "wb") as fh:
        fh.write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader_on_small_files_written_here(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    train_x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, 20, dtype=np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train_x, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", train_y, gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", train_x[:5], gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", train_y[:5], gz)
    split = data.load_mnist(tmp_path, val_size=4)
    assert split.sizes() == {"train": 16, "val": 4, "test": 5}
    np.testing.assert_allclose(split.x_test[:, 0], train_x[:5] / 255.0, atol=1e-7)
    assert sorted(np.concatenate([split.y_train, split.y_val]).tolist()) == sorted(train_y.tolist())


def test_mnist_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        data.load_mnist(tmp_path / "nope")
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="header says 10"):
        data.read_idx(short)


def test_cifar10_reader_on_small_batches_written_here(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 4))}
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(batch, fh)
    split = data.load_cifar10(tmp_path, val_size=2)
    assert split.sizes() == {"train": 18, "val": 2, "test": 4}
    assert split.input_shape == (3, 32, 32)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.load_cifar10(tmp_path)
