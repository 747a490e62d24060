"""ResNet-18 with scaling-and-shifting convolutions."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mtl_keras.backbones.resnet12_backbone import BN_MOMENTUM, _check_input_shape
from mtl_keras.layers.scale_shift_conv2d import ScaleShiftConv2D


def resnet18(
    input_shape: Sequence[int] = (84, 84, 3),
    widths: Sequence[int] = (64, 128, 256, 512),
    phase: str = "pretrain",
    name: str = "resnet18",
    bn_momentum: float = BN_MOMENTUM,
) -> keras.Model:
    """ResNet-18 (basic blocks 2-2-2-2) with a small-image 3×3 stem.

    Stem: ``ScaleShiftConv2D 3×3 → BN → ReLU``; then four stages of two basic
    blocks (two 3×3 SS convolutions each, strides 1, 2, 2, 2), a 1×1 projection
    shortcut (no SS) where the shape changes, global average pooling.

    Args:
        input_shape: ``(H, W, C)``.
        widths: channels of the four stages.
        phase: initial phase of the `ScaleShiftConv2D` layers.
        name: model name.
        bn_momentum: momentum of the batch norms' moving statistics (see `resnet12`).

    Returns:
        A `keras.Model` ``(batch, H, W, C) → (batch, widths[-1])``.
    """
    _check_input_shape(input_shape, min_size=8, name="resnet18")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ScaleShiftConv2D(widths[0], 3, use_bias=False, phase=phase, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for s, width in enumerate(widths):
        for b in range(2):
            p = f"stage{s + 1}_block{b + 1}_"
            stride = 2 if (s > 0 and b == 0) else 1
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False, name=p + "proj")(x)
                shortcut = keras.layers.BatchNormalization(momentum=bn_momentum, name=p + "proj_bn")(shortcut)
            y = ScaleShiftConv2D(width, 3, strides=stride, use_bias=False, phase=phase, name=p + "conv1")(x)
            y = keras.layers.BatchNormalization(momentum=bn_momentum, name=p + "bn1")(y)
            y = keras.layers.ReLU(name=p + "relu1")(y)
            y = ScaleShiftConv2D(width, 3, use_bias=False, phase=phase, name=p + "conv2")(y)
            y = keras.layers.BatchNormalization(momentum=bn_momentum, name=p + "bn2")(y)
            x = keras.layers.Add(name=p + "add")([y, shortcut])
            x = keras.layers.ReLU(name=p + "relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, x, name=name)
