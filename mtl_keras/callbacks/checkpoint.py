"""`BestCheckpoint`: the best epoch's weights, written atomically (`save_weights_atomic`)."""

from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING

import keras

from mtl_keras.atomic import write_atomic
from mtl_keras.models.weights import non_finite_weights

if TYPE_CHECKING:
    pass


class BestCheckpoint(keras.callbacks.Callback):
    """Save the weights whenever ``monitor`` beats ``best`` at an epoch end, atomically.

    As ``keras.callbacks.ModelCheckpoint(save_best_only=True, save_weights_only=True)``,
    but the file is written to a temporary name and renamed into place, so a crash
    while saving leaves the previous best, never a truncated file; and ``best`` can
    be set before ``fit`` (e.g. to the pretrained model's score, or to the best epoch
    of a run being resumed). Every process writes: under a multi-worker strategy give
    each worker its own ``filepath`` (as `mtl_keras_app.workflow.output_dir` does).

    Args:
        filepath: a ``.weights.h5`` path.
        monitor: the epoch log to compare (default ``val_accuracy``).
        mode: ``"max"`` or ``"min"``.
        best: starting value to beat (default: -inf for max, inf for min).

    Attributes:
        best: the best value so far; best_epoch: its 1-based epoch (None: not beaten).
    """

    def __init__(
        self, filepath: str, monitor: str = "val_accuracy", mode: str = "max", best: float | None = None
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.mode = mode
        self.best = best if best is not None else (-math.inf if mode == "max" else math.inf)
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"BestCheckpoint: no '{self.monitor}' in the epoch logs; nothing saved.", stacklevel=2
            )
            return
        value = float(value)
        better = value > self.best if self.mode == "max" else value < self.best
        if math.isfinite(value) and better:
            bad = non_finite_weights(self.model)
            if bad:
                warnings.warn(
                    f"BestCheckpoint: epoch {epoch + 1} scored {self.monitor}={value:.4g} but weight '{bad}' "
                    f"holds NaN or inf: not saved; {self.filepath} keeps the last finite best.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return
            self.best, self.best_epoch = value, epoch + 1
            save_weights_atomic(self.model, self.filepath)


def save_weights_atomic(model, path: str) -> str:
    """``model.save_weights(path)``, atomically (`mtl_keras.atomic.write_atomic`): a crash at any
    moment leaves the old file (or none), never a partial one.

    Raises:
        ValueError: a weight holds NaN or inf (named, with the file): nothing is written, and
            an earlier file at ``path`` stays as it was.
    """
    bad = non_finite_weights(model)
    if bad:
        raise ValueError(
            f"Not saving {path}: weight '{bad}' holds NaN or inf (training diverged). Lower the learning "
            "rates and train again; an earlier file there is kept as it was."
        )
    return write_atomic(
        path, lambda tmp: model.save_weights(tmp, overwrite=True), size=weights_file_bytes(model)
    )


def weights_file_bytes(model) -> int:
    """About the size of ``model.save_weights``' file: every variable of the model and of its
    optimizers (``optimizer``, ``head_optimizer``), plus HDF5's per-array overhead."""
    variables = list(model.variables)
    for name in ("optimizer", "head_optimizer"):
        optimizer = getattr(model, name, None)
        variables += list(getattr(optimizer, "variables", None) or [])

    def itemsize(dtype) -> int:  # "float32" -> 4, "bfloat16" -> 2, "uint8" -> 1
        bits = "".join(ch for ch in keras.backend.standardize_dtype(dtype) if ch.isdigit())
        return max(1, int(bits or 32) // 8)

    data = sum(math.prod(int(d) for d in v.shape) * itemsize(v.dtype) for v in variables)
    return data + 4096 * len(variables)
