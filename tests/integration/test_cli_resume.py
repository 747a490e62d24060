"""`mtl-keras run` after a crash: the rerun skips finished stages, resumes the interrupted
one after its last completed epoch, and ends where an uninterrupted run ends.

The crash is a SIGKILL in the middle of a meta-training epoch, injected by a wrapper
script (so that it always lands at the same batch); both runs are subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from mtl_keras_app import cli
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.workflow import RunProgress
from tests.conftest import TINY_CONFIG
from tests.helpers import patient

REPO = str(Path(__file__).resolve().parents[2])

# Runs `mtl-keras ARGS`; with CRASH_AT=EPOCH:BATCH it SIGKILLs itself right after that
# meta-training batch (0-based), mid-epoch; CRASH_STAGE=pretrain: that pretraining batch;
# CRASH_STAGE=evaluate, CRASH_AT=N: after the N-th evaluation; CRASH_STAGE=export: mid-export.
WRAPPER = textwrap.dedent(
    """
    import os, signal, sys
    from mtl_keras import callbacks
    from mtl_keras_app import cli

    crash = os.environ.get("CRASH_AT")
    stage = os.environ.get("CRASH_STAGE", "mtl_")
    if crash and stage == "evaluate":  # CRASH_AT=N: right after the N-th evaluation, before it is recorded
        from mtl_keras_app.workflow import stages

        evaluate, calls = stages.evaluate_episodes, []

        def evaluate_episodes(*args, **kwargs):
            result = evaluate(*args, **kwargs)
            calls.append(1)
            if len(calls) == int(crash):
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        stages.evaluate_episodes = evaluate_episodes
    elif crash and stage == "export":  # right after the SavedModel is written, before its rename
        replace = os.replace

        def killed_replace(src, dst, *args, **kwargs):
            if os.path.basename(os.fspath(src)).startswith(".export-"):
                os.kill(os.getpid(), signal.SIGKILL)
            return replace(src, dst, *args, **kwargs)

        os.replace = killed_replace
    elif crash:
        epoch_at, batch_at = map(int, crash.split(":"))
        begin, end = callbacks.ResumableCheckpoint.on_epoch_begin, callbacks.ResumableCheckpoint.on_train_batch_end

        def on_epoch_begin(self, epoch, logs=None):
            self._test_epoch = epoch
            begin(self, epoch, logs)

        def on_train_batch_end(self, batch, logs=None):
            end(self, batch, logs)
            if stage in self.directory and self._test_epoch == epoch_at and batch == batch_at:
                os.kill(os.getpid(), signal.SIGKILL)

        callbacks.ResumableCheckpoint.on_epoch_begin = on_epoch_begin
        callbacks.ResumableCheckpoint.on_train_batch_end = on_train_batch_end
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def _run_cli(tmp_path, args, cache, crash=None, timeout=None, stage=None):
    timeout = patient(300) if timeout is None else timeout
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(MTL_KERAS_CACHE=cache, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    env.pop("CRASH_AT", None)
    env.pop("CRASH_STAGE", None)
    if crash:
        env["CRASH_AT"] = crash
    if stage:
        env["CRASH_STAGE"] = stage
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    return arrays


@pytest.mark.slow  # `make test-slow`: the longest CLI runs (60-160 s on 2 AVX2 cores)
def test_a_killed_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path, glyph_cache):
    config = tmp_path / "tiny.json"
    # Learning rates high enough that meta-training moves the weights visibly.
    config.write_text(
        json.dumps({**TINY_CONFIG, "meta_epochs": 4, "steps_per_epoch": 3, "phi_lr": 0.01, "head_lr": 0.01})
    )
    common = ["run", "--config", str(config), "--no-tensorboard"]
    reference = _run_cli(tmp_path, [*common, "--run-dir", str(tmp_path / "ref")], glyph_cache)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "crashed"
    killed = _run_cli(tmp_path, [*common, "--run-dir", str(run_dir)], glyph_cache, crash="2:1")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    state = json.loads((run_dir / "backup" / "mtl_1shot" / "state.json").read_text())
    assert state["epoch"] == 2 and state["batches"] == 6  # epochs 1-2 backed up, epoch 3 was cut short
    assert not (run_dir / "results.md").exists()

    resumed = _run_cli(tmp_path, [*common, "--run-dir", str(run_dir)], glyph_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Pretraining: done in an earlier run" in resumed.stdout
    assert "resumed from" in resumed.stdout and "after epoch 2" in resumed.stdout

    ref_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ref_hist, hist = ref_metrics["histories"]["MTL 1-shot"], metrics["histories"]["MTL 1-shot"]
    assert len(hist["loss"]) == 4  # no epoch trained twice, none missing
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "initial_val_accuracy", "kept_epoch"):
        np.testing.assert_allclose(hist[key], ref_hist[key], rtol=0, atol=1e-5, err_msg=key)
    assert ref_hist["loss"][0] != pytest.approx(ref_hist["loss"][-1], abs=1e-4)  # training did something
    ref_weights = _h5_arrays(tmp_path / "ref" / "mtl_1shot.weights.h5")
    weights = _h5_arrays(run_dir / "mtl_1shot.weights.h5")
    assert ref_weights.keys() == weights.keys()
    for name in ref_weights:
        np.testing.assert_allclose(weights[name], ref_weights[name], rtol=0, atol=1e-5, err_msg=name)
    ref_result = ref_metrics["results"]["MTL (SS, meta-trained)"]["1-shot"]["mean"]
    assert metrics["results"]["MTL (SS, meta-trained)"]["1-shot"]["mean"] == pytest.approx(
        ref_result, abs=1e-6
    )
    assert not (run_dir / "backup" / "mtl_1shot").exists()  # a finished stage's backup is removed

    # Other pretraining settings in the same folder: refused, naming the key, before anything is written.
    before = (run_dir / "config.json").read_text()
    code = cli.main([*common, "--run-dir", str(run_dir), "--set", "pretrain_lr=0.5", "--quiet"])
    assert code == 2
    assert (run_dir / "config.json").read_text() == before


