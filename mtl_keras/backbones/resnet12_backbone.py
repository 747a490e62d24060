"""ResNet-12, the backbone of meta-transfer learning."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mtl_keras.layers.scale_shift_conv2d import ScaleShiftConv2D

#: Momentum of the backbones' batch-norm moving statistics: PyTorch's default (0.1 in its
#: convention), which the official MTL code keeps. Keras's own default, 0.99, forgets the
#: initial statistics only after hundreds of steps: a backbone pretrained on a small set (a
#: few steps per epoch) then classifies far worse in inference mode than with batch statistics.
BN_MOMENTUM = 0.9


def resnet12(
    input_shape: Sequence[int] = (84, 84, 3),
    widths: Sequence[int] = (64, 128, 256, 512),
    dropout: float = 0.0,
    phase: str = "pretrain",
    name: str = "resnet12",
    bn_momentum: float = BN_MOMENTUM,
) -> keras.Model:
    """ResNet-12 as in MTL: four residual blocks, each three 3×3 convolutions.

    Each block: ``[ScaleShiftConv2D 3×3 → BN → LeakyReLU(0.1)] × 2 →
    ScaleShiftConv2D 3×3 → BN``, plus a residual ``Conv2D 1×1 → BN`` (no SS),
    added, then LeakyReLU(0.1) and max-pool 2. Global average pooling at the end.

    Args:
        input_shape: ``(H, W, C)`` of the images.
        widths: channels of the four blocks.
        dropout: dropout rate after each block (for pretraining; inactive in
            the ``meta`` phase since the model is then called with ``training=False``).
        phase: initial phase of the `ScaleShiftConv2D` layers.
        name: model name.
        bn_momentum: momentum of the batch norms' moving statistics (default `BN_MOMENTUM`).

    Returns:
        A `keras.Model` ``(batch, H, W, C) float32 → (batch, widths[-1])``.
        Inputs are expected in ``[0, 1]``; normalise before if needed.
    """
    if len(widths) != 4:
        raise ValueError(f"resnet12 takes 4 widths, got {tuple(widths)}.")
    _check_input_shape(input_shape, min_size=16, name="resnet12")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for i, width in enumerate(widths):
        p = f"block{i + 1}_"
        residual = keras.layers.Conv2D(width, 1, use_bias=False, name=p + "res_conv")(x)
        residual = keras.layers.BatchNormalization(momentum=bn_momentum, name=p + "res_bn")(residual)
        for j in range(3):
            x = ScaleShiftConv2D(width, 3, use_bias=False, phase=phase, name=p + f"conv{j + 1}")(x)
            x = keras.layers.BatchNormalization(momentum=bn_momentum, name=p + f"bn{j + 1}")(x)
            if j < 2:
                x = keras.layers.LeakyReLU(0.1, name=p + f"relu{j + 1}")(x)
        x = keras.layers.Add(name=p + "add")([x, residual])
        x = keras.layers.LeakyReLU(0.1, name=p + "relu3")(x)
        x = keras.layers.MaxPooling2D(2, name=p + "pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=p + "dropout")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, x, name=name)


def _check_input_shape(input_shape, min_size: int, name: str) -> None:
    if len(input_shape) != 3:
        raise ValueError(f"{name}: input_shape must be (H, W, C), got {tuple(input_shape)}.")
    h, w, _ = input_shape
    if h is not None and w is not None and min(h, w) < min_size:
        raise ValueError(
            f"{name}: images of {h}x{w} are too small (the backbone halves them 4 times); "
            f"use at least {min_size}x{min_size}, e.g. resize with `image_size={min_size}`."
        )
