"""Loading ``.weights.h5`` files with an error that names both architectures.

Keras reports a mismatch as "Layer 'block1_conv' expected 4 variables, but
received 3" or a shape error on one variable; `load_weights_checked` re-raises
it as one line that says what the file holds and what the model is, e.g.::

    '/runs/a/backbone.weights.h5' holds another architecture: the file has
    12 scale_shift_conv2d + 4 conv2d + 16 batch_normalization layers (conv widths
    4/8, 1 input channel), backbone 'conv4' has 4 scale_shift_conv2d + ...
"""

from __future__ import annotations

import collections
import os
import re
import tempfile

_OPTIMIZER_GROUPS = ("optimizer", "head_optimizer")


def describe_weights_file(path: str) -> str:
    """One phrase summarising the layers of a Keras 3 ``.weights.h5`` file.

    Counts the layers that hold variables by type (the file's group names) and
    lists the output widths and input channels of the convolution kernels.
    Optimizer variables are ignored.
    """
    import h5py

    counts: collections.Counter = collections.Counter()
    widths: set[int] = set()
    in_channels: set[int] = set()

    def visit(name, obj):
        parts = name.split("/")
        if parts[0] in _OPTIMIZER_GROUPS or not isinstance(obj, h5py.Group) or "vars" not in obj:
            return
        variables = obj["vars"]
        if not len(variables):
            return
        counts[re.sub(r"_\d+$", "", parts[-1])] += 1
        for key in variables:
            shape = variables[key].shape
            if len(shape) == 4 and shape[0] > 1:  # a k x k convolution kernel
                widths.add(int(shape[-1]))
                in_channels.add(int(shape[-2]))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    if not counts:
        return "no layer weights"
    layers = " + ".join(f"{n} {kind}" for kind, n in counts.most_common())
    extra = ""
    if widths:
        extra = f" (conv widths {'/'.join(map(str, sorted(widths)))}, first conv input {min(in_channels)} channel(s))"
    return f"{layers} layers{extra}"


def describe_model(model) -> str:
    """`describe_weights_file` of ``model``'s own weights (written to a temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.weights.h5")
        model.save_weights(path)
        return describe_weights_file(path)


def load_weights_checked(model, filepath, load_fn=None, *args, **kwargs):
    """``load_fn(filepath, ...)`` (default ``model.load_weights``), re-raising an
    architecture mismatch as a `ValueError` naming both architectures.

    Raises:
        FileNotFoundError: ``filepath`` does not exist.
        ValueError: the file holds weights of another architecture, or NaN / inf (the model then
            holds them too: do not use it).
    """
    load_fn = load_fn or model.load_weights
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file '{path}' does not exist.")
    try:
        result = load_fn(filepath, *args, **kwargs)
    except (OSError, KeyError) as err:  # h5py: a truncated or overwritten file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"'{path}' is damaged and cannot be read ({first}): it was cut short (a crash or a full disk "
            "while it was written elsewhere, an interrupted copy). A run folder's file: run the command "
            "again with --restart (a backup) or retrain the stage that wrote it."
        ) from None
    except ValueError as err:
        if not path.endswith(".weights.h5"):
            raise
        try:
            theirs, ours = describe_weights_file(path), describe_model(model)
        except Exception:  # describing is best effort; keep Keras' own error then
            raise err from None
        first = str(err).strip().splitlines()[0]
        backbone = getattr(model, "backbone", None)
        what = f"{type(model).__name__} '{model.name}'" + (
            f" (backbone '{backbone.name}')" if backbone else ""
        )
        raise ValueError(
            f"'{path}' holds weights of another architecture: the file has {theirs}; "
            f"{what} has {ours}. Build the model with the "
            f"backbone, widths and input channels the file was saved from. (Keras: {first})"
        ) from err
    bad = non_finite_weights(model)
    if bad:
        raise ValueError(
            f"'{path}' holds NaN or inf (weight '{bad}'): it was written by a training that diverged, "
            "or it is damaged. Train it again with lower learning rates; nothing is evaluated or "
            "exported from it."
        )
    return result


def non_finite_weights(model) -> str | None:
    """The path of the first weight of ``model`` holding NaN or inf, or None when all are finite."""
    import numpy as np

    for weight in model.weights:
        if not bool(np.isfinite(np.asarray(weight)).all()):
            return getattr(weight, "path", None) or weight.name
    return None


def load_backbone_weights(backbone, filepath) -> None:
    """``backbone.load_weights(filepath)`` with the error of `load_weights_checked`."""
    load_weights_checked(backbone, filepath)
