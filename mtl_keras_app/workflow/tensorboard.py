"""TensorBoard logging of the workflow: the scalars Keras' own callback does not write
(`TrainingScalarsLogger`), one ``fit``'s callbacks (`tensorboard_callbacks`), and images.

TensorBoard's event files are written with TensorFlow's summary ops (as `keras.callbacks.TensorBoard`
writes them, on every backend): where TensorFlow is not installed (a JAX-only machine) the run
writes no logs and says so once (`tensorboard_available`); ``history.json``, ``metrics.json`` and
the plots hold the same curves.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from mtl_keras._tensorflow import import_tensorflow, tensorflow_installed

_said_unavailable = False


def tensorboard_available(verbose: bool = True) -> bool:
    """Whether TensorBoard logs can be written here (TensorFlow is installed).

    When not, prints once per process that the logs are skipped and why.
    """
    global _said_unavailable
    if tensorflow_installed():
        # Imported here, through the command's start-up filter when it set one (on JAX Keras's
        # TensorBoard callback would import it bare, and TensorFlow's start-up lines would show).
        import_tensorflow("TensorBoard logging")
        return True
    if verbose and not _said_unavailable:
        _said_unavailable = True
        print(
            "Note: no TensorBoard logs (they are written with TensorFlow, which is not installed); "
            "the run folder's history.json, metrics.json and plots/ hold the same curves. "
            "pip install tensorflow tensorboard to get them, or pass --no-tensorboard to silence this.",
            flush=True,
        )
    return False


class TrainingScalarsLogger(keras.callbacks.Callback):
    """TensorBoard scalars Keras' own callback does not write, once per epoch.

    ``learning_rate/phi`` and ``learning_rate/head`` (the two outer-loop optimizers of a
    `MetaTransferModel`; ``learning_rate/optimizer`` for a plain model), and, when the
    model has a hard-task pool as ``task_feedback`` (anything with a ``stats()`` dict),
    its numeric counters as ``hard_tasks/<name>``. Written to ``log_dir/train``
    next to the `keras.callbacks.TensorBoard` event files.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        tf = import_tensorflow("TensorBoard logging")
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        head = getattr(self.model, "head_optimizer", None)
        optimizers = (
            (("phi", self.model.optimizer), ("head", head))
            if head is not None
            else (("optimizer", getattr(self.model, "optimizer", None)),)
        )
        with self._writer.as_default(step=epoch):
            for name, optimizer in optimizers:
                if optimizer is not None:
                    tf.summary.scalar(f"learning_rate/{name}", float(np.asarray(optimizer.learning_rate)))
            pool = getattr(self.model, "task_feedback", None)
            stats = pool.stats() if pool is not None and callable(getattr(pool, "stats", None)) else {}
            for key, value in stats.items():
                if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                    tf.summary.scalar(f"hard_tasks/{key}", float(value))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __deepcopy__(self, memo):  # Keras Tuner deep-copies callbacks; a writer cannot be copied
        return TrainingScalarsLogger(self.log_dir)


def tensorboard_callbacks(log_dir: str) -> list:
    """TensorBoard logging for one ``fit``: loss and accuracy (train and validation,
    per epoch) through `keras.callbacks.TensorBoard`, plus `TrainingScalarsLogger`; none where
    TensorFlow is not installed (`tensorboard_available` says so once)."""
    if not tensorboard_available():
        return []
    return [
        keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0),
        TrainingScalarsLogger(log_dir),
    ]


def write_episode_image(log_dir: str, png_path: str, tag: str = "episode", step: int = 0) -> None:
    """Put a PNG (e.g. `plot_episode_grid`'s) into TensorBoard's Images tab (needs TensorFlow)."""
    tf = import_tensorflow("TensorBoard logging")
    with open(png_path, "rb") as f:
        image = tf.image.decode_png(f.read(), channels=3)
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=step):
        tf.summary.image(tag, image[None], step=step)
    writer.close()
