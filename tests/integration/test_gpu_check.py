"""``benchmarks/gpu_check.py``: the prepared GPU check runs end to end on a CPU at tiny sizes with
TensorFlow unimportable (so that its first GPU run is not its first run), and its targets and
peak table read what they should."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import patient
from tests.no_tensorflow import PRELUDE as NO_TENSORFLOW

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")

#: The driver runs with TensorFlow unimportable; ``--without-tensorflow`` does the same in its workers.
PRELUDE = NO_TENSORFLOW + "import runpy\n"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # about 2-3 min on 2 shared cores: six JAX compilations of a tiny ResNet-12
def test_tiny_gpu_check_runs_on_cpu_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "out"
    argv = [
        SCRIPT,
        "--tiny",
        "--rows",
        "4",
        "--without-tensorflow",
        "--threads",
        "2",
        "--budget-s",
        "1500",
        "--peak-tflops",
        "bfloat16=2,tf32=1,float32=1",
        "--out",
        str(out),
    ]
    code = PRELUDE + f"sys.argv = {argv!r}\nrunpy.run_path({SCRIPT!r}, run_name='__main__')\n"
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    env |= {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=patient(900), env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "gpu_check.json").read_text())
    assert report["not_run"] == [], report["not_run"]
    measured = {
        (
            r["config"]["mode"],
            r["config"]["shots"],
            r["config"]["meta_batch"],
            r["config"]["precision"],
            r["config"]["first_order"],
        )
        for r in report["rows"]
    }
    assert measured == {
        ("train", 1, 8, "mixed_bfloat16", False),
        ("eval", 1, 8, "mixed_bfloat16", False),
        ("train", 1, 8, "float32", False),
        ("eval", 1, 8, "float32", False),
        ("train", 1, 2, "float32", False),
        ("train", 1, 8, "float32", True),
    }
    with_torch = importlib.util.find_spec("torch") is not None
    for row in report["rows"]:
        unit = "tasks_per_s" if row["config"]["mode"] == "train" else "episodes_per_s"
        k = row["mtl_keras"]
        host = [k["host_input_seconds"]] if row["config"]["mode"] == "train" else []
        for value in (
            k[unit],
            k["tflop_per_s"],
            k["utilisation"],
            k["compile_seconds"],
            k["max_rss_mib"],
            *host,
        ):
            assert _positive(value), (row["label"], k)
        assert k["peak_gpu_mib"] is None  # a CPU: peak RSS instead
        assert row["tensorflow_loaded"] is False
        assert row["worker"]["platform"] == "cpu"
        if with_torch:
            o = row["official"]
            for value in (o[unit], o["tflop_per_s"], o["utilisation"], o["max_rss_mib"]):
                assert _positive(value), (row["label"], o)
        else:
            assert row["official"] is None
    if not with_torch:
        assert "PyTorch is not installed" in proc.stdout

    markdown = (out / "gpu_check.md").read_text()
    table = [
        line for line in markdown.splitlines() if line.startswith("| train |") or line.startswith("| eval |")
    ]
    main_rows = [line for line in table if line.count("|") == 15]
    assert len(main_rows) == 6, markdown
    assert "| train | 1 | 8 | mixed_bfloat16 | second |" in markdown
    assert "| train | 1 | 8 | float32 | first |" in markdown
    statuses = {t["target"]: t["status"] for t in report["targets"]}
    assert len(statuses) == 3
    ratio, projection, bf16 = statuses.values()
    assert projection in ("PASS", "FAIL") and bf16 in ("PASS", "FAIL")
    assert ratio in (("PASS", "FAIL") if with_torch else ("NOT MEASURED",))
    for target in report["targets"]:
        assert f"{target['status']}: {target['target']}" in proc.stdout


def test_gpu_check_peaks_and_targets():
    """The datasheet peak of each H100/H200 variant; the targets' PASS / FAIL / NOT MEASURED."""
    from benchmarks import gpu_check

    assert gpu_check.device_peaks("NVIDIA H100 80GB HBM3", None)[1]["bfloat16"] == 989.5
    assert gpu_check.device_peaks("NVIDIA H100 PCIe", None)[1]["tf32"] == 378.0
    assert gpu_check.device_peaks("NVIDIA H200 NVL", None)[1]["bfloat16"] == 835.5
    assert gpu_check.device_peaks("NVIDIA H200", None)[1]["float32"] == 67.0
    assert gpu_check.device_peaks("cpu", None) == (None, None)
    assert gpu_check.device_peaks("cpu", {"tf32": 1.0}) == ("--peak-tflops", {"tf32": 1.0})

    def row(precision, first_order, tasks, official, compile_seconds=30.0):
        config = {
            "mode": "train",
            "shots": 1,
            "meta_batch": 8,
            "precision": precision,
            "first_order": first_order,
        }
        return {
            "label": str(config),
            "config": config,
            "mtl_keras": {"tasks_per_s": tasks, "compile_seconds": compile_seconds},
            "official": {"tasks_per_s": official},
        }

    report = {"rows": [row("float32", False, 10.0, 4.0), row("mixed_bfloat16", False, 20.0, 4.0)]}
    status = [t["status"] for t in gpu_check.check_targets(report)]
    assert status == ["PASS", "PASS", "PASS"]  # 5x; 10,000 / 20 + 30 s = 8.8 min; 2x
    report = {"rows": [row("float32", False, 10.0, 4.0), row("mixed_bfloat16", False, 11.0, 4.0)]}
    status = [t["status"] for t in gpu_check.check_targets(report)]
    assert status == ["FAIL", "FAIL", "FAIL"]  # 2.75x; 15.6 min; 1.1x
    assert [t["status"] for t in gpu_check.check_targets({"rows": []})] == ["NOT MEASURED"] * 3
