"""`PretrainModel`'s steps on TensorFlow: Keras's own, then the replicas' batch-norm moving
statistics averaged, and multi-worker logs given the axis Keras 3.15 reduces over."""

from __future__ import annotations

import tensorflow as tf

from mtl_keras import keras_private


class TensorFlowPretrainSteps:
    """On TensorFlow: Keras's own steps, then the replicas' moving statistics averaged (see
    `PretrainModel`), and multi-worker logs given the axis Keras 3.15 reduces over."""

    def train_step(self, data):
        logs = super().train_step(data)
        self._average_moving_statistics()
        return _with_batch_axis(logs)

    def test_step(self, data):
        return _with_batch_axis(super().test_step(data))


def _with_batch_axis(logs):
    """Keras 3.15 reduces multi-worker step logs with ``strategy.reduce(MEAN, axis=0)``,
    which needs an axis: give each scalar log one (the reduced log is a scalar again)."""
    if not keras_private.in_multi_worker_mode(tf.distribute.get_strategy()):
        return logs
    return {
        k: tf.reshape(v, [1]) if getattr(v, "shape", None) is not None and v.shape.rank == 0 else v
        for k, v in logs.items()
    }
