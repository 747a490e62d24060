"""Φ-only weights files: the scales, shifts and head initialisation, on top of a stock pretrained model.

After keras-hub's ``save_lora_weights`` / ``load_lora_weights``: meta-training changes only Φ
(and the head initialisation), so a meta-trained model is fully described by the stock
pretrained model (``keras.applications.*(weights="imagenet")``, a keras-hub preset, your own
``.keras`` file) plus this small file. The file is a NumPy ``.npz`` archive (no pickle)::

    format                  "mtl_keras.scale_shift_weights/1"
    phi/<layer path>/scale  (1, 1, Cin, Cout), (1, 1, Cin, M) or (Din, units) float32
    phi/<layer path>/shift  (Cout,) float32
    head/kernel, head/bias  (D, N), (N,) float32   (a `MetaTransferModel`'s head only)
    head/feature_scale      () float32             (a cosine head only)

``<layer path>`` is the layer's name, ``"sub/layer"`` inside nested models (see
`named_scale_shift_layers`). Size: one float per k×k kernel (a ninth of a 3×3
convolution's weights; as many as a 1×1 convolution or a dense layer has) plus one per
channel: MobileNetV2 and EfficientNet, mostly 1×1 convolutions, keep most of their
parameter count in Φ, ResNets with 3×3 convolutions far less.
"""

from __future__ import annotations

import io
import os

import numpy as np

from mtl_keras.atomic import write_bytes_atomic
from mtl_keras.layers.phase import named_scale_shift_layers

FORMAT = "mtl_keras.scale_shift_weights/1"


def _parts(model):
    """``(Φ root, head or None)``: a model with ``backbone`` and ``head`` (a `MetaTransferModel`)
    contributes both; any other model or layer its own scale-and-shift layers only."""
    head = getattr(model, "head", None)
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        return backbone, head if head is not None and hasattr(head, "kernel") else None
    return model, None


def scale_shift_weights(model, include_head: bool = True) -> dict[str, np.ndarray]:
    """The arrays `save_scale_shift_weights` writes, by key (see the module doc)."""
    root, head = _parts(model)
    arrays = {}
    for path, layer in named_scale_shift_layers(root):
        if not layer.built:
            raise ValueError(f"Scale-and-shift layer '{path}' is not built: call the model once first.")
        arrays[f"phi/{path}/scale"] = np.asarray(layer.scale, np.float32)
        arrays[f"phi/{path}/shift"] = np.asarray(layer.shift, np.float32)
    if include_head and head is not None:
        arrays["head/kernel"] = np.asarray(head.kernel, np.float32)
        arrays["head/bias"] = np.asarray(head.bias, np.float32)
        if getattr(head, "feature_scale", None) is not None:
            arrays["head/feature_scale"] = np.asarray(head.feature_scale, np.float32)
    return arrays


def save_scale_shift_weights(model, filepath: str, include_head: bool = True) -> str:
    """Write only Φ (every scale and shift) and the head initialisation of ``model``.

    Args:
        model: a `MetaTransferModel` (its backbone's Φ and its head), or a backbone or any
            model holding scale-and-shift layers (Φ only).
        filepath: where to write (``.npz`` by convention); written to a temporary file and
            renamed, so an interrupted save leaves no partial file.
        include_head: also write the head initialisation ``(W0, b0)``.

    Returns:
        ``filepath``.

    Raises:
        ValueError: ``model`` has no scale-and-shift layer (see `enable_scale_shift`).
    """
    arrays = scale_shift_weights(model, include_head=include_head)
    if not any(k.startswith("phi/") for k in arrays):
        raise ValueError(
            f"'{getattr(model, 'name', model)}' has no scale-and-shift layers, so no Φ to save. "
            "Convert it with mtl_keras.enable_scale_shift(model) first."
        )
    buffer = io.BytesIO()
    np.savez(buffer, format=np.array(FORMAT), **arrays)
    path = write_bytes_atomic(filepath, buffer.getvalue())
    return path


def load_scale_shift_weights(model, filepath: str, include_head: bool = True) -> None:
    """Set Φ (and the head initialisation) of ``model`` from a `save_scale_shift_weights` file.

    Every other weight is left as it is: build ``model`` from the same stock pretrained
    model the file was trained on (e.g. ``MetaTransferModel(enable_scale_shift(
    keras.applications.MobileNetV2(weights="imagenet", ...)), ways=5)``) and the outputs are
    those of the meta-trained model. Nothing is assigned unless everything matches.

    Args:
        model: as for `save_scale_shift_weights`.
        filepath: the file.
        include_head: also set the head initialisation (required in the file when ``model``
            has a head). Head entries in the file are ignored for a model without a head.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not such a file; or the file's layers or shapes differ from the model's
            (the message names the layers missing on either side and the shapes that differ).
    """
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Scale-and-shift weights file '{path}' does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"'{path}' is not a scale-and-shift weights file (.npz): {err}") from err
    if str(stored.pop("format", "")) != FORMAT:
        raise ValueError(f"'{path}' is not a scale-and-shift weights file (no format '{FORMAT}').")
    root, head = _parts(model)
    layers = dict(named_scale_shift_layers(root))
    targets = {}
    for path_, layer in layers.items():
        targets[f"phi/{path_}/scale"] = layer.scale
        targets[f"phi/{path_}/shift"] = layer.shift
    if include_head and head is not None:
        targets["head/kernel"] = head.kernel
        targets["head/bias"] = head.bias
        if getattr(head, "feature_scale", None) is not None:
            targets["head/feature_scale"] = head.feature_scale
    stored_phi = {k for k in stored if k.startswith("phi/")}
    problems = []
    missing = list(dict.fromkeys(_layer_of(k) for k in targets if k not in stored))  # model order
    extra = list(dict.fromkeys(_layer_of(k) for k in stored if k in stored_phi and k not in targets))
    if missing:
        problems.append(f"{len(missing)} missing from the file: {_some(missing)}")
    if extra:
        problems.append(f"{len(extra)} in the file but not in the model: {_some(extra)}")
    shapes = [
        f"{k} {tuple(stored[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in targets.items()
        if k in stored and tuple(stored[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shapes differ: {_some(shapes)}")
    if problems:
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(
            f"'{path}' does not fit '{name}' ({len(layers)} scale-and-shift layers): {'; '.join(problems)}. "
            "Convert the same architecture with the same enable_scale_shift targets"
            + (
                ", and the same ways"
                if "head" in missing or any(s.startswith("head/") for s in shapes)
                else ""
            )
            + "."
        )
    bad = [key for key in targets if not np.isfinite(stored[key]).all()]
    if bad:
        raise ValueError(
            f"'{path}' holds NaN or inf in {_some(bad)}: it was written by a meta-training that diverged, "
            "or it is damaged; nothing was assigned. Meta-train again with lower learning rates."
        )
    for key, variable in targets.items():
        variable.assign(stored[key])


def _layer_of(key: str) -> str:
    """``"phi/a/b/scale"`` → ``"a/b"``; ``"head/kernel"`` → ``"head"``."""
    return key[len("phi/") :].rsplit("/", 1)[0] if key.startswith("phi/") else "head"


def _some(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
