"""`mtl-keras`: every subcommand, end to end at tiny scale, and its errors."""

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import shutil

import matplotlib.image
import numpy as np
import pytest

from mtl_keras_app import cli
from mtl_keras_app.config import PRESETS, ExperimentConfig, get_config, resolve_config
from tests.conftest import TINY_CONFIG

SUBCOMMANDS = (
    "demo",
    "run",
    "pretrain",
    "meta-train",
    "evaluate",
    "export",
    "tune",
    "plot",
    "benchmarks",
    "prepare",
)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, glyph_cache):
    """One `mtl-keras run` with the tiny config, shared by the tests that inspect its folder."""
    tmp = tmp_path_factory.mktemp("cli_run")
    config = tmp / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    run_dir = tmp / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"stale": "numbers of an earlier run"}')  # must not survive
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("MTL_KERAS_CACHE", glyph_cache)
        assert cli.main(["run", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    (tmp / "stdout.txt").write_text(out.getvalue())  # what it printed, beside the run folder
    return run_dir


def _events(folder):
    return [f for _, _, files in os.walk(folder) for f in files if f.startswith("events.out.tfevents")]


def _check_png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, image.shape
    assert image[..., :3].std() > 0.02, f"{path} looks blank"


def test_run_writes_a_complete_run_folder(run_folder):
    config = ExperimentConfig.from_dict(json.loads((run_folder / "config.json").read_text()))
    assert config.widths == (4, 4, 4, 4) and config.image_size == 16 and config.shots == (1,)
    for name in (
        "pretrained_backbone.weights.h5",
        "mtl_1shot.weights.h5",
        "results.md",
        "episodes/sample_1shot.npz",
        "export/5way1shot/saved_model.pb",
    ):
        assert (run_folder / name).exists(), name
    metrics = json.loads((run_folder / "metrics.json").read_text())
    assert "stale" not in metrics
    result = metrics["results"]["MTL (SS, meta-trained)"]["1-shot"]
    assert result["episodes"] == 10 and 0 <= result["mean"] <= 1
    assert len(result["per_step_accuracy"]) == 4  # 0..3 inner steps
    # The simple baseline beside MTL: nearest centroid on the pretrained features, same episodes.
    for row in ("SimpleShot L2N (pretrained features)", "SimpleShot CL2N (pretrained features)"):
        centroid = metrics["results"][row]["1-shot"]
        assert centroid["episodes"] == 10 and centroid["inner_steps"] == 0 and 0 <= centroid["mean"] <= 1
    assert set(metrics["paired_difference_simpleshot"]["1-shot"]) == {"against", "mean", "ci95"}
    table = (run_folder / "results.md").read_text()
    assert "| SimpleShot CL2N (pretrained features) |" in table
    assert "1-shot − SimpleShot (paired)" in table and "1-shot − pretrained (paired)" in table
    # Under the table, in words: did meta-training beat the baselines on these episodes?
    (verdict,) = metrics["verdict"]
    assert verdict.startswith("5-way 1-shot: MTL ") and f"- {verdict}" in table
    per_class = metrics["per_class"]["1-shot"]
    assert sum(per_class["episodes"]) == 10 * 5  # 10 episodes x 5 classes
    assert len(per_class["class_names"]) == len(per_class["accuracy"])
    assert sum(metrics["hard_classes"]["1-shot"].values()) <= 10
    assert metrics["channels"] == 1
    # TensorBoard: pretraining and meta-training scalars, the test episode image.
    for stage in (
        "pretrain/train",
        "pretrain/validation",
        "mtl_1shot/train",
        "mtl_1shot/validation",
        "test_1shot",
    ):
        assert _events(run_folder / "logs" / stage), stage
    for png in ("learning_curves", "accuracy_vs_inner_steps", "per_class_accuracy_1shot", "episode_1shot"):
        _check_png(run_folder / "plots" / f"{png}.png")


def test_run_says_how_long_each_stage_takes(run_folder):
    out = (run_folder.parent / "stdout.txt").read_text()
    # Pretraining (55 steps of 512 images, one epoch): an estimate after steps 2-6, then the time.
    assert re.search(
        r"^pretraining: about .+ for 1 epoch \(from steps 2-6: [\d.e-]+ s/step, training steps only\)$",
        out,
        re.M,
    ), out
    assert re.search(r"^pretraining: [\d.]+ s$", out, re.M), out
    assert re.search(r"^meta-training 1-shot: [\d.]+ s$", out, re.M), out  # 2 steps: too short to estimate
    stages = json.loads((run_folder / "metrics.json").read_text())["stage_seconds"]
    assert list(stages) == [
        "loading the benchmark",
        "pretraining",
        "baseline evaluation 1-shot",
        "meta-training 1-shot",
        "test evaluation 1-shot",
        "export 1-shot",
    ]
    assert all(seconds > 0 for seconds in stages.values()), stages
    summary = out[out.index("Time per stage:") :].splitlines()
    assert [line.split("  ")[1].strip() for line in summary[1:8]] == [*stages, "total"]


def test_tensorboard_logs_hold_losses_learning_rates_and_an_episode(run_folder):
    import tensorflow as tf

    def tags(folder):
        found = set()
        for name in _events(folder):
            for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
                found.update(v.tag for v in event.summary.value)
        return found

    train = tags(run_folder / "logs" / "mtl_1shot" / "train")
    assert {"epoch_loss", "epoch_accuracy", "learning_rate/phi", "learning_rate/head"} <= train
    assert {"epoch_loss", "epoch_accuracy"} <= tags(run_folder / "logs" / "mtl_1shot" / "validation")
    assert "test_episode" in tags(run_folder / "logs" / "test_1shot")


def test_plot_command_rewrites_the_figures(run_folder, tmp_path, capsys):
    assert cli.main(["plot", str(run_folder), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 5 and all(os.path.exists(p) for p in printed)


@pytest.mark.slow  # `make test-slow`: 31 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_stages_one_by_one_share_a_run_folder(tiny_config_file, tmp_path, capsys):
    run_dir = str(tmp_path / "staged")
    # Pretraining's code path without its cost (0 epochs); later stages read RUN_DIR/config.json.
    assert (
        cli.main(
            [
                "pretrain",
                "--config",
                tiny_config_file,
                "--set",
                "pretrain_epochs=0",
                "--run-dir",
                run_dir,
                "--quiet",
                "--no-tensorboard",
            ]
        )
        == 0
    )
    assert os.path.exists(os.path.join(run_dir, "pretrained_backbone.weights.h5"))
    assert cli.main(["meta-train", "--run-dir", run_dir, "--quiet"]) == 0
    assert cli.main(["evaluate", "--run-dir", run_dir, "--episodes", "5", "--quiet"]) == 0
    assert cli.main(["export", "--run-dir", run_dir, "--output", str(tmp_path / "served"), "--quiet"]) == 0
    assert os.path.exists(tmp_path / "served" / "5way1shot" / "saved_model.pb")
    metrics = json.loads(open(os.path.join(run_dir, "metrics.json")).read())
    assert metrics["results"]["MTL (SS, meta-trained)"]["1-shot"]["episodes"] == 5
    assert {"pretrain", "MTL 1-shot"} <= set(metrics["histories"])
    assert _events(os.path.join(run_dir, "logs", "mtl_1shot"))
    assert os.path.exists(os.path.join(run_dir, "plots", "episode_1shot.png"))
    assert get_config(os.path.join(run_dir, "config.json")).pretrain_epochs == 0


@pytest.mark.slow  # `make test-slow`: 57 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_run_is_the_stages_one_after_the_other(run_folder, tmp_path, glyph_cache, monkeypatch, capsys):
    """`run` calls the stage functions: the four subcommands on the same config give the same
    numbers episode for episode, and a stage completed earlier is skipped, not redone."""
    monkeypatch.setenv("MTL_KERAS_CACHE", glyph_cache)
    run_dir = str(tmp_path / "staged")
    common = ["--run-dir", run_dir, "--quiet", "--no-tensorboard"]
    assert cli.main(["pretrain", "--config", str(run_folder / "config.json"), *common]) == 0
    weights = os.path.join(run_dir, "pretrained_backbone.weights.h5")
    written = os.stat(weights).st_mtime_ns
    capsys.readouterr()
    assert cli.main(["pretrain", "--run-dir", run_dir, "--no-tensorboard"]) == 0
    assert "Pretraining: done in an earlier run" in capsys.readouterr().out
    assert os.stat(weights).st_mtime_ns == written
    assert cli.main(["meta-train", *common]) == 0
    assert cli.main(["evaluate", *common]) == 0
    staged = json.loads(open(os.path.join(run_dir, "metrics.json")).read())
    whole = json.loads((run_folder / "metrics.json").read_text())
    for key in ("loss", "val_accuracy", "kept_epoch"):
        np.testing.assert_array_equal(
            staged["histories"]["MTL 1-shot"][key], whole["histories"]["MTL 1-shot"][key]
        )
    row = "MTL (SS, meta-trained)"
    np.testing.assert_array_equal(
        staged["results"][row]["1-shot"]["episode_accuracies"],
        whole["results"][row]["1-shot"]["episode_accuracies"],
    )
    assert staged["per_class"] == whole["per_class"]


def test_meta_train_with_hard_tasks(run_folder, tmp_path, glyph_cache, monkeypatch, capsys):
    """--set hard_tasks=true trains on hard tasks too (the paper's periodic HT schedule)."""
    monkeypatch.setenv("MTL_KERAS_CACHE", glyph_cache)
    run_dir = str(tmp_path / "ht")
    argv = [
        "meta-train",
        "--config",
        str(run_folder / "config.json"),
        "--run-dir",
        run_dir,
        "--no-tensorboard",
    ]
    argv += ["--weights", str(run_folder / "pretrained_backbone.weights.h5")]
    for assignment in (
        "hard_tasks=true",
        "ht_every=1",
        "ht_hard_batches=1",
        "steps_per_epoch=6",
        "meta_epochs=2",
    ):
        argv += ["--set", assignment]
    assert cli.main(argv) == 0
    history = json.loads(open(os.path.join(run_dir, "metrics.json")).read())["histories"]["MTL 1-shot"]
    assert len(history["hard_tasks"]) == 2 and sum(history["hard_tasks"]) > 0, history
    assert "hard tasks; top-3 failure classes" in capsys.readouterr().out
    plain = json.loads((run_folder / "metrics.json").read_text())["histories"]["MTL 1-shot"]
    assert "hard_tasks" not in plain  # off by default


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: mtl-keras {command}" in capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in SUBCOMMANDS)


def test_bad_flag_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--widths", "4"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --widths" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["run", "--set", "wayz=5"], "'wayz'"),
        (["run", "--set", "ways=five"], "'ways'"),
        (["run", "--set", "widths=4,4"], "'widths'"),
        (["run", "--set", "inner_lr=-1"], "'inner_lr'"),
        (["run", "--set", "ways"], "'ways'"),
        (["run", "--config", "no-such-preset"], "no-such-preset"),
        (["run", "--benchmark", "imagenet21k"], "'benchmark'"),
    ],
)
def test_bad_config_value_is_a_one_line_error_naming_it(argv, named, tmp_path, capsys):
    assert cli.main([*argv, "--run-dir", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mtl-keras {argv[0]}: error:") and named in err and "\n" not in err
    assert not (tmp_path / "never").exists()


def test_bad_numbers_are_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--run-dir", "x", "--episodes", "0"])
    assert "--episodes" in capsys.readouterr().err


def test_later_stages_need_a_run_dir(capsys):
    with pytest.raises(SystemExit):
        cli.main(["meta-train"])
    assert "--run-dir" in capsys.readouterr().err


def test_missing_weights_are_reported(tmp_path, capsys):
    assert cli.main(["meta-train", "--run-dir", str(tmp_path)]) == 2
    assert "No pretrained weights" in capsys.readouterr().err


def test_benchmarks_lists_the_registry(capsys):
    assert cli.main(["benchmarks"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("glyphs", "mini_imagenet", "tiered_imagenet", "fc100"))


def test_demo_keeps_its_defaults():
    args = cli.build_parser().parse_args(["demo"])
    assert (args.config, args.run_dir, args.test_episodes) == ("cpu-glyph_scenes", None, None)
    assert args.func is cli._demo


# ----------------------------------------------------------------------------- presets and config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads_and_validates(name):
    config = get_config(name).validate()
    assert config is PRESETS[name]
    assert ExperimentConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("benchmark, size", [("mini_imagenet", 84), ("tiered_imagenet", 84), ("fc100", 32)])
def test_paper_presets_hold_the_official_settings(benchmark, size):
    both = get_config(f"paper-{benchmark}")
    assert both.shots == (1, 5)
    assert get_config(f"paper-{benchmark}-1shot").shots == (1,)
    assert get_config(f"paper-{benchmark}-5shot").shots == (5,)
    assert (both.benchmark, both.image_size, both.backbone, both.widths) == (
        benchmark,
        size,
        "resnet12",
        (64, 128, 256, 512),
    )
    assert (both.phi_lr, both.head_lr, both.inner_lr) == (1e-4, 1e-3, 0.01)
    assert (both.inner_steps, both.eval_inner_steps) == (20, 100)
    assert (both.ways, both.queries, both.test_episodes) == (5, 15, 600)


def test_overrides_parse_each_field_type():
    config = get_config("cpu-glyphs").with_overrides(
        ["widths=8,8,8,8", "shots=[1, 5]", "inner_lr=0.5", "first_order=true", "root=none", "benchmark=fc100"]
    )
    assert config.widths == (8, 8, 8, 8) and config.shots == (1, 5) and config.inner_lr == 0.5
    assert config.first_order is True and config.root is None and config.benchmark == "fc100"


def test_json_config_can_start_from_a_preset(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "paper-fc100", "meta_epochs": 3, "widths": [8, 8, 8, 8]}))
    config = get_config(str(path))
    assert config.meta_epochs == 3 and config.widths == (8, 8, 8, 8) and config.image_size == 32
    assert config.phi_lr == PRESETS["paper-fc100"].phi_lr


def test_resolve_config_order_and_run_dir_default(tmp_path):
    get_config("cpu-glyphs").replace(meta_epochs=7).to_json(str(tmp_path / "config.json"))
    config = resolve_config(None, run_dir=str(tmp_path), assignments=["seed=3"], seed=1, root=None)
    assert config.meta_epochs == 7 and config.seed == 3
    assert resolve_config(None, run_dir=str(tmp_path / "new")) == PRESETS["cpu"]


def test_validate_rejects_wrong_types():
    with pytest.raises(ValueError, match="'ways'"):
        get_config("cpu-glyphs").replace(ways=2.5).validate()
    with pytest.raises(ValueError, match="'first_order'"):
        get_config("cpu-glyphs").replace(first_order="yes").validate()
    assert np.isfinite(get_config("cpu-glyphs").validate().phi_lr)


def test_pickle_benchmarks_are_read_only_with_allow_pickle(tmp_path, capsys):
    from tests.unit.data.test_sources import write_cifar100_archive

    root = write_cifar100_archive(tmp_path / "cifar")
    command = [
        "pretrain",
        "--config",
        "paper-fc100-1shot",
        "--root",
        str(root),
        "--quiet",
        "--no-tensorboard",
    ]
    command += ["--set", "widths=4,4,4,4", "--set", "pretrain_epochs=1", "--set", "pretrain_batch_size=32"]
    command += ["--set", "queries=1", "--set", "test_queries=1"]  # the fixture's 2 images per class
    assert cli.main([*command, "--run-dir", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "are Python pickles" in err and "--allow-pickle" in err
    assert cli.main([*command, "--allow-pickle", "--run-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "pretrained_backbone.weights.h5").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["allow_pickle"] is True


def test_a_read_only_run_folder_is_evaluated_and_exported(
    run_folder, tmp_path, glyph_cache, monkeypatch, capsys
):
    """A folder this process may not write (a read-only mount, another user's run; simulated: root
    ignores permission bits) is evaluated — results printed, nothing written — and exported with
    --output elsewhere. Both stopped at the lock before ('Permission denied: .../.lock')."""
    monkeypatch.setenv("MTL_KERAS_CACHE", glyph_cache)
    folder = tmp_path / "read_only"
    shutil.copytree(run_folder, folder)
    real_open, real_access = os.open, os.access

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **k: False if str(p).startswith(str(folder)) else real_access(p, mode, **k),
    )
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    with pytest.warns(UserWarning, match="is read-only: evaluating it, but its results are only printed"):
        assert cli.main(["evaluate", "--run-dir", str(folder), "--episodes", "5"]) == 0
    assert "MTL: " in capsys.readouterr().out
    assert (
        cli.main(["export", "--run-dir", str(folder), "--output", str(tmp_path / "served"), "--quiet"]) == 0
    )
    assert (tmp_path / "served" / "5way1shot" / "saved_model.pb").exists()
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before  # nothing written
    # A live writer still holds the folder: the reader is refused, naming it.
    writer = real_open(str(folder / ".lock"), os.O_RDONLY)
    try:
        fcntl.flock(writer, fcntl.LOCK_EX)
        assert cli.main(["evaluate", "--run-dir", str(folder), "--episodes", "5", "--quiet"]) == 2
        assert "is in use by" in capsys.readouterr().err
    finally:
        os.close(writer)
