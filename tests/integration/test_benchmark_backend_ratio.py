"""``benchmarks/backend_ratio.py --quick``: the JAX vs TensorFlow backend benchmark runs end to end
(a tiny network, one round; nothing is asserted about which backend is faster)."""

import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import patient

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.mark.slow  # 40-55 s of the CI budget (2026-12-03): `make test-slow` runs it
def test_quick_backend_ratio_reports_both_backends(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("tensorflow")
    out = tmp_path / "backend_ratio.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "backend_ratio.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=patient(300),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    rows = {line.split("|")[1].strip(): line for line in table}
    assert {"TensorFlow", "JAX", "**JAX / TF**"} <= set(rows), proc.stdout[-2000:]
    assert (
        "oneDNN runs on: **" in proc.stdout
        and "command: `python benchmarks/backend_ratio.py --quick" in proc.stdout
    )

    report = json.loads(out.read_text())
    (measured,) = report["rounds"]  # --quick: one round
    assert set(measured) == {"tensorflow", "jax"}
    for backend, row in measured.items():
        assert row["backend"] == backend
        for key in ("tasks_per_s", "episodes_per_s", "warmup_fit_seconds", "max_rss_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, (backend, key, row[key])
        assert math.isfinite(row["first_loss"]) and all(math.isfinite(v) for v in row["train_losses"])
    assert measured["jax"]["tensorflow_imported"] is False  # the JAX worker never imported TF
    assert measured["jax"]["train_jax_compile_seconds"] < 0.5  # the timed fit reuses the warm-up's step
    # same weights, same meta-batch: the forward pass (inner loop included) agrees across backends
    jax_loss, tf_loss = measured["jax"]["meta_batch_0_loss"], measured["tensorflow"]["meta_batch_0_loss"]
    assert math.isfinite(jax_loss) and jax_loss == pytest.approx(tf_loss, abs=1e-4)
    for ratio in report["summary"]["ratio"].values():
        assert math.isfinite(ratio) and ratio > 0
    # the timed evaluation reuses the warm-up's compiled functions (weights as arguments)
    assert measured["jax"]["eval_jax_compile_seconds"] < 0.5

    # --merge joins runs' rounds into one report
    merged_path = tmp_path / "merged.json"
    merged = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "backend_ratio.py"), "--merge", str(out), str(out)]
        + ["--out", str(merged_path)],
        capture_output=True,
        text=True,
        timeout=patient(60),
        cwd=ROOT,
    )
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert len(json.loads(merged_path.read_text())["rounds"]) == 2
