"""One GPU, one run: mtl_keras' meta-train step on JAX next to the official MTL step (PyTorch).

    python benchmarks/gpu_check.py --out runs/gpu-check              # on one GPU: at most ~5 minutes
    JAX_PLATFORMS=cpu python benchmarks/gpu_check.py --tiny --out runs/gpu-check-tiny   # CPU smoke run

Needs no TensorFlow: the driver imports neither Keras nor JAX, every mtl_keras worker runs Keras on
JAX (``KERAS_BACKEND=jax``), and ``--without-tensorflow`` makes ``import tensorflow`` fail in the
driver and in those workers (as on a machine without it; each worker reports whether any
TensorFlow module was loaded). The official step is `benchmarks.harness.torch_baseline` — the
faithful re-implementation of yaoyao-liu/meta-transfer-learning's PyTorch step (first order, one
task per step, float32, episode on the device) — on CUDA when PyTorch sees a GPU; without PyTorch
it is skipped with a line saying so.

**What it measures**, ResNet-12 64-128-256-512 at 84×84×3, 5-way, 15 queries, 20 inner steps in
training: the meta-train step of `MetaTransferModel` (``fit``'s compiled train function, fed the
numpy meta-batches ``fit`` gets) in tasks/s for 1 and 5 shots × meta-batch 2 and 8 × float32 and
``mixed_bfloat16`` × second and first order; evaluation episodes/s (adapt 100 inner steps and
classify, 8 episodes per call, the official ``MetaTrainer.eval`` step beside it); each side's
peak GPU memory (``device.memory_stats()['peak_bytes_in_use']`` on JAX,
``torch.cuda.max_memory_allocated`` on PyTorch; peak RSS on a CPU); how much of a train call is
the host's (the input checks before the compiled step and the copy to the device, timed apart);
the GPU utilisation, as the achieved FLOP/s (`benchmarks.harness.flops`: convolutions and
inner-loop products, so a lower bound) over the device's dense peak (`PEAK_TFLOPS`). Each row
runs one mtl_keras worker process
(`benchmarks.harness.suite.Worker` speaking `benchmarks.harness.worker_protocol`: its memory is its
own); the official workers (one per step kind and shot count) live through the run. After
``--warmup`` untimed steps (the first compiles: its JAX compile seconds are reported) each row
alternates one mtl_keras step and one official step for ``--repeats`` rounds; medians.

**Time**: rows run in priority order (the ones the targets need first) and none starts when the
slowest row so far would end past ``--budget-s`` (a running one is stopped at it); rows not run
are listed. ``--compile-cache DIR`` keeps JAX's compiled steps there, so that a rerun on the same
machine skips compilation.

**Output**: ``--out DIR`` gets ``gpu_check.md`` (the section to paste into
``benchmarks/RESULTS.md``: setting, table, targets) and ``gpu_check.json`` (every measurement);
the same Markdown is printed. The targets (issue 31 item 6) are printed as PASS / FAIL / NOT
MEASURED lines: mtl_keras' second-order step ≥ 3× the official first-order step's tasks/s (per
shot count, its best row); the paper's full meta-training (10,000 tasks, 84×84, 5-way 1-shot)
projected at ≤ 15 minutes (10,000 / the best second-order 1-shot tasks/s, plus that row's compile
time); ``mixed_bfloat16`` ≥ 1.5× float32 tasks/s (every measured pair).

**The device command** (one H100/H200 with JAX and PyTorch on CUDA, no TensorFlow, no Keras,
nothing installable; run from the repository root; writes under ``$OUT``). Keras and the two
packages it needs that such a machine lacks travel as wheels in ``.whl`` (ignored by git),
fetched once on a machine with pip::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
      -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0

then, with ``.whl`` carried (timeout 600 s)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 KERAS_BACKEND=jax; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import jax, keras, torch; print(jax.__version__, jax.devices(), keras.__version__, torch.__version__, torch.cuda.is_available())" 2>&1 | tail -3; timeout 420 python3 benchmarks/gpu_check.py --without-tensorflow --budget-s 270 --compile-cache /tmp/mtl-gpu-check-jax-cache --out $OUT 2>&1 | tee $OUT/gpu_check.log

A rerun on the same warm machine finds the compile cache in ``/tmp``. No GPU run has happened yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
if ROOT not in sys.path:  # run by path: `benchmarks.harness` (and mtl_keras) importable
    sys.path.insert(0, ROOT)

#: The GPU run's sizes (the paper's miniImageNet setting) and ``--tiny``'s (a CPU smoke run).
FULL = {
    "image_size": 84,
    "widths": (64, 128, 256, 512),
    "queries": 15,
    "inner_steps": 20,
    "eval_inner_steps": 100,
    "eval_meta_batch": 8,
    "warmup": 2,
    "repeats": 7,
    "settle": 0.0,
}
TINY = {
    **FULL,
    "image_size": 16,
    "widths": (8, 8, 8, 8),
    "queries": 3,
    "inner_steps": 2,
    "eval_inner_steps": 3,
    "warmup": 1,
    "repeats": 1,
    "settle": 0.2,
}

#: The training rows, ``(shots, meta_batch, precision, first_order)``, in the order they run: the
#: rows the targets need first (the whole 2 × 2 × 2 × 2 grid, when time allows).
TRAIN_ROWS = (
    (1, 8, "mixed_bfloat16", False),
    (1, 8, "float32", False),
    (1, 2, "float32", False),
    (1, 8, "float32", True),
    (5, 8, "mixed_bfloat16", False),
    (5, 8, "float32", False),
    (1, 2, "mixed_bfloat16", False),
    (5, 2, "float32", False),
    (1, 8, "mixed_bfloat16", True),
    (5, 8, "float32", True),
    (5, 2, "mixed_bfloat16", False),
    (1, 2, "float32", True),
    (5, 8, "mixed_bfloat16", True),
    (1, 2, "mixed_bfloat16", True),
    (5, 2, "float32", True),
    (5, 2, "mixed_bfloat16", True),
)
#: Rows whose worker also times the evaluation step (second order, meta-batch 8: the model is the same).
EVAL_WITH = {(shots, 8, precision, False) for shots in (1, 5) for precision in ("float32", "mixed_bfloat16")}

#: Dense peak TFLOP/s per data type, matched on the device name (first match wins): NVIDIA's
#: datasheets ("NVIDIA H100 Tensor Core GPU", "NVIDIA H200 Tensor Core GPU"), whose tensor-core
#: figures are with 2:4 sparsity — halved here. H100 SXM5 and H200 SXM: FP32 67, TF32 989 → 494.5,
#: BF16 1,979 → 989.5; H100 PCIe: 51, 756 → 378, 1,513 → 756.5; H100 NVL and H200 NVL: 60,
#: 835 → 417.5, 1,671 → 835.5. ``tf32`` is the float32 rows' peak: XLA (JAX's default precision)
#: and cuDNN (PyTorch's ``cudnn.allow_tf32``, on by default) run float32 convolutions on TF32 tensor
#: cores; the JSON also gives the float32 rows against the FP32 (non-tensor) peak.
PEAK_TFLOPS = (
    ("H200 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60.0}),
    ("H100 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60.0}),
    ("H100 PCIe", {"bfloat16": 756.5, "tf32": 378.0, "float32": 51.0}),
    ("H200", {"bfloat16": 989.5, "tf32": 494.5, "float32": 67.0}),
    ("H100", {"bfloat16": 989.5, "tf32": 494.5, "float32": 67.0}),
)

#: Issue 31 item 6.
RATIO_TARGET = 3.0
PROJECTION_TASKS = 10_000
PROJECTION_MINUTES = 15.0
BFLOAT16_TARGET = 1.5


class _NoTensorFlow:
    """A meta-path finder that finds no ``tensorflow``: ``import tensorflow`` raises as where it is
    not installed, and ``"tensorflow"`` never enters ``sys.modules`` (a ``None`` entry there does,
    and Keras's preprocessing layers then ask for TensorFlow where a JAX-only machine runs them)."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def block_tensorflow() -> None:
    """Make ``import tensorflow`` fail in this process, as where it is not installed."""
    if not any(isinstance(finder, _NoTensorFlow) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoTensorFlow())


def tensorflow_loaded() -> bool:
    return any(
        (name == "tensorflow" or name.startswith("tensorflow.")) and module is not None
        for name, module in list(sys.modules.items())
    )


# --------------------------------------------------------------------------- the mtl_keras worker
def jax_steps(spec: dict):
    """A JAX worker's steps: ``train`` (`MetaTransferModel`'s compiled train function, its state
    threaded from call to call as ``fit`` does) and, with ``spec["eval"]``, ``eval`` (adapt and
    classify, the model's weights as arguments of one ``jax.jit``); its info; and ``final()``, the
    device's peak memory and JAX's compile seconds."""
    started = time.perf_counter()
    if spec.get("block_tensorflow"):
        block_tensorflow()
    import jax
    import keras
    import numpy as np
    from keras import ops

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"the mtl_keras worker runs Keras on {keras.backend.backend()!r}, not JAX")
    if spec.get("compile_cache"):
        jax.config.update("jax_compilation_cache_dir", spec["compile_cache"])
    from benchmarks.backend_ratio import jax_compile_clock
    from benchmarks.harness.keras_worker import build_model, synthetic_arrays
    from mtl_keras.inputs import check_images

    compiling = jax_compile_clock()
    device = jax.local_devices()[0]
    model = build_model(spec)
    inputs, labels = synthetic_arrays(
        spec["meta_batch"],
        spec["ways"],
        spec["shots"],
        spec["queries"],
        spec["image_size"],
        spec.get("channels", 3),
        spec.get("seed", 0),
    )
    # The evaluation step reads copies: the train function donates the state's buffers.
    weights = [
        [jax.numpy.array(v.value, copy=True) for v in group]
        for group in (model.trainable_variables, model.non_trainable_variables)
    ]
    model.make_train_function()
    groups = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables)
    state = (*([v.value for v in group] for group in groups), [v.value for v in model.metrics_variables])

    def train():
        nonlocal state
        logs, state = model.train_function(state, iter([(inputs, labels)]))
        jax.block_until_ready(state)
        return float(logs["loss"])

    def host_inputs():
        # The host's share of each train step: the input checks the train function runs before
        # the compiled step (as fit does on JAX), and the meta-batch's copy to the device.
        for name in ("support_images", "query_images"):
            check_images(inputs[name], name, model.input_range)
        jax.block_until_ready(jax.device_put((inputs, labels), device))

    steps = {"train": train, "host_inputs": host_inputs}
    if spec.get("eval"):

        @jax.jit
        def accuracy(trainable, non_trainable, inputs, labels):
            logits, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return ops.mean(ops.cast(ops.argmax(logits, axis=-1) == labels, "float32"), axis=-1)

        steps["eval"] = lambda: np.asarray(accuracy(*weights, inputs, labels))
    info = {
        "jax_version": jax.__version__,
        "keras_version": keras.__version__,
        "platform": device.platform,
        "device_kind": device.device_kind,
        "jax_default_matmul_precision": getattr(jax.config, "jax_default_matmul_precision", None),
        "build_seconds": time.perf_counter() - started,
    }

    def final():
        stats = device.memory_stats() or {}
        return {
            "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
            "jax_compile_seconds": compiling(),
            "tensorflow_loaded": tensorflow_loaded(),
        }

    return steps, info, final


