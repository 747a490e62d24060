"""Conv-4, the shallow backbone of MAML-style meta-learning."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mtl_keras.backbones.resnet12_backbone import BN_MOMENTUM, _check_input_shape
from mtl_keras.layers.scale_shift_conv2d import ScaleShiftConv2D


def conv4(
    input_shape: Sequence[int] = (84, 84, 3),
    filters: int = 64,
    phase: str = "pretrain",
    name: str = "conv4",
    bn_momentum: float = BN_MOMENTUM,
) -> keras.Model:
    """Four blocks of ``ScaleShiftConv2D 3×3 → BN → ReLU → max-pool 2``, flattened.

    Args:
        input_shape: ``(H, W, C)``.
        filters: channels of every block.
        phase: initial phase of the `ScaleShiftConv2D` layers.
        name: model name.
        bn_momentum: momentum of the batch norms' moving statistics (see `resnet12`).

    Returns:
        A `keras.Model` ``(batch, H, W, C) → (batch, filters * (H//16) * (W//16))``.
    """
    _check_input_shape(input_shape, min_size=16, name="conv4")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for i in range(4):
        p = f"block{i + 1}_"
        x = ScaleShiftConv2D(filters, 3, phase=phase, name=p + "conv")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=p + "bn")(x)
        x = keras.layers.ReLU(name=p + "relu")(x)
        x = keras.layers.MaxPooling2D(2, name=p + "pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, x, name=name)
