"""`enable_scale_shift(model)`: meta-transfer any pretrained functional or Sequential Keras CNN."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import keras

from mtl_keras.layers.phase import iter_layers, set_phase
from mtl_keras.layers.scale_shift_conv2d import ScaleShiftConv2D
from mtl_keras.layers.scale_shift_dense import ScaleShiftDense
from mtl_keras.layers.scale_shift_depthwise_conv2d import ScaleShiftDepthwiseConv2D
from mtl_keras.layers.scale_shift_layer import ScaleShiftLayer

#: Keras layer type → (its scale-and-shift counterpart, the constructor from a trained layer).
CONVERTERS = {
    "Conv2D": (keras.layers.Conv2D, ScaleShiftConv2D.from_conv2d, ScaleShiftConv2D.conversion_problems),
    "DepthwiseConv2D": (
        keras.layers.DepthwiseConv2D,
        ScaleShiftDepthwiseConv2D.from_depthwise_conv2d,
        ScaleShiftDepthwiseConv2D.conversion_problems,
    ),
    "Dense": (keras.layers.Dense, ScaleShiftDense.from_dense, ScaleShiftDense.conversion_problems),
}

#: Layers holding convolution kernels that no scale-and-shift layer replaces: named, never converted.
_NO_COUNTERPART = (
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv1D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.SeparableConv1D,
)


def enable_scale_shift(
    model: keras.Model,
    layers: Sequence[str] = ("Conv2D", "DepthwiseConv2D"),
    include: str | None = None,
    exclude: str | None = None,
    last_n: int | None = None,
    phase: str = "meta",
    on_unconverted: str = "warn",
) -> keras.Model:
    """A functional copy of ``model`` whose convolutions are scale-and-shift layers.

    Every targeted `keras.layers.Conv2D` becomes a `ScaleShiftConv2D`, every
    `keras.layers.DepthwiseConv2D` a `ScaleShiftDepthwiseConv2D` and, when asked for, every
    `keras.layers.Dense` a `ScaleShiftDense`, holding a **copy** of the pretrained kernel and
    bias as Θ (strides, padding, dilation, groups and a fused activation carry over) and
    Φ = (scale 1, shift 0); every other layer is rebuilt from its config with its weights
    copied, so at Φ = (1, 0) the copy computes the same function as ``model`` (tested on
    keras.applications models to float32 round-off) and ``model`` itself is left untouched.
    Nested functional and Sequential sub-models (keras-hub backbones, ConvNeXt's stages)
    are converted too. Targets follow keras-hub's ``enable_lora``: by type, by a name
    pattern, or the last ``N``.

    The copy is returned in phase ``phase``: with ``"meta"`` (default) only Φ trains and
    every other layer is frozen (`set_phase`), as `MetaTransferModel` wants it.

    Layers that hold kernels but cannot be converted are named in one warning line
    (``on_unconverted="raise"``: a `ValueError`; ``"ignore"``: nothing) and copied as they
    are: a targeted layer with ``data_format="channels_first"`` or quantized weights, a
    subclass of a targeted type (its ``call`` may differ), a `SeparableConv2D`,
    `Conv2DTranspose`, 1-D or 3-D convolution, or a custom layer or subclassed sub-model
    with convolutions inside.

    Args:
        model: a built functional or Sequential `keras.Model` (``keras.applications``,
            a keras-hub backbone, your own). Subclassed models cannot be rebuilt layer by
            layer: a `TypeError` says what to do.
        layers: the layer types to convert, among ``"Conv2D"``, ``"DepthwiseConv2D"``,
            ``"Dense"``.
        include: a regular expression (`re.search`); only layers whose name — or path
            ``"submodel/layer"`` inside nested models — matches are converted.
        exclude: a regular expression; layers whose name or path matches are not converted.
        last_n: convert only the last ``N`` of the convertible targets, in topological
            order (the layers nearest the output; layers, not blocks: block boundaries
            differ between architectures).
        phase: ``"meta"`` (Φ trains, everything else frozen) or ``"pretrain"``.
        on_unconverted: ``"warn"``, ``"raise"`` or ``"ignore"`` layers that cannot be converted.

    Returns:
        A new functional (or Sequential, for a Sequential ``model``) `keras.Model` with the
        same inputs, outputs, name and layer names.

    Raises:
        TypeError: ``model`` is subclassed (not functional or Sequential).
        ValueError: no layer matched the targets, or unknown ``layers``.

    Example:
        >>> base = keras.applications.MobileNetV2(
        ...     input_shape=(96, 96, 3), include_top=False, pooling="avg", weights="imagenet")
        >>> backbone = mtl_keras.enable_scale_shift(base)       # Φ = (1, 0): same outputs
        >>> model = mtl_keras.MetaTransferModel(backbone, ways=5)
    """
    unknown = [t for t in layers if t not in CONVERTERS]
    if unknown or not layers:
        raise ValueError(f"layers must name some of {tuple(CONVERTERS)}, got {tuple(layers)}.")
    if on_unconverted not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_unconverted must be 'warn', 'raise' or 'ignore', got {on_unconverted!r}.")
    if last_n is not None and int(last_n) < 1:
        raise ValueError(f"last_n must be a positive number of layers, got {last_n}.")
    _check_clonable(model)
    targets = {CONVERTERS[t][0]: CONVERTERS[t] for t in layers}
    include_re = re.compile(include) if include else None
    exclude_re = re.compile(exclude) if exclude else None

    # 1. Which layers, in topological order, are converted; which cannot be.
    chosen, refused = [], []  # (path, layer); (number of chosen layers before it, path, reason)
    for path, layer in _graph_layers(model):
        if (include_re and not include_re.search(path)) or (exclude_re and exclude_re.search(path)):
            continue
        entry = targets.get(type(layer))
        if entry is not None:
            problems = entry[2](layer)
            if problems:
                refused.append((len(chosen), path, "; ".join(problems)))
            else:
                chosen.append((path, layer))
            continue
        reason = _why_not_convertible(layer, targets)
        if reason:
            refused.append((len(chosen), path, reason))
    if last_n is not None and len(chosen) > last_n:
        first = len(chosen) - int(last_n)
        chosen = chosen[first:]
        refused = [r for r in refused if r[0] > first]  # only those after the first of the last N
    if not chosen:
        found = sorted({type(layer).__name__ for _, layer in _graph_layers(model)})
        raise ValueError(
            f"enable_scale_shift: no layer of '{model.name}' to convert among {tuple(layers)}"
            + (f" matching include={include!r}" if include else "")
            + (f" outside exclude={exclude!r}" if exclude else "")
            + f"; it has {', '.join(found)}."
        )
    if refused:
        line = (
            f"enable_scale_shift: {len(refused)} layer(s) of '{model.name}' not converted (copied as they are): "
            + ", ".join(f"{path} ({reason})" for _, path, reason in refused)
        )
        if on_unconverted == "raise":
            raise ValueError(line)
        if on_unconverted == "warn":
            warnings.warn(line, stacklevel=2)

    # 2. Clone: converted layers get Θ from `from_*`; every other layer is rebuilt and its weights copied.
    convert = {id(layer) for _, layer in chosen}
    copies = []  # (original, clone) of every layer rebuilt from its config (operations too)

    def clone_function(layer):
        if id(layer) in convert:
            return targets[type(layer)][1](layer, phase=phase, name=layer.name)
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.Layer):  # not an op of the graph (e.g. ``x + y``)
            copies.append((layer, clone))
        return clone

    converted = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    for original, clone in copies:
        weights = original.get_weights()
        if weights:
            try:
                clone.set_weights(weights)
            except ValueError as err:
                raise ValueError(
                    f"enable_scale_shift: cannot copy the weights of layer '{original.name}' "
                    f"({type(original).__name__}) into its rebuilt copy: {err}"
                ) from err
    return set_phase(converted, phase)


def _check_clonable(model) -> None:
    if isinstance(model, keras.Sequential):
        return
    if not isinstance(model, keras.Model):
        raise TypeError(f"enable_scale_shift expects a keras.Model, got {type(model).__name__}.")
    try:  # a functional model (or a subclass of one, like keras-hub's backbones) has a graph
        model.inputs, model.outputs  # noqa: B018
        graph = bool(model.inputs) and bool(model.outputs)
    except AttributeError:
        graph = False
    if not graph:
        raise TypeError(
            f"enable_scale_shift: '{model.name}' is a subclassed keras.Model ({type(model).__name__}): "
            "Keras can only rebuild functional and Sequential models layer by layer. Build it "
            "functionally (keras.Model(inputs, outputs)), or use mtl_keras.ScaleShiftConv2D (or "
            "ScaleShiftConv2D.from_conv2d(trained_conv)) for its convolutions in its own code."
        )


def _graph_layers(model, prefix: str = ""):
    """``(path, layer)`` of every layer of a functional/Sequential model, nested models opened, in
    topological order (Keras keeps ``model.layers`` so); input layers left out."""
    seen = set()
    for layer in model.layers:
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        path = prefix + layer.name
        if _is_graph_model(layer):
            yield from _graph_layers(layer, path + "/")
        else:
            yield path, layer


def _is_graph_model(layer) -> bool:
    if isinstance(layer, keras.Sequential):
        return True
    if not isinstance(layer, keras.Model):
        return False
    try:
        return bool(layer.inputs) and bool(layer.outputs)
    except AttributeError:
        return False


def _why_not_convertible(layer, targets) -> str | None:
    """Why a layer of a type with no converter, but holding kernels, is left as it is (None: fine)."""
    if isinstance(layer, ScaleShiftLayer):
        return None
    if isinstance(layer, tuple(targets)):
        return f"a {type(layer).__name__}, subclass of {_base_name(layer, targets)}: its call may differ"
    if isinstance(layer, _NO_COUNTERPART):
        return f"{type(layer).__name__} has no scale-and-shift counterpart"
    inner = [sub for sub in iter_layers(layer) if type(sub) in targets] if _has_sublayers(layer) else []
    if inner:
        kind = "subclassed model" if isinstance(layer, keras.Model) else "custom layer"
        return f"{kind} {type(layer).__name__} holding {len(inner)} {type(inner[0]).__name__} layer(s)"
    return None


def _has_sublayers(layer) -> bool:
    try:
        next(iter_layers(layer))
        return True
    except (StopIteration, AttributeError):
        return False


def _base_name(layer, targets) -> str:
    return next(t.__name__ for t in targets if isinstance(layer, t))