def worker_main(argv) -> None:
    """``python benchmarks/gpu_check.py --worker SPEC_JSON``."""
    from benchmarks.harness import worker_protocol

    worker_protocol.run_worker(jax_steps, argv)


# --------------------------------------------------------------------------- the driver
def plan(sizes: dict) -> list:
    """``[(train BenchConfig, eval BenchConfig or None)]`` in `TRAIN_ROWS` order."""
    from benchmarks.harness.suite import BenchConfig

    common = dict(
        image_size=sizes["image_size"], widths=sizes["widths"], queries=sizes["queries"], jit_compile=True
    )
    rows = []
    for shots, meta_batch, precision, first_order in TRAIN_ROWS:
        train = BenchConfig(
            mode="train",
            shots=shots,
            meta_batch=meta_batch,
            inner_steps=sizes["inner_steps"],
            precision=precision,
            first_order=first_order,
            **common,
        )
        evaluation = None
        if (shots, meta_batch, precision, first_order) in EVAL_WITH:
            evaluation = BenchConfig(
                mode="eval",
                shots=shots,
                meta_batch=sizes["eval_meta_batch"],
                inner_steps=sizes["eval_inner_steps"],
                precision=precision,
                **common,
            )
        rows.append((train, evaluation))
    return rows


def device_peaks(device_kind: str, given: dict | None) -> tuple[str | None, dict | None]:
    """``(where the peaks come from, {dtype: TFLOP/s})``: ``given`` (``--peak-tflops``) or
    `PEAK_TFLOPS`' entry for ``device_kind``; ``(None, None)`` when neither."""
    if given:
        return "--peak-tflops", given
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in (device_kind or "").lower():
            return f"datasheet {name}", peaks
    return None, None


