"""`set_phase(model, phase)`: choose which weights of a backbone train."""

from __future__ import annotations

import keras

from mtl_keras import keras_private
from mtl_keras.layers.scale_shift_layer import PHASES, ScaleShiftLayer


def iter_layers(model: keras.layers.Layer):
    """All sub-layers of ``model`` (depth first, each once), ``model`` excluded."""
    seen = set()
    stack = list(reversed(keras_private.child_layers(model)))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(reversed(keras_private.tracked_layers(layer)))


def set_phase(model: keras.layers.Layer, phase: str, train_batch_norm: bool = False) -> keras.layers.Layer:
    """Set which weights of ``model`` train, in place.

    ``"pretrain"``: every layer trains its ordinary weights; in each scale-and-shift
    layer (`ScaleShiftConv2D`, `ScaleShiftDepthwiseConv2D`, `ScaleShiftDense`: any
    `ScaleShiftLayer`) only Θ (kernel, bias) trains and Φ stays at (1, 0).

    ``"meta"``: only Φ (scale, shift of each scale-and-shift layer) trains; every
    other layer is frozen (``trainable=False``), so batch normalisation runs in
    inference mode with its pretrained statistics. A model without scale-and-shift
    layers has nothing left to train (see `mtl_keras.enable_scale_shift`).

    With ``train_batch_norm=True`` the ``"meta"`` phase also trains the γ and β of every
    `keras.layers.BatchNormalization` (as the official MTL PyTorch code does); their moving
    statistics stay non-trainable. Keras normalises with batch statistics only when a BN is
    called with ``training=True`` *and* is trainable, so a trainable BN must then be called
    with ``training=False`` to keep the pretrained statistics (what `MetaTransferModel` does
    with ``batch_norm="frozen"``).

    Args:
        model: a backbone or any layer/model containing scale-and-shift layers.
        phase: ``"pretrain"`` or ``"meta"``.
        train_batch_norm: in the ``"meta"`` phase, leave batch norm's γ and β trainable.

    Returns:
        ``model``, for chaining.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
    model.trainable = True
    for layer in iter_layers(model):
        if isinstance(layer, ScaleShiftLayer):
            layer.trainable = True
            layer.set_phase(phase)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = phase == "pretrain" or bool(train_batch_norm)
        elif not keras_private.tracked_layers(layer):
            layer.trainable = phase == "pretrain"
    return model


def phi_weights(model: keras.layers.Layer) -> list:
    """All Φ variables (scale and shift) of the scale-and-shift layers in ``model``."""
    return [v for layer in iter_layers(model) if isinstance(layer, ScaleShiftLayer) for v in layer.phi]


def theta_weights(model: keras.layers.Layer) -> list:
    """All variables of ``model`` that are not Φ (pretrained weights and BN statistics)."""
    phi = {id(v) for v in phi_weights(model)}
    return [v for v in model.weights if id(v) not in phi]


def named_scale_shift_layers(model: keras.layers.Layer, prefix: str = ""):
    """``(path, layer)`` of every scale-and-shift layer inside ``model``, depth first.

    ``path`` is the chain of layer names below ``model``, ``"/"``-separated
    (``"block_1_expand"``, ``"stem/conv"`` inside a nested model): the same for two
    models built alike, whatever their own names.
    """
    seen = set()
    children = keras_private.child_layers(model)
    for layer in children:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = prefix + layer.name
        if isinstance(layer, ScaleShiftLayer):
            yield path, layer
        else:
            yield from named_scale_shift_layers(layer, path + "/")
