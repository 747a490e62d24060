"""Keras callbacks for meta-transfer learning.

* `HardTaskMining`: hard tasks attached to a ``fit`` in one place (the model's failure
  reports, the stream's position, the per-epoch log); `HardTaskLogger`: the log alone.
* `ResumableCheckpoint`: atomic per-epoch backups of weights, both optimizers,
  the episode stream and the hard-task pool; exact resume after a crash.
* `StopOnNonFiniteLoss`: stop at the first NaN/inf loss, naming epoch, batch and fix.
* `BestCheckpoint`: the best epoch's weights, written atomically (`save_weights_atomic`).
* `TimeEstimate`: how long a ``fit`` will take, once its speed is known, and how long it took.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np

from mtl_keras import keras_private
from mtl_keras.atomic import write_atomic, write_text_atomic

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
def format_duration(seconds: float) -> str:
    """A duration for people: ``"4.2 s"``, ``"42 s"``, ``"4 min 10 s"``, ``"2 h 05 min"``."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class TimeEstimate(keras.callbacks.Callback):
    """Print how long a ``fit`` will take once its speed is known, and how long it took.

    Up to three lines, each starting with ``stage``:

    1. After training steps 2 to ``1 + measure_steps`` of the first epoch (step 1 is left
       out: it traces the graph), the whole fit's time at that rate, training steps only:
       ``pretraining: about 4 min 10 s for 4 epochs (from steps 2-6: 0.41 s/step, training
       steps only)``. Not printed when the first epoch has fewer than ``measure_steps + 2``
       steps or an unknown number.
    2. When the second epoch begins, the estimate again from the first epoch's whole time,
       so validation and the other callbacks' end-of-epoch work (checkpoints) count; the
       tracing in the first training step and the first validation batch is replaced by
       the steady time of the others: ``pretraining: about 4 min 30 s for 4 epochs, 3 min
       25 s left (epoch 1: 1 min 5 s, of which validation 6.2 s)``.
    3. At the end: ``pretraining: 3 min 58 s``.

    Both estimates are exact when every step (and every validation batch) after the first
    takes the same time, as the tests check with a fake clock; a run that resumes at a later
    epoch estimates the epochs it has left. Put it first in the callbacks list.

    Args:
        stage: the name that starts each line (e.g. ``"pretraining"``).
        measure_steps: training steps timed for the first estimate, after the first one.
        clock: seconds as a float (``time.perf_counter``; tests pass a fake one).

    Attributes:
        estimates: the totals printed, in seconds (one or two).
        elapsed: seconds from ``fit``'s start to its end (None until the end).
    """

    def __init__(self, stage: str, measure_steps: int = 5, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        if int(measure_steps) < 1:
            raise ValueError(f"measure_steps must be at least 1, got {measure_steps}.")
        self.stage = str(stage)
        self.measure_steps = int(measure_steps)
        self.clock = clock
        self.estimates: list[float] = []
        self.elapsed: float | None = None

    def on_train_begin(self, logs=None):
        self._start = self.clock()
        self._first_epoch = self._epoch = None
        self._epoch_start = None
        self._steps = []  # end times of the first epoch's training steps
        self._validation = []  # its validation: start, then the end time of every batch
        self._validation_end = None
        self.estimates, self.elapsed = [], None

    def _epochs_left(self, epoch: int) -> int:
        return int(self.params.get("epochs") or 1) - epoch

    def _epochs_text(self, count: int) -> str:
        total = int(self.params.get("epochs") or 1)
        if count == total:
            return f"{count} epoch{'s' * (count != 1)}"
        return f"the last {count} of {total} epochs"

    def _say(self, text: str) -> None:
        # On a terminal Keras' bar is being redrawn in place: start a line of our own.
        live_bar = self.params.get("verbose") == 1 and sys.stdout.isatty()
        print(("\n" if live_bar else "") + f"{self.stage}: {text}", flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        now = self.clock()
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch, self._epoch_start = epoch, now
        elif epoch == self._first_epoch + 1:
            self._refine(epoch, now)

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch != self._first_epoch:
            return
        self._steps.append(self.clock())
        steps = self.params.get("steps")
        n, k = len(self._steps), self.measure_steps
        if n == k + 1 and steps and steps >= k + 2:
            rate = (self._steps[-1] - self._steps[0]) / k
            elapsed = self._steps[-1] - self._start
            left = steps * self._epochs_left(self._first_epoch) - n
            self.estimates.append(elapsed + left * rate)
            self._say(
                f"about {format_duration(self.estimates[-1])} for "
                f"{self._epochs_text(self._epochs_left(self._first_epoch))} "
                f"(from steps 2-{n}: {rate:.3g} s/step, training steps only)"
            )

    def on_test_begin(self, logs=None):
        if self._epoch is not None and self._epoch == self._first_epoch and not self._validation:
            self._validation.append(self.clock())

    def on_test_batch_end(self, batch, logs=None):
        if self._epoch == self._first_epoch and self._validation:
            self._validation.append(self.clock())

    def on_test_end(self, logs=None):
        if self._epoch == self._first_epoch and self._validation:
            self._validation_end = self.clock()

    def _refine(self, epoch: int, now: float) -> None:
        epoch_time = now - self._epoch_start
        tracing = 0.0  # the first step's and first validation batch's extra time
        if len(self._steps) >= 2:
            rate = (self._steps[-1] - self._steps[0]) / (len(self._steps) - 1)
            tracing += (self._steps[0] - self._epoch_start) - rate
        validation = ""
        if len(self._validation) >= 2:
            start, ends = self._validation[0], self._validation[1:]
            if len(ends) >= 2:
                tracing += (ends[0] - start) - (ends[-1] - ends[0]) / (len(ends) - 1)
            took = (self._validation_end or ends[-1]) - start
            validation = f", of which validation {format_duration(took)}"
        elapsed = now - self._start
        left = (epoch_time - tracing) * self._epochs_left(epoch)
        self.estimates.append(elapsed + left)
        self._say(
            f"about {format_duration(self.estimates[-1])} for "
            f"{self._epochs_text(self._epochs_left(self._first_epoch))}, {format_duration(left)} left "
            f"(epoch {self._first_epoch + 1}: {format_duration(epoch_time)}{validation})"
        )

    def on_train_end(self, logs=None):
        self.elapsed = self.clock() - self._start
        self._say(format_duration(self.elapsed))


# --------------------------------------------------------------------------- reliability
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


class ResumableCheckpoint(keras.callbacks.Callback):
    """Back up the whole training state at every epoch end; resume from it exactly.

    What is saved, per completed epoch: the model's weights *with both
    optimizers' state* (a Keras ``.weights.h5`` holds ``optimizer`` and
    ``head_optimizer`` variables, hence their iteration counts and so any
    learning-rate schedule), the epoch, the number of meta-batches trained, the
    episode stream's position and the `HardTaskPool` state as it was at the last
    trained meta-batch (the generator runs ahead of training; see
    `EpisodeStream`), and the per-epoch logs. Writes are atomic: the weights go
    to a temporary file that is renamed into place, then ``state.json`` — the
    commit point, naming the weights file — is written the same way and the
    older weights are deleted. A crash at any moment leaves the previous backup
    or the new one, never a mix.

    On ``fit`` start, an existing backup is restored and ``fit`` continues at the
    next epoch: the epoch that was interrupted is redone from its start (a crash
    costs at most one epoch — choose ``steps_per_epoch`` accordingly), and the
    final weights equal those of an uninterrupted run (same seeds; CPU float
    tolerance).

    Compared with `keras.callbacks.BackupAndRestore` (Keras 3.15), which writes
    the weights file and then its metadata in place (a crash in between leaves a
    new weights file with the old epoch) and knows nothing of the episode stream
    or hard-task pool.

    Not restored: the state of other callbacks (e.g. `ReduceLROnPlateau`'s
    counters) and random augmentation ops in the pipeline (stateful TF random
    ops); use stateless augmentation for exact resumes. Under a multi-worker
    strategy only the chief writes and every worker reads ``directory`` (shared
    storage), unless ``chief_only=False``: then every worker writes, each to its own
    ``directory``.

    Args:
        directory: folder of this run's backups (created; one run per folder).
        episodes: the training dataset returned by `make_episodes` (or its
            ``episode_stream``); its position and hard-task pool are saved.
        hard_tasks: a `HardTaskPool` to save when ``episodes`` is not given.
        keep: number of epoch backups kept (older weights files are deleted).
        verbose: 1 prints a line when resuming.
        chief_only: under a multi-worker strategy, only the chief writes (default).

    Example:
        >>> episodes = make_episodes(train, 5, 1, 15, meta_batch_size=4, seed=0, hard_tasks=pool)
        >>> model.fit(episodes, steps_per_epoch=100, epochs=50,
        ...           callbacks=[ResumableCheckpoint("runs/a/backup", episodes),
        ...                      StopOnNonFiniteLoss()])
        >>> # killed? run the same script again: it continues after the last completed epoch.
    """

    STATE_FILE = "state.json"
    _VERSION = 1

    def __init__(
        self,
        directory: str,
        episodes=None,
        hard_tasks=None,
        keep: int = 1,
        verbose: int = 1,
        chief_only: bool = True,
    ):
        super().__init__()
        self.directory = os.fspath(directory)
        self.chief_only = bool(chief_only)
        self.stream = getattr(episodes, "episode_stream", episodes)
        if episodes is not None and not hasattr(self.stream, "get_state"):
            raise ValueError(
                "ResumableCheckpoint: `episodes` must be the dataset make_episodes returned (with its "
                "`episode_stream` attribute) or that stream; transformations such as .take() drop it."
            )
        if hard_tasks is not None and self.stream is not None:
            if getattr(self.stream, "hard_tasks", None) is not hard_tasks:
                raise ValueError("ResumableCheckpoint: `hard_tasks` is not the pool of `episodes`.")
            hard_tasks = None  # saved through the stream
        self.hard_tasks = hard_tasks
        self.keep = max(1, int(keep))
        self.verbose = int(verbose)
        self.history: list[dict] = []
        self.resumed_from = None  # epoch restored at the last fit start, if any
        self._batches = 0
        self._epoch_batches = 0
        self._tracker = self.stream.tracker() if self.stream is not None else None

    def set_model(self, model):
        super().set_model(model)
        if self._tracker is not None:
            self._tracker.set_model(model)

    # ----------------------------------------------------------------- restore
    def read_state(self) -> dict | None:
        """The last committed backup's state (``epoch``, ``batches``, ``history``, ...) or None."""
        path = os.path.join(self.directory, self.STATE_FILE)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("version") != self._VERSION:
            raise ValueError(f"ResumableCheckpoint: unknown state version in '{path}'.")
        return state

    def on_train_begin(self, logs=None):
        self.resumed_from = None
        state = self.read_state()
        if state is None:
            self._batches = 0 if self.stream is None else int(self.stream.trained)
            self.history = []
            if self._tracker is not None:
                self._tracker.on_train_begin(logs)  # the stream counts the meta-batches trained
            return
        model_info = _model_signature(self.model)
        if state["model"] != model_info:
            raise ValueError(
                f"ResumableCheckpoint: '{self.directory}' was written by {state['model']} but this model "
                f"is {model_info}; use a new directory for a different model."
            )
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # so its state has somewhere to go
        self.model.load_weights(os.path.join(self.directory, state["weights"]))
        if self.stream is not None:
            self.stream.set_state(state["stream"])
            self._tracker.on_train_begin(logs)
        elif self.hard_tasks is not None and state.get("hard_tasks") is not None:
            self.hard_tasks.set_state(state["hard_tasks"])
        self._batches = int(state["batches"])
        self.history = list(state["history"])
        keras_private.set_initial_epoch(self.model, state["epoch"])  # what BackupAndRestore sets too
        self.resumed_from = int(state["epoch"])
        steps = self.params.get("steps") if self.params else None
        if steps and state.get("steps") and steps != state["steps"]:
            warnings.warn(
                f"ResumableCheckpoint: resuming with {steps} steps per epoch, the backup used "
                f"{state['steps']}; the run will not match an uninterrupted one.",
                stacklevel=2,
            )
        if self.verbose:
            print(
                f"ResumableCheckpoint: resumed from '{self.directory}' after epoch {state['epoch']} "
                f"({self._batches} meta-batches trained)."
            )

    def on_train_end(self, logs=None):
        # Keras keeps `_initial_epoch` on the model; a later fit must not inherit it.
        keras_private.set_initial_epoch(self.model, None)

    # ----------------------------------------------------------------- save
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_batches = 0
        if self._tracker is not None:
            self._tracker.on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._epoch_batches = int(batch) + 1
        if self._tracker is not None:
            self._tracker.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        steps = self.params.get("steps") if self.params else None
        if steps and self._epoch_batches < steps:
            warnings.warn(
                f"ResumableCheckpoint: epoch {epoch + 1} stopped after {self._epoch_batches} of {steps} "
                "batches; not saved (the last backup stays the one to resume from).",
                stacklevel=2,
            )
            return
        logs = dict(logs or {})
        bad = [k for k, v in logs.items() if _is_number(v) and not math.isfinite(float(v))]
        if bad or not _weights_finite(self.model):
            warnings.warn(
                f"ResumableCheckpoint: epoch {epoch + 1} has non-finite "
                f"{', '.join(bad) or 'weights'}; not saved (the last good backup is kept).",
                stacklevel=2,
            )
            return
        self._batches += self._epoch_batches
        self.history.append({k: float(v) for k, v in logs.items() if _is_number(v)})
        if self.stream is not None:
            self.stream.trained = self._batches
        strategy = self.model.distribute_strategy
        if self.chief_only and not strategy.extended.should_checkpoint:
            return
        self._save(epoch + 1, steps)

    def _save(self, epoch: int, steps) -> None:
        os.makedirs(self.directory, exist_ok=True)
        name = f"epoch-{epoch:05d}.weights.h5"
        save_weights_atomic(self.model, os.path.join(self.directory, name))
        state = {
            "version": self._VERSION,
            "epoch": epoch,
            "batches": self._batches,
            "steps": steps,
            "weights": name,
            "model": _model_signature(self.model),
            "stream": None if self.stream is None else self.stream.get_state(),
            "hard_tasks": None if self.hard_tasks is None else self.hard_tasks.get_state(),
            "history": self.history,
        }
        _atomic_write_text(os.path.join(self.directory, self.STATE_FILE), json.dumps(state))
        # The commit point has passed: older backups beyond `keep` can go.
        backups = sorted(f for f in os.listdir(self.directory) if re.fullmatch(r"epoch-\d+\.weights\.h5", f))
        for old in backups[: -self.keep]:
            if old != name:
                os.remove(os.path.join(self.directory, old))


class BestCheckpoint(keras.callbacks.Callback):
    """Save the weights whenever ``monitor`` beats ``best`` at an epoch end, atomically.

    As ``keras.callbacks.ModelCheckpoint(save_best_only=True, save_weights_only=True)``,
    but the file is written to a temporary name and renamed into place, so a crash
    while saving leaves the previous best, never a truncated file; and ``best`` can
    be set before ``fit`` (e.g. to the pretrained model's score, or to the best epoch
    of a run being resumed). Every process writes: under a multi-worker strategy give
    each worker its own ``filepath`` (as `mtl_keras.workflow.output_dir` does).

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
            self.best, self.best_epoch = value, epoch + 1
            save_weights_atomic(self.model, self.filepath)


def save_weights_atomic(model, path: str) -> str:
    """``model.save_weights(path)``, atomically (`mtl_keras.atomic.write_atomic`): a crash at any
    moment leaves the old file (or none), never a partial one."""
    return write_atomic(path, lambda tmp: model.save_weights(tmp, overwrite=True))


def _model_signature(model) -> dict:
    return {
        "class": type(model).__name__,
        "weights": len(model.weights),
        "params": int(sum(int(np.prod(w.shape)) for w in model.weights)),
    }


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return np.ndim(value) == 0


def _weights_finite(model) -> bool:
    return all(bool(np.isfinite(np.asarray(w)).all()) for w in model.trainable_weights)


def _atomic_write_text(path: str, text: str) -> None:
    """`write_text_atomic`, looked up here so that tests can make the backup's commit fail."""
    write_text_atomic(path, text)
