"""`mtl-keras` on JAX where TensorFlow cannot be imported (a GPU machine with JAX only).

One process, TensorFlow blocked at the import system (as if not installed: ``import tensorflow``
raises `ModuleNotFoundError` and ``"tensorflow"`` never enters ``sys.modules``), runs the tiny
``run`` (pretrain → evaluate → meta-train → evaluate), then ``export`` (refused by name),
``--strategy mirrored`` (refused by name) and a one-trial ``tune`` from the run's weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from tests.conftest import TINY_CONFIG
from tests.no_tensorflow import PRELUDE

#: In the JAX pass of ``make test`` (the Makefile names this file), once: it starts its own JAX
#: process, so the TensorFlow pass skips it.
pytestmark = [
    pytest.mark.backends,
    pytest.mark.skipif(keras.backend.backend() != "jax", reason="run once, in the JAX pass"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COMMANDS = """
import contextlib, io, json, sys
from mtl_keras_app.cli import main

def command(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

said = {}
said["run"] = command("run", "--config", "tiny.json", "--run-dir", "run")
said["export"] = command("export", "--run-dir", "run")
said["mirrored"] = command("run", "--config", "tiny.json", "--run-dir", "other", "--strategy", "mirrored")
said["tune"] = command(
    "tune", "--config", "tiny.json", "--run-dir", "tune", "--max-trials", "1",
    "--weights", "run/pretrained_backbone.weights.h5", "--quiet",
)
import keras
said["backend"] = keras.backend.backend()
said["tensorflow_imported"] = "tensorflow" in sys.modules
json.dump(said, open("said.json", "w"))
"""


def test_the_cli_runs_on_jax_without_tensorflow(tmp_path, glyph_cache):
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    env |= {
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "MTL_KERAS_CACHE": glyph_cache,
        "KERAS_HOME": str(tmp_path / "keras_home"),
        "PYTHONPATH": ROOT,
    }
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(COMMANDS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    said = json.loads((tmp_path / "said.json").read_text())
    assert said["backend"] == "jax" and not said["tensorflow_imported"]

    run = said["run"]
    assert run["code"] == 0, run["out"][-3000:] + run["err"][-3000:]
    assert "Export skipped" in run["out"] and "pip install tensorflow" in run["out"]
    assert "no TensorBoard logs" in run["out"]
    # JAX on a CPU: once, before the first training, the note that TensorFlow trains faster here
    assert run["out"].count("KERAS_BACKEND=tensorflow trains faster here") == 1, run["out"][:3000]
    folder = tmp_path / "run"
    for name in ("pretrained_backbone.weights.h5", "mtl_1shot.weights.h5", "results.md", "plots"):
        assert (folder / name).exists(), name
    assert not (folder / "export").exists() and not (folder / "logs").exists()
    results = json.loads((folder / "metrics.json").read_text())["results"]
    mtl = results["MTL (SS, meta-trained)"]["1-shot"]
    assert mtl["episodes"] == TINY_CONFIG["test_episodes"] and 0 < mtl["mean"] <= 1
    assert (
        results["SimpleShot L2N (pretrained features)"]["1-shot"]["episodes"] == TINY_CONFIG["test_episodes"]
    )
    history = json.loads((folder / "metrics.json").read_text())["histories"]["pretrain"]
    assert len(history["loss"]) == TINY_CONFIG["pretrain_epochs"]

    export = said["export"]
    assert export["code"] == 2 and "SavedModel export needs TensorFlow" in export["err"], export
    mirrored = said["mirrored"]
    assert mirrored["code"] == 2 and "KERAS_BACKEND=tensorflow" in mirrored["err"], mirrored
    assert "DataParallel" in mirrored["err"]

    tune = said["tune"]
    assert tune["code"] == 0, tune["out"][-3000:] + tune["err"][-3000:]
    summary = json.loads((tmp_path / "tune" / "tuning.json").read_text())
    assert summary["best_score"] is not None and 0 < summary["best_score"] <= 1
