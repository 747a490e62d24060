"""Keras 3 preprocessing pipelines for pretraining and episodes."""

from __future__ import annotations

import keras


def pretrain_augmentation(
    translate: float = 0.1,
    zoom: float = 0.1,
    rotate: float = 0.03,
    flip: bool = False,
    seed: int = 0,
) -> keras.Sequential:
    """Random shift / zoom / rotation (and optional horizontal flip) of ``(b, H, W, C)`` images.

    Flips are off by default: for characters a mirror image is often another class.

    Args:
        translate: max shift as a fraction of the size.
        zoom: max zoom in/out fraction.
        rotate: max rotation as a fraction of 2π.
        flip: add random horizontal flips (natural images).
        seed: seed of the random layers.
    """
    layers = [
        keras.layers.RandomTranslation(translate, translate, fill_mode="constant", seed=seed),
        keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomRotation(rotate, fill_mode="constant", seed=seed + 2),
    ]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 3))
    return keras.Sequential(layers, name="pretrain_augmentation")
