"""A full disk during a run: one line naming the file and the fix (exit 2), nothing half-written,
the last completed epoch kept, and the same command resumes once there is space.

HDF5 does not survive a full disk: h5py's file cannot be closed after a failed write and the
interpreter crashed as it exited (690 lines of HDF5 errors, then a segmentation fault). So every
weights file is checked against the free space before it is written (`check_free_space`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mtl_keras import atomic
from mtl_keras_app import cli
from tests.conftest import TINY_CONFIG
from tests.helpers import patient


@pytest.mark.slow  # `make test-slow`: 59 s of the 2-core CI run of 2026-12-07 (a slow day), which went over 30 min
def test_a_disk_that_fills_during_pretraining_stops_with_one_line_and_the_rerun_resumes(
    tmp_path, glyph_cache, monkeypatch, capsys
):
    monkeypatch.setenv("MTL_KERAS_CACHE", glyph_cache)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_CONFIG, "pretrain_epochs": 3, "pretrain_patience": 0}))
    run_dir = tmp_path / "run"
    argv = ["pretrain", "--config", str(config), "--run-dir", str(run_dir), "--no-tensorboard", "--quiet"]
    real = shutil.disk_usage
    calls = []

    def filling(path):  # the disk is full from the second weights file on
        calls.append(path)
        usage = real(path)
        return usage._replace(free=0) if len(calls) > 1 else usage

    monkeypatch.setattr(atomic.shutil, "disk_usage", filling)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device of" in err[0] and "epoch-00002.weights.h5" in err[0]
    assert "it resumes after the last completed epoch" in err[0]
    backup = run_dir / "backup" / "pretrain"
    assert json.loads((backup / "state.json").read_text())["epoch"] == 1
    assert not [p for p in run_dir.rglob(".tmp-*")]  # nothing half-written
    assert not (run_dir / "pretrained_backbone.weights.h5").exists()
    monkeypatch.setattr(atomic.shutil, "disk_usage", real)  # space freed
    assert cli.main(argv[:-1]) == 0
    assert "resumed from" in capsys.readouterr().out
    history = json.loads((run_dir / "metrics.json").read_text())["histories"]["pretrain"]
    assert len(history["loss"]) == 3


@pytest.mark.slow  # `make test-slow`: 63 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_a_real_full_file_system_ends_with_a_message_not_a_crash(tmp_path, glyph_cache):
    """On a 700 KiB tmpfs (root only: skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny_fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        config = tmp_path / "wide.json"  # a 2.6 MB weights file
        config.write_text(json.dumps({**TINY_CONFIG, "widths": [16, 32, 48, 64], "pretrain_epochs": 2}))
        argv = [
            "pretrain",
            "--config",
            str(config),
            "--run-dir",
            str(mount / "run"),
            "--no-tensorboard",
            "--quiet",
        ]
        script = "import sys; from mtl_keras_app import cli; sys.exit(cli.main(sys.argv[1:]))"
        result = subprocess.run(
            [sys.executable, "-c", script, *argv],
            capture_output=True,
            text=True,
            timeout=patient(300),
            env={**os.environ, "MTL_KERAS_CACHE": glyph_cache, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert result.returncode == 2, (result.returncode, result.stderr[-2000:])  # was -11 (SIGSEGV)
        assert "no space left on the device of" in result.stderr and "HDF5" not in result.stderr
        assert not [p for p in (mount / "run").rglob(".tmp-*")]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
