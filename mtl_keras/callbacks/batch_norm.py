"""`ReestimateBatchNorm`: batch norm's moving statistics recomputed before every evaluation."""

from __future__ import annotations

import keras

from mtl_keras.layers.batch_statistics import reestimate_batch_norm


class ReestimateBatchNorm(keras.callbacks.Callback):
    """Recompute the moving statistics of ``backbone``'s batch norms before each evaluation.

    With few steps per epoch, batch norm's moving averages lag the weights they describe: the
    held-out accuracy ``fit`` reports in inference mode then measures the lag, not the model,
    and early stopping on it picks the wrong epoch (or none). This callback makes every
    evaluation during ``fit`` (``on_test_begin``: ``fit``'s validation, before its logs reach
    `keras.callbacks.EarlyStopping`) and the model at the end of training (``on_train_end``) use
    statistics recomputed from the current weights (`reestimate_batch_norm`). Training itself is
    unchanged: it normalises with batch statistics, and the moving averages carry on from the
    recomputed values.

    Args:
        backbone: the model whose batch norms to recompute (e.g. ``PretrainModel.backbone``:
            called without the augmentation and dropout of the model around it).
        batches: a re-iterable source of un-augmented training images ``(b, H, W, C)`` or
            ``(images, labels)`` pairs (e.g. ``pretrain_dataset(train, shuffle=True)``, which
            reshuffles on every pass).
        max_batches: batches per re-estimation (default 20; its cost is about that many
            forward passes).
    """

    def __init__(self, backbone: keras.Model, batches, max_batches: int = 20):
        super().__init__()
        self.backbone = backbone
        self.batches = batches
        self.max_batches = int(max_batches)
        #: Batches used by the last re-estimation.
        self.last_batches = 0

    def reestimate(self) -> int:
        self.last_batches = reestimate_batch_norm(self.backbone, self.batches, self.max_batches)
        return self.last_batches

    def on_test_begin(self, logs=None):
        self.reestimate()

    def on_train_end(self, logs=None):
        self.reestimate()
