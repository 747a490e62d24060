"""Nothing non-finite is saved: weights files and the pretrained backbone."""

import os

import keras
import numpy as np
import pytest

from mtl_keras.callbacks import BestCheckpoint, save_weights_atomic
from tests.unit.workflow.test_pretrain_batch_norm import write_folder_set


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    return model


def test_save_weights_atomic_refuses_nan_weights_and_keeps_the_earlier_file(tmp_path):
    model = _model()
    path = str(tmp_path / "m.weights.h5")
    save_weights_atomic(model, path)
    before = open(path, "rb").read()
    kernel = model.get_layer("dense").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(ValueError, match=r"Not saving .*m\.weights\.h5: weight '.*dense/kernel' holds NaN"):
        save_weights_atomic(model, path)
    assert open(path, "rb").read() == before


def test_best_checkpoint_skips_an_epoch_with_nan_weights(tmp_path):
    model = _model()
    path = str(tmp_path / "best.weights.h5")
    best = BestCheckpoint(path)
    best.set_model(model)
    best.on_epoch_end(0, {"val_accuracy": 0.5})
    kernel = model.get_layer("dense").kernel
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    with pytest.warns(RuntimeWarning, match="holds NaN or inf: not saved"):
        best.on_epoch_end(1, {"val_accuracy": 0.9})
    assert best.best == 0.5 and best.best_epoch == 1


def test_a_diverged_pretraining_stops_and_saves_nothing(tmp_path, capsys):
    from mtl_keras import cli

    root = write_folder_set(str(tmp_path / "data"))
    run_dir = tmp_path / "run"
    argv = [
        "pretrain", "--benchmark", "folders", "--root", root, "--run-dir", str(run_dir), "--quiet",
        "--no-tensorboard", "--set", "image_size=16", "--set", "widths=4,4,4,4", "--set", "queries=1",
        "--set", "test_queries=1", "--set", "pretrain_epochs=3", "--set", "pretrain_patience=0",
        "--set", "pretrain_lr=1e30", "--shots", "1",
    ]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Pretraining diverged" in err and "pretrain_lr" in err and "--restart" in err
    assert not os.path.exists(run_dir / "pretrained_backbone.weights.h5")
