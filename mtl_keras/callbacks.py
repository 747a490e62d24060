"""Keras callbacks for meta-transfer learning.

* `HardTaskLogger`: per-epoch hard-task counts and the classes the model fails on.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    from mtl_keras.data.hard_tasks import HardTaskPool


class HardTaskLogger(keras.callbacks.Callback):
    """Logs a `HardTaskPool`'s activity at every epoch end.

    Adds ``logs["hard_tasks"]``: the number of hard tasks *trained* during the
    epoch (counted from the model's reports, so prefetched meta-batches of the
    next epoch do not count), which `History` then records. With ``verbose`` it
    prints the ``top_k`` classes most often reported as failure class during the
    epoch. It also closes the pool's epoch (`HardTaskPool.end_epoch`), so
    ``pool.hard_tasks_per_epoch`` grows by one entry per epoch.

    Args:
        pool: the pool the model reports to (``model.task_feedback``) and the
            pipeline draws from.
        top_k: how many hard classes to print.
        verbose: 1 to print at each epoch end, 0 to log silently.

    Example:
        >>> pool = HardTaskPool(seed=0)
        >>> model.task_feedback = pool
        >>> history = model.fit(make_episodes(train, 5, 1, hard_tasks=pool),
        ...                     steps_per_epoch=100, epochs=5, callbacks=[HardTaskLogger(pool)])
        >>> history.history["hard_tasks"]
    """

    def __init__(self, pool: HardTaskPool, top_k: int = 5, verbose: int = 1):
        super().__init__()
        self.pool = pool
        self.top_k = int(top_k)
        self.verbose = int(verbose)

    def on_train_begin(self, logs=None):
        if getattr(self.model, "task_feedback", None) is not self.pool:
            warnings.warn(
                "HardTaskLogger: model.task_feedback is not this pool, so the pool receives "
                "no failure reports and produces no hard tasks. Set `model.task_feedback = pool`.",
                stacklevel=2,
            )

    def on_epoch_end(self, epoch, logs=None):
        info = self.pool.end_epoch(self.top_k)
        top = info["top"]
        if logs is not None:
            logs["hard_tasks"] = info["hard_tasks"]
        if self.verbose:
            classes = ", ".join(f"{name} (id {cid}) x{count}" for cid, name, count in top) or "none"
            print(
                f"Epoch {epoch + 1}: {info['hard_tasks']} hard tasks; "
                f"top-{self.top_k} failure classes: {classes}"
            )
