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
    from mtl_keras_app import cli

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


def test_loading_a_weights_file_with_nan_names_the_file(tmp_path):
    from mtl_keras import MetaTransferModel, resnet12

    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3)
    path = str(tmp_path / "mtl_1shot.weights.h5")
    kernel = model.head.kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    model.save_weights(path)  # as a diverged run of the old code wrote it
    other = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3)
    with pytest.raises(
        ValueError, match=r"mtl_1shot\.weights\.h5' holds NaN or inf \(weight '.*head/kernel'\)"
    ):
        other.load_weights(path)


def test_a_phi_file_with_nan_is_refused_and_nothing_assigned(tmp_path):
    from mtl_keras import MetaTransferModel, load_scale_shift_weights, resnet12, save_scale_shift_weights

    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3)
    path = str(tmp_path / "phi.npz")
    save_scale_shift_weights(model, path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    key = next(k for k in arrays if k.endswith("/scale"))
    arrays[key] = np.full_like(arrays[key], np.nan)
    np.savez(path, **arrays)
    other = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3)
    before = [np.array(v) for v in other.weights]
    with pytest.raises(ValueError, match=r"phi\.npz' holds NaN or inf in .*scale"):
        load_scale_shift_weights(other, path)
    for variable, value in zip(other.weights, before):
        np.testing.assert_array_equal(np.array(variable), value)


def test_a_truncated_weights_file_names_itself_and_the_fix(tmp_path):
    from mtl_keras import MetaTransferModel, resnet12

    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3)
    path = tmp_path / "pretrained_backbone.weights.h5"
    model.backbone.save_weights(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    from mtl_keras.models.weights import load_backbone_weights

    with pytest.raises(ValueError, match=r"pretrained_backbone\.weights\.h5' is damaged .*--restart"):
        load_backbone_weights(model.backbone, str(path))
