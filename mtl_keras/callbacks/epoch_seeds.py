"""`EpochSeeds`: every epoch's randomness a function of the epoch, so a resumed training replays it."""

from __future__ import annotations

import keras
import numpy as np

#: Draws each seed generator may make in one epoch before it would reach the next epoch's seeds.
DRAWS_PER_EPOCH = 1 << 20


class EpochSeeds(keras.callbacks.Callback):
    """At each epoch's start, set the epoch's data order and the model's random seeds from the epoch.

    A training's randomness — the order of a shuffled dataset, random augmentation, dropout — comes
    from generators whose state advances with every draw and is not part of a weights file (Keras
    saves no `SeedGenerator` state). A training resumed after epoch ``e`` (`ResumableCheckpoint`)
    then draws epoch ``e+1`` from the generators' *first* state: a different run. With this
    callback epoch ``e`` draws from ``(seed, e)`` whether or not the run was interrupted:

    * ``epoch_variable`` (the ``epoch`` of `mtl_keras.data.pretrain_dataset`) is set to ``e``, so
      the dataset's order is the permutation drawn from ``(seed, e)``;
    * every `keras.random.SeedGenerator` of the model (its ``seed_generator_state`` variables:
      random augmentation layers, dropout) is set to ``[its seed, e * DRAWS_PER_EPOCH]``.

    Put it first among the callbacks, before any that iterate the data.

    Args:
        epoch_variable: what the dataset reads its epoch from, or None: a scalar int64
            ``tf.Variable`` (`mtl_keras.data.pretrain_dataset`) or an
            `mtl_keras.data.EpochNumber` (`mtl_keras.data.pretrain_source`).

    Example:
        >>> epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        >>> train = pretrain_dataset(split, seed=0, epoch=epoch)
        >>> model.fit(train, epochs=10, callbacks=[EpochSeeds(epoch), ResumableCheckpoint("backup")])
    """

    def __init__(self, epoch_variable=None):
        super().__init__()
        self.epoch_variable = epoch_variable

    def seed_states(self) -> list:
        """The model's seed-generator state variables (shape ``(2,)``: seed, counter)."""
        return [v for v in self.model.variables if v.name == "seed_generator_state"]

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch_variable is not None:
            self.epoch_variable.assign(epoch)
        for state in self.seed_states():
            seed = int(np.asarray(keras.ops.convert_to_numpy(state.value))[0])
            state.assign(np.array([seed, epoch * DRAWS_PER_EPOCH], dtype=state.dtype))
