"""Datasets for the course, all offline.

The default is scikit-learn's bundled *digits* (1,797 greyscale 8×8 images of
handwritten digits, shipped inside scikit-learn, so nothing is downloaded).
It is small enough to train a CNN in seconds on two CPU cores, which keeps
every lecture under a few minutes.

Readers for MNIST / Fashion-MNIST (IDX files) and CIFAR-10 (pickled batches)
exist for learners who already have those files on disk; they never
download. Everything comes back as NumPy arrays in one :class:`Split`, from
which PyTorch ``DataLoader``s and ``tf.data`` datasets are made, so both
frameworks see exactly the same samples.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from course_lib import import_tensorflow

#: Sizes of the fixed digits split (train, val, test); they add up to 1,797.
DIGITS_SPLIT = (1167, 180, 450)


@dataclass
class Split:
    """Train / validation / test arrays of one dataset.

    Images are ``float32`` in ``N × C × H × W`` (PyTorch's layout) scaled to
    [0, 1]; labels are ``int64``. Use :meth:`nhwc` for Keras / TFLite.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        """Number of samples in each part."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def nhwc(self, part: str) -> np.ndarray:
        """The images of ``part`` ('train', 'val' or 'test') as ``N × H × W × C`` for Keras."""
        if not isinstance(part, str):  # e.g. nhwc(split.x_test): `in` on an array fails with NumPy's "truth value" error
            raise TypeError(
                f"nhwc takes the name of a part ('train', 'val' or 'test'), got {type(part).__name__}; "
                "to transpose an array of N × C × H × W images use array.transpose(0, 2, 3, 1)"
            )
        if part not in ("train", "val", "test"):
            raise ValueError(f"part must be 'train', 'val' or 'test', got {part!r}")
        return np.ascontiguousarray(getattr(self, f"x_{part}").transpose(0, 2, 3, 1))


def load_digits(image_size: int = 8, seed: int = 0) -> Split:
    """scikit-learn's bundled digits with the course's fixed split.

    Args:
        image_size: 8 (native), or 16 / 28 to upsample with bilinear
            interpolation (some architectures need larger inputs).
        seed: the split's shuffle seed. Keep 0 so that every lecture and every
            grader sees the same test set.

    Returns:
        A :class:`Split` of 1,167 / 180 / 450 samples, stratified by class.
    """
    if image_size not in (8, 16, 28):
        raise ValueError(f"image_size must be 8, 16 or 28, got {image_size!r}")
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    n_train, n_val, n_test = DIGITS_SPLIT
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=n_test, random_state=seed, stratify=labels
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=n_val, random_state=seed, stratify=y_rest
    )
    if image_size != 8:
        x_train, x_val, x_test = (resize(x, image_size) for x in (x_train, x_val, x_test))
    return Split(
        name=f"digits{image_size}",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=10,
        class_names=[str(i) for i in range(10)],
    )


def cross_fit_splits(split: Split, folds: int = 5, val_size: int = 180, seed: int = 0) -> list[Split]:
    """``folds`` splits in which every image of ``split`` (all its parts pooled) is a test image exactly once.

    Why: the digits' fixed test set has 450 images, so one standard error of
    top-1 is about 0.9 points, as large as many effects the course measures.
    Cross-fitting trains one model per fold on the other folds and tests it
    on its own fold; pooling the folds' predictions evaluates on all 1,797
    images, each by a model that never trained on it. Folds are stratified
    by class; each fold's training part keeps ``val_size`` images apart for
    validation.
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer ≥ 2, got {folds!r}")
    images = np.concatenate([split.x_train, split.x_val, split.x_test])
    labels = np.concatenate([split.y_train, split.y_val, split.y_test])
    if not 0 < val_size < len(labels) * (folds - 1) // folds:
        raise ValueError(f"val_size must be between 1 and the size of a fold's training part, got {val_size!r}")
    result = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for index, (rest, test) in enumerate(splitter.split(images, labels)):
        train, val = train_test_split(rest, test_size=val_size, random_state=seed, stratify=labels[rest])
        result.append(Split(
            name=f"{split.name}-fold{index}", x_train=images[train], y_train=labels[train], x_val=images[val],
            y_val=labels[val], x_test=images[test], y_test=labels[test], num_classes=split.num_classes,
            class_names=list(split.class_names),
        ))
    return result


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly resize ``N × C × H × W`` images to ``size × size``."""
    import torch
    import torch.nn.functional as F

    _check_nchw(images)
    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp_(0.0, 1.0).numpy().astype(np.float32)


def synthetic(
    n: int = 256, input_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 10, seed: int = 0
) -> Split:
    """A learnable synthetic dataset: each class is a fixed random pattern plus noise.

    Useful for tests and for shapes no bundled dataset has. Split 60/20/20.
    """
    if n < 5:
        raise ValueError(f"n must be at least 5 to fill three parts, got {n}")
    rng = np.random.default_rng(seed)
    prototypes = rng.random((num_classes, *input_shape), dtype=np.float32)
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    noise = 0.3 * rng.standard_normal((n, *input_shape)).astype(np.float32)
    images = np.clip(prototypes[labels] + noise, 0.0, 1.0).astype(np.float32)
    a, b = int(0.6 * n), int(0.8 * n)
    return Split("synthetic", images[:a], labels[:a], images[a:b], labels[a:b], images[b:], labels[b:], num_classes)


# --- optional datasets from local files -------------------------------------------------------

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the MNIST format), plain or ``.gz``.

    The header is two zero bytes, a type code, the number of dimensions, then
    one big-endian uint32 per dimension; the data follow in C order.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (it must start with two zero bytes)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    type_code, ndim = raw[2], raw[3]
    if type_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[type_code], offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if data.size != expected:
        raise ValueError(f"{path}: header says {expected} values, file holds {data.size}")
    return data.reshape(dims).astype(dtypes[type_code][1:])


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{stem}(.gz) not found in {root}. The course never downloads data: copy the dataset's files "
        f"there yourself, or use course_lib.data.load_digits() (bundled, offline)."
    )


def load_mnist(root: str | Path, val_size: int = 5000, seed: int = 0, name: str = "mnist") -> Split:
    """MNIST or Fashion-MNIST from the four IDX files in ``root`` (plain or gzipped).

    Both datasets share the format and file names; pass ``name='fashion-mnist'``
    for labels in the report. The last ``val_size`` training images (after a
    seeded shuffle) become the validation set.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    parts = {}
    for part, (img_stem, lbl_stem) in _MNIST_FILES.items():
        images = read_idx(_find(root, img_stem))
        labels = read_idx(_find(root, lbl_stem)).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"{root}: {part} images {images.shape} do not match labels {labels.shape}")
        parts[part] = ((images.astype(np.float32) / 255.0)[:, None], labels)
    x, y = parts["train"]
    if not 0 <= val_size < len(y):
        raise ValueError(f"val_size must be in [0, {len(y)}), got {val_size}")
    order = np.random.default_rng(seed).permutation(len(y))
    train_idx, val_idx = order[: len(y) - val_size], order[len(y) - val_size :]
    return Split(name, x[train_idx], y[train_idx], x[val_idx], y[val_idx], *parts["test"], num_classes=10)