def _median(values):
    return statistics.median(values) if values else None


def side_summary(config, seconds: list, per_call: int, impl: str) -> dict:
    """Throughput and FLOP/s of one side of a row (``impl``: ``"mtl_keras"`` or ``"torch"``); the
    data type whose peak its utilisation is read against (`apply_peaks`)."""
    step = _median(seconds)
    unit = "tasks_per_s" if config.mode == "train" else "episodes_per_s"
    flops = config.flops(impl)
    return {
        "step_seconds": seconds,
        "median_step_seconds": step,
        unit: per_call / step,
        "gflop_per_step": flops / 1e9,
        "tflop_per_s": flops / step / 1e12,
        "peak_dtype": "bfloat16" if impl == "mtl_keras" and config.precision == "mixed_bfloat16" else "tf32",
        "utilisation": None,
    }


def _mib(value):
    return None if value is None else value / 2**20


def run_check(args, log=print) -> dict:
    from benchmarks.harness.suite import Worker, WorkerError, _env, cpu_model, describe, torch_available

    sizes = dict(TINY if args.tiny else FULL)
    for key in ("warmup", "repeats", "settle"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    rows_plan = plan(sizes)[: args.rows] if args.rows else plan(sizes)
    started = time.perf_counter()
    deadline = started + args.budget_s
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_check.py " + shlex.join(args.argv),
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
        "host": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "budget_s": args.budget_s,
        "rows": [],
        "not_run": [],
    }
    env = {
        **_env(args.threads),
        "KERAS_BACKEND": "jax",
        # several processes share the GPU: JAX takes what it needs, not 75% of it up front
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false"),
    }
    use_torch = not args.no_torch and torch_available()
    if not use_torch:
        log(
            "PyTorch is not installed: the official step is skipped, mtl_keras rows only "
            "(pip install -e '.[bench]' adds it)."
            if not args.no_torch
            else "--no-torch: the official step is skipped."
        )
    report["official"] = "measured" if use_torch else "skipped: PyTorch not installed or --no-torch"
    official, official_rows = {}, {}
    torch_path = str(Path(ROOT) / "benchmarks" / "harness" / "torch_baseline.py")

    def official_worker(config):
        key = config.baseline_key()
        if key not in official:
            spec = {**config.spec(), "device": "auto", "warmup": sizes["warmup"], "threads": args.threads}
            official[key] = Worker([sys.executable, torch_path], spec, _env(args.threads))
            official_rows[key] = []
        return official[key], official_rows[key]

    durations = []
    try:
        for train, evaluation in rows_plan:
            now = time.perf_counter()
            label = describe(train)
            if durations and now + max(durations) > deadline:
                report["not_run"].append({"label": label, "why": "time budget"})
                log(
                    f"[{now - started:6.1f}s] {label}: not run (the slowest row so far would end past the budget)"
                )
                continue
            log(f"[{now - started:6.1f}s] {label}" + (" + evaluation" if evaluation else ""))
            # The official workers warm up before the mtl_keras worker starts compiling (alone on the GPU).
            bases = {}
            for config in (train, evaluation) if use_torch else ():
                if config is not None:
                    try:
                        bases[config.mode] = official_worker(config)
                        bases[config.mode][0].ready  # noqa: B018 (waits for its warm-up)
                    except WorkerError as error:
                        bases.pop(config.mode, None)
                        log(f"           official {config.mode} step failed: {str(error)[-1500:]}")
            spec = {
                **train.spec(),
                "eval_inner_steps": sizes["eval_inner_steps"],
                "eval": evaluation is not None,
                "warmup": sizes["warmup"],
                "block_tensorflow": args.without_tensorflow,
                "compile_cache": args.compile_cache,
            }
            worker = Worker([sys.executable, os.path.abspath(__file__), "--worker"], spec, env)
            stopped = threading.Event()

            def stop(worker=worker, stopped=stopped):
                stopped.set()
                worker.kill()

            timer = threading.Timer(max(1.0, deadline - time.perf_counter()), stop)
            timer.start()
            samples = {"train": [], "eval": [], "host_inputs": [], "official_train": [], "official_eval": []}
            try:
                ready = worker.ready

                def timed(worker, what="step"):
                    time.sleep(sizes["settle"])  # the last worker's spinning threads go to sleep
                    return worker.time(what)

                for _ in range(sizes["repeats"]):
                    for mode in ("train", "eval") if evaluation else ("train",):
                        samples[mode] += timed(worker, mode)
                        if mode in bases:
                            samples["official_" + mode] += timed(bases[mode][0])
                    samples["host_inputs"] += timed(worker, "host_inputs")
                worker.close()
            except WorkerError as error:
                why = "stopped at the time budget" if stopped.is_set() else f"failed: {str(error)[-1500:]}"
                report["not_run"].append({"label": label, "why": why})
                log(f"           not measured: {why}")
                continue
            finally:
                timer.cancel()
                worker.kill()
                durations.append(time.perf_counter() - now)
            final = worker.final
            for config in (train, evaluation):
                if config is None:
                    continue
                mode = config.mode
                row = {
                    "label": describe(config),
                    "config": dataclasses.asdict(config),
                    "worker": {k: v for k, v in ready.items() if k not in ("ready",)},
                    "mtl_keras": {
                        **side_summary(config, samples[mode], config.meta_batch, "mtl_keras"),
                        "first_call_seconds": ready["warmup_seconds"][mode][0],
                        "host_input_seconds": _median(samples["host_inputs"]) if mode == "train" else None,
                        "compile_seconds": final.get("jax_compile_seconds"),
                        "peak_gpu_mib": _mib(final.get("peak_bytes_in_use")),
                        "max_rss_mib": final.get("max_rss_mb"),
                    },
                    "tensorflow_loaded": final.get("tensorflow_loaded"),
                    "official": None,
                }
                if mode in bases:
                    base, base_rows = bases[mode]
                    row["official"] = {
                        **side_summary(config, samples["official_" + mode], 1, "torch"),
                        "worker": {k: v for k, v in base.ready.items() if k != "ready"},
                    }
                    base_rows.append(row)
                report["rows"].append(row)
                log("           " + one_line(row))
    finally:
        for key, worker in official.items():
            try:
                if worker.proc.poll() is None:
                    worker.close()
                    for row in official_rows[key]:
                        row["official"]["peak_gpu_mib"] = _mib(worker.final.get("cuda_peak_bytes"))
                        row["official"]["max_rss_mib"] = worker.final.get("max_rss_mb")
            except (WorkerError, OSError, ValueError) as error:
                log(f"official worker {key}: {error}")
            finally:
                worker.kill()
    report["wall_seconds"] = time.perf_counter() - started
    device_kind = next((r["worker"]["device_kind"] for r in report["rows"]), None)
    report["device_kind"] = device_kind
    source, peaks = device_peaks(device_kind, args.peak_tflops)
    report["peaks"] = {"source": source, "tflop_per_s": peaks}
    apply_peaks(report, peaks)
    report["targets"] = check_targets(report)
    return report


