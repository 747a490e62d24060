"""`HardTaskMining`: hard tasks attached to a ``fit`` in one place; `HardTaskLogger`: the log alone."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    from mtl_keras.data.hard_tasks import HardTaskPool


class HardTaskLogger(keras.callbacks.Callback):
    """Logs a `HardTaskPool`'s activity at every epoch end (`HardTaskMining` includes it).

    Use `HardTaskMining` instead unless you wire ``model.task_feedback`` yourself.

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


class HardTaskMining(keras.callbacks.Callback):
    """Hard-task meta-batches (paper §4.3) attached to a ``fit`` in one place.

    Give `mtl_keras.data.make_episodes` a `HardTaskPool` (``hard_tasks=pool``) and this
    callback the dataset it returned: during ``fit`` the model reports every task's per-class
    query accuracy to the pool (``model.task_feedback``, reset at the end), the episode stream
    keeps count of the meta-batches trained (so a second ``fit``, or Keras throwing a
    prefetching iterator away, never matches a report to a meta-batch that was not trained),
    and each epoch end logs ``logs["hard_tasks"]`` (hard tasks trained in the epoch) and,
    with ``verbose``, the ``top_k`` failure classes — what `HardTaskLogger` does.

    Args:
        episodes: the training dataset `make_episodes(..., hard_tasks=pool)` returned (or its
            ``episode_stream``).
        top_k: how many failure classes to print per epoch.
        verbose: 1 to print at each epoch end, 0 to log silently.

    Raises:
        ValueError: ``episodes`` has no episode stream, or its stream no hard-task pool.

    Example:
        >>> pool = HardTaskPool(seed=0)
        >>> episodes = make_episodes(train, 5, 1, 15, meta_batch_size=4, hard_tasks=pool)
        >>> history = model.fit(episodes, steps_per_epoch=100, epochs=5,
        ...                     callbacks=[HardTaskMining(episodes)])
        >>> history.history["hard_tasks"]
    """

    def __init__(self, episodes, top_k: int = 5, verbose: int = 1):
        super().__init__()
        self.stream = getattr(episodes, "episode_stream", episodes)
        pool = getattr(self.stream, "hard_tasks", None)
        if not hasattr(self.stream, "tracker") or pool is None:
            raise ValueError(
                "HardTaskMining: give it the dataset make_episodes(..., hard_tasks=pool) returned "
                "(transformations such as .take() drop its episode stream); got "
                f"{type(episodes).__name__}"
                + (" without a hard-task pool." if hasattr(self.stream, "tracker") else ".")
            )
        self.pool = pool
        self._log = HardTaskLogger(pool, top_k=top_k, verbose=verbose)
        self._tracker = self.stream.tracker()
        self._previous = None

    def set_model(self, model):
        super().set_model(model)
        self._log.set_model(model)
        self._tracker.set_model(model)

    def on_train_begin(self, logs=None):
        self._previous = getattr(self.model, "task_feedback", None)
        self.model.task_feedback = self.pool
        self._tracker.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._tracker.on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._tracker.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._log.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.model.task_feedback = self._previous


# --------------------------------------------------------------------------- progress