def load_cifar10(root: str | Path, val_size: int = 5000, seed: int = 0) -> Split:
    """CIFAR-10 from the Python-version batches (``data_batch_1..5``, ``test_batch``) in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")

    def read_batch(stem: str) -> tuple[np.ndarray, np.ndarray]:
        path = root / stem
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found. Put the extracted 'cifar-10-batches-py' files there; the course never downloads."
            )
        with open(path, "rb") as fh:
            batch: dict[Any, Any] = pickle.load(fh, encoding="bytes")
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        if data is None or labels is None:
            raise ValueError(f"{path} is not a CIFAR-10 batch (no 'data' / 'labels' keys)")
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
        return images, np.asarray(labels, dtype=np.int64)

    train = [read_batch(f"data_batch_{i}") for i in range(1, 6)]
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    x_test, y_test = read_batch("test_batch")
    if not 0 <= val_size < len(y):
        raise ValueError(f"val_size must be in [0, {len(y)}), got {val_size}")
    order = np.random.default_rng(seed).permutation(len(y))
    train_idx, val_idx = order[: len(y) - val_size], order[len(y) - val_size :]
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return Split("cifar10", x[train_idx], y[train_idx], x[val_idx], y[val_idx], x_test, y_test, 10, names)


# --- framework adapters -----------------------------------------------------------------------


def torch_loaders(split: Split, batch_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """PyTorch ``DataLoader``s for 'train' (shuffled with a seeded generator), 'val' and 'test'."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    loaders = {}
    for part in ("train", "val", "test"):
        x, y = getattr(split, f"x_{part}"), getattr(split, f"y_{part}")
        dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        loaders[part] = DataLoader(
            dataset, batch_size=batch_size, shuffle=part == "train", generator=generator if part == "train" else None
        )
    return loaders


def tf_datasets(split: Split, batch_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """``tf.data`` datasets (NHWC) of the same arrays: 'train' shuffled with a seed, 'val', 'test'."""
    tf = import_tensorflow()
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    out = {}
    for part in ("train", "val", "test"):
        ds = tf.data.Dataset.from_tensor_slices((split.nhwc(part), getattr(split, f"y_{part}")))
        if part == "train":
            ds = ds.shuffle(len(split.y_train), seed=seed, reshuffle_each_iteration=True)
        out[part] = ds.batch(batch_size)
    return out


def _check_nchw(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"expected images as an N × C × H × W array, got {shape}")


def exercise_split() -> Split:
    """The digits split of graded exercises: the lectures' train and val, and *half* of their test set.

    The other half (:func:`holdout`) is what the grader scores accuracy on:
    images no choice was tuned on and no model was trained on. It is held out
    by convention, not secrecy — scikit-learn ships all 1,797 images.
    """
    split = load_digits()
    split.x_test, split.y_test = split.x_test[0::2].copy(), split.y_test[0::2].copy()
    split.name = "digits8-exercise"
    return split


def holdout() -> tuple[np.ndarray, np.ndarray]:
    """The grader's hold-out images and labels (225; the half of the test set :func:`exercise_split` leaves out)."""
    split = load_digits()
    return split.x_test[1::2].copy(), split.y_test[1::2].copy()

