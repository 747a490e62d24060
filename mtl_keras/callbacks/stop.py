"""`StopOnNonFiniteLoss`: stop at the first NaN/inf loss, naming epoch, batch and fix."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    pass


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training as soon as the loss is NaN or infinite, and say what to do.

    Unlike `keras.callbacks.TerminateOnNaN` it names the epoch and batch, warns
    with the fix, and records where it stopped (``stopped_at = (epoch, batch)``,
    0-based). The epoch it stops in is not completed, so `ResumableCheckpoint`
    does not save it: the last good backup stays the one to resume from.

    Args:
        monitor: the log entry to watch (default ``"loss"``).
    """

    def __init__(self, monitor: str = "loss"):
        super().__init__()
        self.monitor = monitor
        self.stopped_at = None
        self.message = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.stopped_at = self.message = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or math.isfinite(float(value)):
            return
        self.model.stop_training = True
        self.stopped_at = (self._epoch, int(batch))
        self.message = (
            f"{self.monitor} became {float(value)} at epoch {self._epoch + 1}, batch {int(batch) + 1}: "
            "training stopped and this epoch is not checkpointed. Lower the learning rates "
            "(phi_learning_rate, head_learning_rate, inner_lr) or check the images for NaN/inf, "
            "then resume from the last good checkpoint."
        )
        warnings.warn(self.message, RuntimeWarning, stacklevel=2)
