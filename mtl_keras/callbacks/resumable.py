"""`ResumableCheckpoint`: atomic per-epoch backups of weights, both optimizers, the episode
stream and the hard-task pool; exact resume after a crash."""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import TYPE_CHECKING

import keras
import numpy as np

from mtl_keras import keras_private
from mtl_keras.atomic import write_text_atomic
from mtl_keras.callbacks.checkpoint import save_weights_atomic

if TYPE_CHECKING:
    pass


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
        from mtl_keras.models.weights import load_weights_checked

        # Damaged (cut short by a crash or a full disk): a ValueError naming the file and --restart.
        load_weights_checked(self.model, os.path.join(self.directory, state["weights"]))
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
        # A `tf.distribute` strategy's non-chief workers skip the save; other backends have none.
        strategy = getattr(self.model, "distribute_strategy", None)
        if self.chief_only and strategy is not None and not strategy.extended.should_checkpoint:
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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` whose count and best weights survive a resume.

    Keras keeps the early stop's state in memory only: a training resumed by `ResumableCheckpoint`
    restarted the patience count and forgot the best epoch, so with ``restore_best_weights`` it
    could end on a worse epoch than an uninterrupted run. Here the state is rebuilt at the first
    epoch of a resumed ``fit`` from the backup's per-epoch logs (``backup.history``), and the best
    epoch's weights are kept in ``backup.directory/best-epoch-<E>.weights.h5`` (written atomically
    when an epoch improves; on resume the file of the best epoch in the backup's logs is loaded).

    Args:
        backup: the `ResumableCheckpoint` of the same ``fit`` (put it in the callbacks list too).
        **kwargs: `keras.callbacks.EarlyStopping`'s (``monitor``, ``mode``, ``patience``,
            ``restore_best_weights``, ...).
    """

    _BEST = re.compile(r"best-epoch-(\d+)\.weights\.h5")

    def __init__(self, backup: ResumableCheckpoint, **kwargs):
        super().__init__(**kwargs)
        self.backup = backup
        self._replayed = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._replayed = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._replayed:  # after every callback's on_train_begin: the backup is restored
            self._replayed = True
            self._replay(self.backup.history)

    def _replay(self, history: list) -> None:
        if not history:
            return
        current = self.model.get_weights()
        for epoch, logs in enumerate(history):
            super().on_epoch_end(epoch, dict(logs))
        self.model.stop_training = False
        if self.restore_best_weights and self.best_epoch < len(history) - 1:
            path = self._best_path(self.best_epoch)
            if not os.path.exists(path):
                warnings.warn(
                    f"ResumableEarlyStopping: the best epoch's weights ({path}) are missing; the early stop "
                    "goes on from the resumed weights.",
                    stacklevel=2,
                )
                self.best_weights = current
            else:
                from mtl_keras.models.weights import load_weights_checked

                load_weights_checked(self.model, path)
                self.best_weights = self.model.get_weights()
                self.model.set_weights(current)
        else:
            self.best_weights = current

    def _best_path(self, epoch: int) -> str:
        return os.path.join(self.backup.directory, f"best-epoch-{epoch + 1:05d}.weights.h5")

    def on_epoch_end(self, epoch, logs=None):
        before = self.best_epoch, self.best
        super().on_epoch_end(epoch, logs)
        improved = self.best_epoch == epoch and (self.best_epoch, self.best) != before
        if self.restore_best_weights and improved:
            os.makedirs(self.backup.directory, exist_ok=True)
            save_weights_atomic(self.model, self._best_path(epoch))
            # The previous best stays until the next improvement: this epoch's backup is not yet
            # committed, and a crash before it resumes with that best.
            keep = {epoch + 1, before[0] + 1}
            for name in os.listdir(self.backup.directory):
                match = self._BEST.fullmatch(name)
                if match and int(match.group(1)) not in keep:
                    os.remove(os.path.join(self.backup.directory, name))
