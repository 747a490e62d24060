"""TensorFlow's start-up noise on CPU-only machines is filtered; GPUs, user settings and real errors are not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtl_keras_app import quiet as _quiet

REPO = str(Path(__file__).resolve().parents[2])

# What `import tensorflow as tf; tf.constant(1)` printed on this project's CPU machine (TF 2.21).
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796164855.027327    5001 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors from different "
    "computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796164855.027696    5001 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "I0000 00:00:1796164855.109682    5001 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to "
    "use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796164860.421242    5001 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    "E0000 00:00:1796164860.421242    5001 some_kernel.cc:12] Invalid argument: shapes do not match",
    "W0000 00:00:1796165183.776083    8439 cache_dataset_ops.cc:912] The calling iterator did not fully read",
    "F0000 00:00:1796165183.776083    8439 logging.cc:1] Check failed: x == y",
    "Traceback (most recent call last):",
    '  File "train.py", line 3, in <module>',
    "/x/keras/src/a.py:1: UserWarning: something a user should read",
]
CPU = {"nvidia": False, "tensorflow_imported": False}


def test_cpu_only_machine_sets_the_info_level_and_filters():
    plan = _quiet.plan_quiet({}, **CPU)
    assert plan is not None and plan.set_env == {"TF_CPP_MIN_LOG_LEVEL": "1"}


def test_a_gpu_machine_is_left_untouched():
    assert _quiet.plan_quiet({}, nvidia=True, tensorflow_imported=False) is None
    assert _quiet.plan_quiet({"TF_CPP_MIN_LOG_LEVEL": "2"}, nvidia=True, tensorflow_imported=False) is None


@pytest.mark.parametrize("level", ["1", "2", "3"])
def test_a_user_set_log_level_is_never_overridden(level):
    plan = _quiet.plan_quiet({"TF_CPP_MIN_LOG_LEVEL": level}, **CPU)
    assert plan is not None and plan.set_env == {}  # still filtered: the user asked for no INFO lines


@pytest.mark.parametrize("level", ["0", "", "verbose"])  # TensorFlow reads all three as 0
def test_log_level_zero_shows_everything(level):
    assert _quiet.plan_quiet({"TF_CPP_MIN_LOG_LEVEL": level}, **CPU) is None


@pytest.mark.parametrize("visible", ["", "-1", "0"])
def test_cuda_visible_devices_is_never_set_or_changed(visible):
    plan = _quiet.plan_quiet({"CUDA_VISIBLE_DEVICES": visible}, **CPU)
    assert "CUDA_VISIBLE_DEVICES" not in plan.set_env


def test_too_late_once_tensorflow_is_imported():
    assert _quiet.plan_quiet({}, nvidia=False, tensorflow_imported=True) is None


def test_nvidia_devices_or_driver_count_as_a_gpu(tmp_path):
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    dev.mkdir()
    proc.mkdir()
    assert not _quiet.nvidia_present(str(dev), str(proc))
    (dev / "nvidia0").touch()
    assert _quiet.nvidia_present(str(dev), str(proc))
    (dev / "nvidia0").unlink()
    (proc / "driver" / "nvidia").mkdir(parents=True)
    assert _quiet.nvidia_present(str(dev), str(proc))
    (proc / "driver" / "nvidia").rmdir()
    (dev / "dxg").touch()  # WSL 2's GPU
    assert _quiet.nvidia_present(str(dev), str(proc))


def test_only_the_known_start_up_lines_are_noise():
    assert [line for line in NOISE if not _quiet.is_startup_noise(line)] == []
    assert [line for line in REAL if _quiet.is_startup_noise(line)] == []


def _python(
    code: str, env: dict | None = None, drop=("TF_CPP_MIN_LOG_LEVEL",)
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop} | (env or {})
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_filter_drops_noise_and_forwards_everything_else():
    lines = NOISE + REAL
    proc = _python(
        f"""
        import os, sys
        from mtl_keras_app.quiet import filtered_stderr, is_startup_noise
        with filtered_stderr(is_startup_noise):
            for line in {lines!r}:
                os.write(2, (line + "\\n").encode())  # as C++ code writes
            print("from python", file=sys.stderr)
        print("after", file=sys.stderr)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-len(REAL) - 2 :] == [*REAL, "from python", "after"]
    assert not any(line in proc.stderr for line in NOISE)


STARTUP_NOISE = ("cuInit", "cuda drivers", "absl::InitializeLog", "cpu_feature_guard", "oneDNN")


def test_the_cli_prints_no_cuda_errors_on_a_cpu_machine():
    if _quiet.nvidia_present():
        pytest.skip("this machine has an NVIDIA GPU: nothing is filtered")
    proc = _python("import sys; from mtl_keras_app import cli; sys.exit(cli.main(['benchmarks']))")
    assert proc.returncode == 0, proc.stderr
    assert "glyphs" in proc.stdout
    assert [s for s in STARTUP_NOISE if s in proc.stderr] == [], proc.stderr


def test_devices_start_quietly_and_later_warnings_stay_visible():
    if _quiet.nvidia_present():
        pytest.skip("this machine has an NVIDIA GPU: nothing is filtered")
    proc = _python(
        """
        import os
        from mtl_keras_app.quiet import quiet_tensorflow_startup
        quiet_tensorflow_startup()  # what the mtl-keras command does first
        import mtl_keras
        import tensorflow as tf
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"], tf.config.list_physical_devices("GPU"))
        tf.constant(1)  # the first device use: where TensorFlow calls cuInit
        it = iter(tf.data.Dataset.range(10).cache().take(2))
        next(it)
        del it  # TensorFlow warns (C++, level W) that the cache was not filled
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "[]"]
    assert [s for s in STARTUP_NOISE if s in proc.stderr] == [], proc.stderr
    assert "cache_dataset_ops" in proc.stderr and "did not fully read" in proc.stderr


def test_log_level_zero_keeps_tensorflows_own_output():
    if _quiet.nvidia_present():
        pytest.skip("this machine has an NVIDIA GPU: nothing is filtered")
    proc = _python(
        "from mtl_keras_app.quiet import quiet_tensorflow_startup; quiet_tensorflow_startup(); "
        "import mtl_keras, tensorflow as tf; tf.constant(1)",
        env={"TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "cuInit" in proc.stderr and "cuda drivers" in proc.stderr


def test_importing_the_library_leaves_the_environment_and_file_descriptors_alone():
    """``import mtl_keras`` changes the environment exactly as ``import keras`` does (TensorFlow
    sets ``TF_CPP_MIN_LOG_LEVEL`` itself) and never redirects a file descriptor."""
    probe = """
        import json, os, sys
        calls = []
        for name in ("dup2", "pipe"):
            real = getattr(os, name)
            setattr(os, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
        before = dict(os.environ)
        import {module}
        after = dict(os.environ)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        print(json.dumps({{"changed": changed, "fd_calls": calls, "app": "mtl_keras_app" in sys.modules}}))
        """
    results = {}
    for module in ("keras", "mtl_keras"):
        proc = _python(probe.format(module=module))
        assert proc.returncode == 0, proc.stderr
        results[module] = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    assert "dup2" not in results["mtl_keras"]["fd_calls"]  # (os.pipe: Keras's platform.processor())
    assert results["mtl_keras"] == results["keras"] | {"app": False}