@pytest.mark.slow  # `make test-slow`: 91 s of the 2-core CI run of 2026-12-07 (a slow day), which went over 30 min
def test_a_pretraining_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_one(tmp_path, glyph_cache):
    """It used to stop on every rerun with Keras's 'loading weights into a model that has not yet
    been built' (the backup was loaded before Keras built the pretraining model), losing the work;
    once it resumed, the resumed epochs drew the first epochs' order and augmentation again (the
    shuffle and the seed generators restart with the process), so it ended elsewhere."""
    config = tmp_path / "tiny.json"
    settings = {
        "pretrain_epochs": 3,
        "pretrain_batch_size": 256,
        "pretrain_augment": True,
        "pretrain_dropout": 0.2,
    }
    config.write_text(json.dumps({**TINY_CONFIG, **settings, "pretrain_patience": 0}))
    common = ["pretrain", "--config", str(config), "--no-tensorboard"]
    reference = _run_cli(tmp_path, [*common, "--run-dir", str(tmp_path / "ref")], glyph_cache)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = ["--run-dir", str(tmp_path / "run")]
    killed = _run_cli(tmp_path, [*common, *run], glyph_cache, crash="1:1", stage="pretrain")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    state = json.loads((tmp_path / "run" / "backup" / "pretrain" / "state.json").read_text())
    assert state["epoch"] == 1  # epoch 1 backed up, epoch 2 cut short after two batches
    resumed = _run_cli(tmp_path, [*common, *run], glyph_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "resumed from" in resumed.stdout
    ref_history = json.loads((tmp_path / "ref" / "metrics.json").read_text())["histories"]["pretrain"]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["histories"]["pretrain"]
    assert len(history["loss"]) == 3  # no epoch lost, none trained twice
    for key in ("loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(history[key], ref_history[key], rtol=0, atol=1e-5, err_msg=key)
    assert ref_history["loss"][0] != pytest.approx(ref_history["loss"][-1], abs=1e-3)  # it trained
    ref_weights = _h5_arrays(tmp_path / "ref" / "pretrained_backbone.weights.h5")
    weights = _h5_arrays(tmp_path / "run" / "pretrained_backbone.weights.h5")
    assert weights.keys() == ref_weights.keys() and all(np.isfinite(w).all() for w in weights.values())
    for name in ref_weights:
        np.testing.assert_allclose(weights[name], ref_weights[name], rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.slow  # 95 s of a 2-core CI run: make test-slow runs it
def test_a_run_killed_in_evaluation_or_in_export_ends_like_an_uninterrupted_one(tmp_path, glyph_cache):
    """The last two stages of `mtl-keras run`, killed in a real process: the rerun evaluates and
    exports again and prints the numbers of an uninterrupted run; a SavedModel killed before
    its rename is never at the export path, and its temporary folder does not stay behind."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    common = ["run", "--config", str(config), "--no-tensorboard"]
    reference = _run_cli(tmp_path, [*common, "--run-dir", str(tmp_path / "ref")], glyph_cache)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "run"
    run = [*common, "--run-dir", str(run_dir)]
    # Call 1 evaluates the pretrained row, call 2 the meta-trained model.
    killed = _run_cli(tmp_path, run, glyph_cache, crash="2", stage="evaluate")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (
        "MTL (SS, meta-trained)" not in metrics.get("results", {}) and not (run_dir / "results.md").exists()
    )

    killed = _run_cli(tmp_path, run, glyph_cache, crash="1", stage="export")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    assert "Pretraining: done in an earlier run" in killed.stdout
    assert "meta-training 1-shot: done in an earlier run" in killed.stdout
    export = run_dir / "export"
    assert not (export / "5way1shot").exists()  # never half-written at its path
    assert [p.name for p in export.iterdir()]  # the killed export's temporary folder is there ...

    resumed = _run_cli(tmp_path, run, glyph_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in export.iterdir()) == ["5way1shot"]  # ... and removed by the rerun
    assert (export / "5way1shot" / "saved_model.pb").exists()
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert got["results"].keys() == ref["results"].keys()
    for row, by_shot in ref["results"].items():
        for setting, result in by_shot.items():
            assert got["results"][row][setting]["mean"] == pytest.approx(result["mean"], abs=1e-6), row
    assert (run_dir / "results.md").read_text() == (tmp_path / "ref" / "results.md").read_text()


def test_run_progress_skips_done_stages_refuses_other_settings_and_restarts(tmp_path, capsys):
    config = ExperimentConfig.from_dict({**{k: v for k, v in TINY_CONFIG.items() if k != "preset"}})
    progress = RunProgress(str(tmp_path), config)
    assert not progress.done("pretrain") and not progress.started("pretrain")
    os.makedirs(progress.backup_dir("pretrain"))
    (Path(progress.backup_dir("pretrain")) / "state.json").write_text("{}")
    assert progress.started("pretrain")
    progress.complete("pretrain", {"loss": [np.float32(1.5)]})
    assert not os.path.exists(progress.backup_dir("pretrain"))

    again = RunProgress(str(tmp_path), config.replace(test_episodes=7, shots=(5,)))  # evaluation-only changes
    assert again.done("pretrain") and again.history("pretrain") == {"loss": [1.5]}
    with pytest.raises(ValueError, match=r"other settings \(widths: .* -> \[8, 8, 8, 8\].*--restart"):
        RunProgress(str(tmp_path), config.replace(widths=(8, 8, 8, 8)))  # pretraining's own settings
    fresh = RunProgress(str(tmp_path), config.replace(widths=(8, 8, 8, 8)), restart=True)
    assert not fresh.done("pretrain")


def test_a_meta_training_setting_changed_keeps_the_finished_pretraining(tmp_path, capsys):
    """The advice after a NaN says to lower the rates and run again: that must not redo pretraining."""
    config = ExperimentConfig.from_dict({**{k: v for k, v in TINY_CONFIG.items() if k != "preset"}})
    progress = RunProgress(str(tmp_path), config)
    progress.complete("pretrain", {"loss": [1.5]})
    os.makedirs(progress.backup_dir("mtl_1shot"))
    (Path(progress.backup_dir("mtl_1shot")) / "state.json").write_text("{}")
    progress.complete("mtl_5shot", {"loss": [0.5]})
    again = RunProgress(str(tmp_path), config.replace(phi_lr=1e-5, inner_lr=0.5))
    out = capsys.readouterr().out
    assert "changed for meta-training only (inner_lr: " in out and "keeping the finished pretraining" in out
    assert again.done("pretrain") and not again.done("mtl_5shot") and not again.started("mtl_1shot")
    assert RunProgress(str(tmp_path), config.replace(phi_lr=1e-5, inner_lr=0.5)).done("pretrain")  # and stays


def test_a_damaged_progress_file_names_itself_and_the_fix(tmp_path):
    config = ExperimentConfig.from_dict({**{k: v for k, v in TINY_CONFIG.items() if k != "preset"}})
    RunProgress(str(tmp_path), config).complete("pretrain", {"loss": [1.5]})
    path = tmp_path / "backup" / "progress.json"
    path.write_text(path.read_text()[:40])  # truncated, as a full disk leaves a file written in place
    with pytest.raises(ValueError, match=r"progress\.json is damaged .*--restart"):
        RunProgress(str(tmp_path), config)
