"""Keras (tf_keras, i.e. Keras 2) twins of the course's PyTorch models.

Same layers, same parameter counts, NHWC layout. :func:`copy_weights_from_torch`
moves trained PyTorch weights into the twin, so a TFLite / LiteRT artefact can
be built from exactly the model that PyTorch trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from course_lib import import_tensorflow
from course_lib.models.blocks import BLOCKS, make_divisible
from course_lib.models.cnn import SmallCNN

if TYPE_CHECKING:  # TensorFlow is heavy: imported through import_tensorflow() where used
    import tf_keras


def small_cnn_keras(
    num_classes: int = 10,
    image_size: int = 8,
    in_channels: int = 1,
    channels: tuple[int, int] = (32, 64),
    hidden: int = 32,
    seed: int | None = 0,
) -> tf_keras.Model:
    """The Keras twin of :class:`course_lib.models.SmallCNN` (input ``N × H × W × C``)."""
    tf = import_tensorflow()
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    c1, c2 = channels
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(image_size, image_size, in_channels)),
            layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(hidden, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="fc2"),
        ],
        name="small_cnn",
    )


def copy_weights_from_torch(torch_model: nn.Module, keras_model: tf_keras.Model) -> tf_keras.Model:
    """Copy a :class:`SmallCNN`'s weights into its Keras twin, in place, and return the twin.

    Convolution kernels go from ``out × in × kh × kw`` to ``kh × kw × in × out``;
    linear weights are transposed. The first dense layer also needs its rows
    reordered, because PyTorch flattens ``C × H × W`` and Keras ``H × W × C``.
    """
    torch_model, conv1, conv2, fc1, fc2 = _small_cnn_layers(torch_model)

    def np_(t: Any) -> np.ndarray:
        return t.detach().cpu().numpy()

    c2 = conv2.out_channels
    side = torch_model.image_size // 2
    # fc1.weight is hidden × (C·H·W) in PyTorch order; reorder its columns to (H·W·C).
    fc1_w = np_(fc1.weight).reshape(-1, c2, side, side).transpose(0, 2, 3, 1).reshape(fc1.out_features, -1)
    values = {
        "conv1": [np_(conv1.weight).transpose(2, 3, 1, 0), np_(conv1.bias)],
        "conv2": [np_(conv2.weight).transpose(2, 3, 1, 0), np_(conv2.bias)],
        "fc1": [fc1_w.T, np_(fc1.bias)],
        "fc2": [np_(fc2.weight).T, np_(fc2.bias)],
    }
    for name, weights in values.items():
        layer = keras_model.get_layer(name)
        expected = [w.shape for w in layer.get_weights()]
        if [w.shape for w in weights] != expected:
            raise ValueError(
                f"layer {name}: PyTorch weights {[w.shape for w in weights]} do not fit Keras weights {expected}; "
                "build both models with the same image_size, channels and hidden width"
            )
        layer.set_weights(weights)
    return keras_model


def _small_cnn_layers(model: nn.Module) -> tuple[SmallCNN, nn.Conv2d, nn.Conv2d, nn.Linear, nn.Linear]:
    """The model as a :class:`SmallCNN` and its conv1, conv2, fc1, fc2, or a clear error for any other model."""
    if not isinstance(model, SmallCNN):
        raise TypeError(f"a Keras twin exists only for course_lib.models.SmallCNN, got {type(model).__name__}")
    conv1, conv2, fc1, fc2 = model.features[0], model.features[2], model.classifier[1], model.classifier[3]
    if not (isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d) and isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)):
        raise TypeError("this SmallCNN's layers are not conv, conv, linear, linear any more: no Keras twin for it")
    return model, conv1, conv2, fc1, fc2


def keras_twin_of(torch_model: nn.Module) -> tf_keras.Model:
    """A Keras twin with the same shape as ``torch_model`` (any channels / hidden width) and its weights."""
    torch_model, conv1, conv2, fc1, fc2 = _small_cnn_layers(torch_model)
    twin = small_cnn_keras(
        num_classes=fc2.out_features, image_size=torch_model.image_size, in_channels=conv1.in_channels,
        channels=(conv1.out_channels, conv2.out_channels), hidden=fc1.out_features, seed=None,
    )
    return copy_weights_from_torch(torch_model, twin)


def tiny_net_keras(
    block: str = "separable", width: float = 1.0, image_size: int = 8, in_channels: int = 1, num_classes: int = 10,
    seed: int | None = 0,
) -> tf_keras.Model:
    """Keras twin of :class:`course_lib.models.blocks.TinyNet`: same blocks, same trainable parameter count.

    (Keras also counts BatchNorm's moving mean and variance as non-trainable
    parameters; PyTorch keeps them as buffers. Compare trainable counts.)
    """
    tf = import_tensorflow()
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    L = tf.keras.layers

    def bn_act(x: Any, relu6: bool = False, act: bool = True) -> Any:
        x = L.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
        return L.ReLU(max_value=6.0 if relu6 else None)(x) if act else x

    def standard(x: Any, c_out: int, stride: int) -> Any:
        return bn_act(L.Conv2D(c_out, 3, stride, padding="same", use_bias=False)(x))

    def separable(x: Any, c_out: int, stride: int) -> Any:
        x = bn_act(L.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(x))
        return bn_act(L.Conv2D(c_out, 1, use_bias=False)(x))

    def inverted(x: Any, c_out: int, stride: int, expansion: int = 4) -> Any:
        c_in = x.shape[-1]
        y = bn_act(L.Conv2D(c_in * expansion, 1, use_bias=False)(x), relu6=True)
        y = bn_act(L.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(y), relu6=True)
        y = bn_act(L.Conv2D(c_out, 1, use_bias=False)(y), act=False)
        return L.Add()([x, y]) if stride == 1 and c_in == c_out else y

    make = {"standard": standard, "separable": separable, "inverted": inverted}[block]
    c0, c1, c2 = (make_divisible(c * width) for c in (16, 32, 64))
    inputs = tf.keras.Input(shape=(image_size, image_size, in_channels))
    x = standard(inputs, c0, 1)
    x = make(make(x, c1, 2), c1, 1)
    x = make(make(x, c2, 2), c2, 1)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes)(x)
    return tf.keras.Model(inputs, outputs, name=f"tiny_net_{block}_{width:g}")