def apply_peaks(report: dict, peaks: dict | None) -> None:
    """Each side's utilisation against ``peaks`` (``{dtype: TFLOP/s}``; None: unknown device)."""
    for row in report["rows"]:
        for side in (row["mtl_keras"], row["official"]):
            if side is None:
                continue
            dtype = side["peak_dtype"]
            side["utilisation"] = side["tflop_per_s"] / peaks[dtype] if peaks and dtype in peaks else None
            if peaks and dtype == "tf32" and "float32" in peaks:
                side["utilisation_of_fp32_non_tensor_peak"] = side["tflop_per_s"] / peaks["float32"]


def short(config: dict, precision: bool = True) -> str:
    """``"1-shot B=8 mixed_bfloat16 second order"`` of a row's config dict."""
    order = "first order" if config["first_order"] else "second order"
    return (
        f"{config['shots']}-shot B={config['meta_batch']}"
        + (f" {config['precision']}" if precision else "")
        + (f" {order}" if config["mode"] == "train" else " eval")
    )


def _unit(row) -> str:
    return "tasks_per_s" if row["config"]["mode"] == "train" else "episodes_per_s"


def one_line(row) -> str:
    k, o = row["mtl_keras"], row["official"]
    text = f"mtl_keras {k[_unit(row)]:.3f}/s ({k['tflop_per_s']:.3g} TFLOP/s, compile {k['compile_seconds']:.1f} s)"
    if o:
        text += f"  official {o[_unit(row)]:.3f}/s  ratio {k[_unit(row)] / o[_unit(row)]:.2f}"
    return text


