"""`ResumableEarlyStopping`: a fit killed after the best epoch resumes, stops at the same epoch
and restores the same best weights as an uninterrupted fit (Keras's EarlyStopping forgot both)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtl_keras.callbacks import ResumableCheckpoint, ResumableEarlyStopping

#: On both backends: a plain Keras model has no ``distribute_strategy`` on JAX, and the backup
#: used to read it at every epoch end.
pytestmark = pytest.mark.backends

#: The monitored score per epoch: best at epoch 1 (0-based), then patience 2 runs out at epoch 3.
SCORES = [0.1, 0.5, 0.3, 0.2, 0.9, 0.9]


class Score(keras.callbacks.Callback):
    """Writes SCORES[epoch] into the logs (placed before the others), and crashes when told."""

    def __init__(self, crash_in_epoch=None):
        super().__init__()
        self.crash_in_epoch = crash_in_epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == self.crash_in_epoch and batch == 1:
            raise KeyboardInterrupt("killed")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = SCORES[epoch]


def _fit(directory, crash_in_epoch=None, early=ResumableEarlyStopping):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 2)).astype("float32")
    backup = ResumableCheckpoint(str(directory), verbose=0)
    kwargs = dict(monitor="score", mode="max", patience=2, restore_best_weights=True)
    stop = early(backup=backup, **kwargs) if early is ResumableEarlyStopping else early(**kwargs)
    history = model.fit(
        x, y, batch_size=8, epochs=len(SCORES), shuffle=False, verbose=0,
        callbacks=[Score(crash_in_epoch), stop, backup],
    )  # fmt: skip
    return model, stop, history


@pytest.mark.parametrize("early", [ResumableEarlyStopping, keras.callbacks.EarlyStopping])
def test_a_resumed_fit_stops_and_restores_like_an_uninterrupted_one(tmp_path, early):
    reference, ref_stop, _ = _fit(tmp_path / "ref")
    assert ref_stop.stopped_epoch == 3 and ref_stop.best_epoch == 1
    with pytest.raises(KeyboardInterrupt):
        _fit(
            tmp_path / "run", crash_in_epoch=3, early=early
        )  # epochs 0-2 backed up; best (1) is not the last
    model, stop, _ = _fit(tmp_path / "run", early=early)
    same = (
        stop.stopped_epoch == 3
        and stop.best_epoch == 1
        and all(np.allclose(a, b, atol=1e-6) for a, b in zip(model.get_weights(), reference.get_weights()))
    )
    # Keras's own forgets the count and the best epoch: it ran on to epoch 5 and kept epoch 4's weights.
    assert same == (early is ResumableEarlyStopping), (stop.stopped_epoch, stop.best_epoch)
