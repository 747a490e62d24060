"""Defaults on a user's own data (issue 14 item 7): every episode checked before training,
small classes dropped on request, pretraining until validation stops improving, weak
backbones reported."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from mtl_keras.data.split import ClassSplit
from mtl_keras_app import cli
from mtl_keras_app.config import ExperimentConfig, get_config
from mtl_keras_app.workflow import check_episode_settings, pretrain, weak_pretraining
from tests.conftest import make_prototype_split


def _folder_set(root, counts: dict[str, dict[str, int]], size=16, seed=0):
    """``root/{split}/{class}/{i}.png``, each class a noisy colour prototype."""
    rng = np.random.default_rng(seed)
    for split, classes in counts.items():
        for name, n in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            proto = rng.integers(0, 256, (size, size, 3))
            for i in range(n):
                pixels = np.clip(proto + rng.normal(0, 20, proto.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


COUNTS = {
    "train": {f"base{i}": 12 for i in range(6)},
    "val": {f"val{i}": 11 for i in range(5)},
    "test": {**{f"novel{i}": 11 for i in range(5)}, "tiny_class": 7, "smallest": 4},
}


def test_a_class_too_small_for_any_shot_setting_is_refused_before_training(tmp_path, capsys):
    _folder_set(tmp_path / "data", COUNTS)
    run_dir = tmp_path / "run"
    argv = [
        "run", "--benchmark", "folders", "--root", str(tmp_path / "data"), "--run-dir", str(run_dir),
        "--set", "image_size=16", "--set", "widths=4,4,4,4", "--set", "queries=5", "--set", "test_queries=5",
        "--shots", "1", "5",
    ]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    # Both small test classes are named, with the 5-shot need, at once, before any training.
    assert "'tiny_class' has 7" in err and "'smallest' has 4" in err and "needs 10 images" in err
    assert "drop_small_classes=true" in err
    assert not (run_dir / "pretrained_backbone.weights.h5").exists()


def test_pretraining_alone_runs_and_says_what_meta_training_will_refuse(tmp_path, capsys):
    # Pretraining draws no episode: the stage runs, and names the classes meta-training refuses.
    _folder_set(tmp_path / "data", COUNTS)
    run_dir = tmp_path / "run"
    argv = [
        "pretrain", "--benchmark", "folders", "--root", str(tmp_path / "data"), "--run-dir", str(run_dir),
        "--set", "image_size=16", "--set", "widths=4,4,4,4", "--set", "queries=5", "--set", "test_queries=5",
        "--set", "pretrain_epochs=1", "--set", "pretrain_patience=0", "--shots", "1", "5", "--quiet",
        "--no-tensorboard",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "meta-training will stop here" in out and "'tiny_class' has 7" in out
    assert (run_dir / "pretrained_backbone.weights.h5").exists()


def test_drop_small_classes_names_them_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    counts = [12, 12, 12, 12, 12, 7, 3]
    labels = np.repeat(np.arange(len(counts)), counts)
    images = rng.integers(0, 256, (len(labels), 8, 8, 1)).astype(np.uint8)

    def split(name):
        return ClassSplit.from_arrays(images, labels, name=name)

    config = ExperimentConfig(shots=(1, 5), queries=5, test_queries=5, drop_small_classes=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train, val, test = check_episode_settings(config, (split("train"), split("val"), split("test")))
    assert test.num_classes == 5 and train.num_classes == 5
    assert "Dropping 2 of 7 'test' classes with fewer than 10 images" in out.getvalue()
    names = split("test").class_names
    assert f"'{names[5]}' (7)" in out.getvalue() and f"'{names[6]}' (3)" in out.getvalue()
    np.testing.assert_array_equal(test.class_ids, np.arange(5))  # global ids kept
    with pytest.raises(ValueError, match="6-way episodes need 6 classes per split, but split .train. has 5"):
        check_episode_settings(config.replace(ways=6), (split("train"), split("val"), split("test")))


@pytest.mark.slow  # `make test-slow`: 33 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_pretraining_stops_when_the_held_out_accuracy_stops_improving():
    split = make_prototype_split(num_classes=4, per_class=20)
    config = get_config("cpu").replace(
        image_size=16, widths=(4, 4, 4, 4), pretrain_epochs=12, pretrain_patience=2, pretrain_lr=1e-12,
        pretrain_augment=False, pretrain_batch_size=32,
    )  # fmt: skip
    _, history = pretrain(config, split, verbose=False)
    assert len(history["loss"]) == 3  # rate ~0: no improvement after epoch 1, patience 2
    _, fixed = pretrain(config.replace(pretrain_epochs=3, pretrain_patience=0), split, verbose=False)
    assert len(fixed["loss"]) == 3


def test_a_weak_backbone_is_reported_and_a_good_one_is_not():
    weak = weak_pretraining(
        {"loss": [4.0] * 4, "accuracy": [0.09] * 4, "val_accuracy": [0.05, 0.07, 0.06, 0.07]}, 135
    )
    assert (
        "7.0% held-out accuracy over 135 base classes (chance 0.7%)" in weak and "pretrain_patience" in weak
    )
    assert weak_pretraining({"loss": [1.0], "accuracy": [0.9], "val_accuracy": [0.8]}, 64) is None
    assert "training accuracy" in weak_pretraining({"loss": [3.0], "accuracy": [0.2]}, 64)


@pytest.mark.slow  # `make test-slow`: 39 s of the 2-core CI run of 2026-12-07 (a slow day), which went over 30 min
def test_a_weak_run_says_so_before_meta_training(tmp_path, glyph_cache, monkeypatch):
    from tests.conftest import TINY_CONFIG

    monkeypatch.setenv("MTL_KERAS_CACHE", glyph_cache)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(["run", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--no-tensorboard"])
    text = out.getvalue()
    assert "Warning: pretraining ended after 1 epoch(s)" in text
    assert text.index("Warning: pretraining ended") < text.index("[3/4]")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["warnings"]


def test_verify_and_skip_unreadable_are_reachable_from_the_cli(tmp_path, capsys):
    # A JPEG whose data is corrupt loads silently by default (PIL decodes it; libjpeg only prints
    # "Corrupt JPEG data" with no file name, at every epoch). --set verify=full names it before any
    # training; --set skip_unreadable=true leaves it out, listed, and the stage runs.
    from tests.unit.data.test_sources import _corrupt_jpeg

    _folder_set(tmp_path / "data", COUNTS | {"test": {f"novel{i}": 11 for i in range(5)}})
    bad = _corrupt_jpeg(tmp_path / "data" / "train" / "base0" / "bad.jpg")
    run_dir = tmp_path / "run"
    argv = [
        "pretrain", "--benchmark", "folders", "--root", str(tmp_path / "data"), "--run-dir", str(run_dir),
        "--set", "image_size=16", "--set", "widths=4,4,4,4", "--set", "queries=5", "--set", "test_queries=5",
        "--set", "pretrain_epochs=1", "--set", "pretrain_patience=0", "--shots", "1", "--quiet",
        "--no-tensorboard",
    ]  # fmt: skip
    for check in ([], ["--set", "verify=full"]):  # the default ('auto') decodes a set this small fully
        assert cli.main([*argv, *check]) == 2
        err = capsys.readouterr().err
        assert f"'{bad}' is not a readable image (libjpeg: Corrupt JPEG data" in err
    elsewhere = [str(tmp_path / "header_run") if a == str(run_dir) else a for a in argv]
    assert (
        cli.main([*elsewhere, "--set", "verify=header", "--set", "pretrain_epochs=0"]) == 0
    )  # the old default
    assert not (run_dir / "pretrained_backbone.weights.h5").exists()
    with pytest.warns(UserWarning, match=r"left out 1 unreadable file\(s\) .*bad\.jpg' \(libjpeg"):
        assert cli.main([*argv, "--set", "skip_unreadable=true"]) == 0
    assert (run_dir / "pretrained_backbone.weights.h5").exists()
    with pytest.raises(ValueError, match="Config key 'verify' must be one of"):
        ExperimentConfig(verify="fast").validate()