def _ratio(row):
    return row["mtl_keras"][_unit(row)] / row["official"][_unit(row)] if row["official"] else None


def check_targets(report: dict) -> list[dict]:
    """Issue 31 item 6's targets: ``{"target", "status" (PASS/FAIL/NOT MEASURED), "detail", "values"}``."""
    train = [r for r in report["rows"] if r["config"]["mode"] == "train"]
    second = [r for r in train if not r["config"]["first_order"]]
    targets = []

    def add(name, values, passed, detail):
        status = "NOT MEASURED" if not values else ("PASS" if passed else "FAIL")
        targets.append({"target": name, "status": status, "detail": detail, "values": values})

    # 1. second order against the official first order, per shot count: the best row
    best = {}
    for row in second:
        if row["official"]:
            shots = row["config"]["shots"]
            if shots not in best or _ratio(row) > _ratio(best[shots]):
                best[shots] = row
    values = {short(r["config"]): _ratio(r) for _, r in sorted(best.items())}
    add(
        f"mtl_keras second order >= {RATIO_TARGET:g}x the official first-order step's tasks/s",
        values,
        all(v >= RATIO_TARGET for v in values.values()),
        "; ".join(f"{k}: {v:.2f}x" for k, v in values.items()),
    )
    # 2. the paper's full meta-training, projected from the fastest second-order 1-shot row
    one_shot = [r for r in second if r["config"]["shots"] == 1]
    values, detail = {}, ""
    if one_shot:
        fastest = max(one_shot, key=lambda r: r["mtl_keras"]["tasks_per_s"])
        k = fastest["mtl_keras"]
        minutes = (PROJECTION_TASKS / k["tasks_per_s"] + (k["compile_seconds"] or 0.0)) / 60
        values = {short(fastest["config"]): minutes}
        detail = (
            f"{minutes:.1f} min = {PROJECTION_TASKS:,} tasks / {k['tasks_per_s']:.2f} tasks/s "
            f"+ {k['compile_seconds'] or 0:.0f} s compile ({short(fastest['config'])}; data loading and validation not included)"
        )
    add(
        f"full meta-training ({PROJECTION_TASKS:,} tasks, 5-way 1-shot, second order) projected <= {PROJECTION_MINUTES:g} min",
        values,
        all(v <= PROJECTION_MINUTES for v in values.values()),
        detail,
    )
    # 3. bfloat16 against float32, every measured pair
    values = {}
    for row in train:
        c = row["config"]
        if c["precision"] != "mixed_bfloat16":
            continue
        for other in train:
            o = other["config"]
            if o["precision"] == "float32" and {**o, "precision": c["precision"]} == c:
                values[short(o, precision=False)] = (
                    row["mtl_keras"]["tasks_per_s"] / other["mtl_keras"]["tasks_per_s"]
                )
    add(
        f"mixed_bfloat16 >= {BFLOAT16_TARGET:g}x float32 tasks/s",
        values,
        all(v >= BFLOAT16_TARGET for v in values.values()),
        "; ".join(f"{k}: {v:.2f}x" for k, v in values.items()),
    )
    return targets


def _fmt(value, digits=2, suffix=""):
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _memory(side) -> str:
    if side is None:
        return "–"
    if side.get("peak_gpu_mib") is not None:
        return f"{side['peak_gpu_mib']:.0f}"
    return f"RSS {side['max_rss_mib']:.0f}" if side.get("max_rss_mib") is not None else "–"


def _utilisation(side, peaks) -> str:
    if side is None or side.get("utilisation") is None:
        return "–"
    dtype = side["peak_dtype"]
    return f"{100 * side['utilisation']:.3g}% of {peaks[dtype]:g} ({dtype.upper()})"


def format_markdown(report: dict) -> str:
    sizes, peaks = report["sizes"], report["peaks"]["tflop_per_s"]
    rows = report["rows"]
    first = rows[0] if rows else None
    official = next((r["official"]["worker"] for r in rows if r["official"]), None)
    widths = "-".join(map(str, sizes["widths"]))
    device = report.get("device_kind") or "not measured"
    lines = [
        f"### GPU check: {device}",
        "",
        f"- date: {report['date']}; command: `{report['command']}`; wall time {report['wall_seconds'] / 60:.1f} min "
        f"(budget {report['budget_s']:.0f} s)",
    ]
    if first:
        w = first["worker"]
        lines.append(
            f"- mtl_keras: Keras {w['keras_version']} on JAX {w['jax_version']}, device `{w['device_kind']}` "
            f"({w['platform']}), default matmul precision {w['jax_default_matmul_precision']}; "
            f"TensorFlow loaded in a worker: {'yes' if any(r['tensorflow_loaded'] for r in rows) else 'no'}"
        )
    if official:
        lines.append(
            f"- official step: PyTorch {official['torch_version']} on {official.get('device_name', official['device'])}"
            + (
                f" (CUDA {official['cuda_version']}, cudnn.allow_tf32={official['cudnn_allow_tf32']})"
                if "cuda_version" in official
                else ""
            )
        )
    else:
        lines.append(f"- official step: {report['official']}")
    lines += [
        f"- host: {report['host']['cpu_model']}, {report['host']['cpu_count']} logical cores",
        f"- ResNet-12 {widths} at {sizes['image_size']}×{sizes['image_size']}×3, 5-way, {sizes['queries']} queries, "
        f"batch norm frozen; train: {sizes['inner_steps']} inner steps, mtl_keras `fit`'s jitted train function on "
        f"numpy meta-batches of B tasks, the official step one task (first order) on a device-resident episode; "
        f"eval: {sizes['eval_inner_steps']} inner steps, {sizes['eval_meta_batch']} episodes per mtl_keras call, "
        "one per official call",
        f"- timing: {sizes['warmup']} warm-up step(s), then {sizes['repeats']} round(s) alternating one mtl_keras "
        f"step and one official step ({sizes['settle']:g} s idle before each); medians. Host inputs: the part "
        "of a train call spent on the host, timed apart in the same rounds (the input checks the train function runs before the compiled step, as in "
        "`fit`, and the meta-batch's copy to the device). Compile s and peak memory: the mtl_keras worker's "
        "(its train and, on the rows that have one, eval step together; compile s on JAX's compile clock)",
        "- utilisation: achieved FLOP/s (`benchmarks/harness/flops.py`: convolutions and inner-loop products) over "
        + (
            f"the dense peak ({report['peaks']['source']}: "
            + ", ".join(f"{k} {v:g}" for k, v in peaks.items())
            + " TFLOP/s; float32 rows against TF32, which XLA and cuDNN use for float32 convolutions by default)"
            if peaks
            else "the device's peak: unknown device, not computed (--peak-tflops sets it)"
        ),
        "",
        "| step | shots | B | precision | order | mtl_keras /s | official /s | ratio "
        "| mtl_keras ms/call (host inputs) | compile s | GFLOP/step | TFLOP/s | utilisation "
        "| peak memory MiB mtl_keras / official |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c, k, o = row["config"], row["mtl_keras"], row["official"]
        unit = _unit(row)
        order = "first" if c["first_order"] else "second"
        lines.append(
            f"| {c['mode']} | {c['shots']} | {c['meta_batch']} | {c['precision']} | {order if c['mode'] == 'train' else '–'} "
            f"| {k[unit]:.3f} | {_fmt(o[unit] if o else None, 3)} | {_fmt(_ratio(row), 2, '×')} "
            f"| {1000 * k['median_step_seconds']:.1f}"
            + (f" ({1000 * k['host_input_seconds']:.1f})" if k.get("host_input_seconds") is not None else "")
            + f" | {_fmt(k['compile_seconds'], 1)} | {k['gflop_per_step']:.1f} | {k['tflop_per_s']:.3g} "
            f"| {_utilisation(k, peaks)} | {_memory(k)} / {_memory(o)} |"
        )
    lines += ["", "Units: train rows tasks/s, eval rows episodes/s."]
    if any(row["official"] for row in rows):
        lines += [
            "",
            "The official step (each from the first row that timed it):",
            "",
            "| step | shots | official ms/step | TFLOP/s | utilisation |",
            "|---|---|---|---|---|",
        ]
    seen = set()
    for row in rows:
        c, o = row["config"], row["official"]
        if o and (c["mode"], c["shots"]) not in seen:
            seen.add((c["mode"], c["shots"]))
            lines.append(
                f"| {c['mode']} | {c['shots']} | {1000 * o['median_step_seconds']:.1f} "
                f"| {o['tflop_per_s']:.3g} | {_utilisation(o, peaks)} |"
            )
    lines += ["", "Targets:", ""]
    lines += [
        f"- **{t['status']}** {t['target']}" + (f": {t['detail']}" if t["detail"] else "")
        for t in report["targets"]
    ]
    if report["not_run"]:
        lines += [
            "",
            "Not measured: " + "; ".join(f"{n['label']} ({n['why'][:200]})" for n in report["not_run"]),
        ]
    return "\n".join(lines)


def parse_peaks(text: str) -> dict:
    """``"bfloat16=989.5,tf32=494.5,float32=67"`` → ``{dtype: TFLOP/s}``."""
    peaks = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in ("bfloat16", "tf32", "float32") or not value:
            raise argparse.ArgumentTypeError(
                f"--peak-tflops: expected dtype=TFLOP/s (bfloat16, tf32, float32), got {part!r}"
            )
        peaks[name.strip()] = float(value)
    return peaks


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke run: 16×16 images, widths 8-8-8-8, 1 repeat"
    )
    parser.add_argument(
        "--without-tensorflow", action="store_true", help="make `import tensorflow` fail (driver and workers)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=270.0, help="start no row that would end past this (default 270)"
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="only the first N training rows of the priority order"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per worker (default 2; --tiny 1)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds per row (default 7; --tiny 1)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="idle seconds before each timed call (default 0; --tiny 0.2: on a CPU the last worker's "
        "spinning threads would slow the next)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="OMP / PyTorch threads of the workers"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the official PyTorch step")
    parser.add_argument("--compile-cache", default=None, help="JAX's persistent compilation cache folder")
    parser.add_argument(
        "--peak-tflops",
        type=parse_peaks,
        default=None,
        help="the device's peaks, e.g. bfloat16=989.5,tf32=494.5,float32=67",
    )
    args = parser.parse_args(argv)
    args.argv = list(argv)
    return args


def main(argv=None, log=print) -> dict:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["--worker"]:
        worker_main(raw[1:])
        return {}
    args = parse_args(raw)
    if args.without_tensorflow:
        block_tensorflow()
    report = run_check(args, log)
    markdown = format_markdown(report)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(markdown + "\n")
    log(markdown)
    for target in report["targets"]:
        log(
            f"{target['status']}: {target['target']}" + (f" — {target['detail']}" if target["detail"] else "")
        )
    log(f"Wrote {os.path.join(args.out, 'gpu_check.md')} and gpu_check.json")
    return report


if __name__ == "__main__":
    main()
