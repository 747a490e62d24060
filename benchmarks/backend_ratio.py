"""Meta-training and evaluation speed of the JAX Keras backend against the TensorFlow one (issue 17 item 6).

    python benchmarks/backend_ratio.py                  # 3 rounds, ResNet-12 64-128-256-512 at 32×32 (≈ 7 min on 2 cores)
    python benchmarks/backend_ratio.py --rounds 7 --out benchmarks/backend_ratio.json   # RESULTS.md's run
    python benchmarks/backend_ratio.py --render benchmarks/backend_ratio.json           # its table again
    python benchmarks/backend_ratio.py --quick          # smoke run: tiny network, 1 round (≈ 40 s)
    python benchmarks/backend_ratio.py --merge a.json b.json --out ab.json   # rounds of several runs, one table

``--merge`` joins the rounds of several ``--out`` files of one configuration (e.g. one-round runs
of two checkouts interleaved on a shared machine: each checkout's runs merged on their own).
Every round starts one worker process per backend (``KERAS_BACKEND=tensorflow`` and
``KERAS_BACKEND=jax``, the order alternating from round to round, one worker at a time), each
speaking the harness's line protocol (`benchmarks.harness.worker_protocol`, driven by
`benchmarks.harness.suite.Worker`). A worker builds the same model on its backend:

* ResNet-12 at 32×32×3 (default widths 64-128-256-512), `MetaTransferModel` 5-way 1-shot,
  15 queries, 20 inner steps, exact second order, batch norm frozen, float32; identical initial
  weights on both backends (conv kernels drawn with numpy, every other weight at its constant
  initial value), so that the backends' forward passes can be compared (the query loss of the
  stream's first meta-batch, computed once before timing);
* compiled as each backend compiles a step: `tf.function` on TensorFlow (``jit_compile=False``,
  mtl_keras' default: XLA:CPU was slower, see RESULTS.md), ``jax.jit`` on JAX
  (``jit_compile=True``; with mtl_keras' default ``False`` the JAX step would run op by op);
* episodes: one in-memory split of random pixels, read by `mtl_keras.data.episode_source`
  (numpy, the same on both backends) with the same seed. (Not quite the same episodes: on
  TensorFlow, Keras's PyDataset adapter reads items 0 and 1 for the output signature before
  training and the source then begins its next pass, so TF's fit starts at meta-batch 2; the
  work per step does not depend on which tasks they are.)

It then times, after warm-up:

* **train**: ``model.fit(source, epochs=1, steps_per_epoch=--train-steps)`` with meta-batch 2,
  waiting for the last update (the trained weights are read back); tasks/s = steps · 2 / wall
  seconds. The warm-up is a first ``fit`` of ``--warmup-steps`` steps: its wall time less that
  many timed steps is reported as *compile* seconds (tracing and graph optimisation on
  TensorFlow, tracing and XLA compilation on JAX);
* **eval**: `mtl_keras.evaluate_episodes` of ``--eval-episodes`` 5-way 1-shot episodes (15
  queries, 100 inner steps, cached embeddings of a 20 × 40-image split of random pixels, 10
  episodes per call: `DEFAULTS`); episodes/s. A first, 10-episode evaluation warms up and
  compiles: `evaluate_episodes` keeps its compiled functions per model (on JAX the weights are
  their arguments), so the timed call compiles nothing (JAX's compile clock says so; before that
  change each call compiled anew, and the timed call included it).

Prints a Markdown table — per backend the median over rounds (min–max) of train tasks/s and
eval episodes/s, the compile seconds, peak RSS, fit's first loss — and the JAX/TF ratios
(of the medians, and the median of the per-round ratios: each round's two workers ran back to
back), with the CPU model, the instruction set oneDNN runs on (`mtl_keras.hardware.isa_label`)
and the command. ``--out`` also writes every measurement as JSON. The numbers go to
``benchmarks/RESULTS.md`` by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
if ROOT not in sys.path:  # run by path: `benchmarks.harness` (and mtl_keras) importable
    sys.path.insert(0, ROOT)

BACKENDS = ("tensorflow", "jax")
LABELS = {"tensorflow": "TensorFlow", "jax": "JAX"}

#: The measured configuration (issue 17 item 6) and the smoke run's.
DEFAULTS = {
    "image_size": 32,
    "widths": [64, 128, 256, 512],
    "ways": 5,
    "shots": 1,
    "queries": 15,
    "inner_steps": 20,
    "eval_inner_steps": 100,
    "meta_batch": 2,
    "train_steps": 5,
    "warmup_steps": 1,
    "eval_episodes": 100,
    "eval_warmup_episodes": 10,
    "eval_meta_batch": 10,
    "classes": 20,
    "per_class": 40,
    "seed": 0,
}
QUICK = {
    **DEFAULTS,
    "image_size": 16,
    "widths": [4, 4, 4, 4],
    "queries": 3,
    "inner_steps": 2,
    "eval_inner_steps": 3,
    "train_steps": 2,
    "eval_episodes": 10,
    "eval_warmup_episodes": 2,
    "eval_meta_batch": 2,
    "classes": 5,
    "per_class": 6,
}


# --------------------------------------------------------------------------- the worker
def synthetic_split(classes: int, per_class: int, image_size: int, seed: int, name: str = "synthetic"):
    """A `ClassSplit` of random uint8 pixels (the work does not depend on them)."""
    import numpy as np

    from mtl_keras.data.split import ClassSplit

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (classes * per_class, image_size, image_size, 3), dtype=np.uint8)
    return ClassSplit(
        name=name,
        class_names=[f"class-{c}" for c in range(classes)],
        labels=np.repeat(np.arange(classes), per_class),
        images=images,
    )


#: The convolution kernels' standard deviation, in units of He's ``√(2 / fan_in)``: with batch norm
#: at its initial statistics (frozen: the identity) He's scale makes the embeddings' entries ≈ 2.5
#: and the inner loop (learning rate 0.01) diverge, which amplifies float32 rounding differences
#: between the backends (query loss 22.7 vs 23.6 after 20 inner steps); at 0.9 they are O(1) and
#: the two backends' losses agree to float32 precision (1.8721466 on both, measured).
KERNEL_GAIN = 0.9


def same_initial_weights(model, seed: int, gain: float = KERNEL_GAIN) -> None:
    """Weights independent of the backend's random generator: every weight that Keras
    initialised to a constant (scales, shifts, batch norm, the zero head) keeps it; the others
    (the convolution kernels) are drawn from a numpy normal of ``gain`` × He's standard deviation."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = np.asarray(variable)
        if value.size and np.all(value == value.flat[0]):
            continue
        fan_in = math.prod(value.shape[:-1]) or 1
        variable.assign(rng.normal(0.0, gain * math.sqrt(2.0 / fan_in), value.shape).astype(value.dtype))


def machine_facts() -> dict:
    """CPU model, cores and the instruction set oneDNN runs on (read in a worker: it imports mtl_keras)."""
    from benchmarks.harness.suite import cpu_model
    from mtl_keras.hardware import cpu_flags, isa_label

    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "isa": isa_label(cpu_flags())}


def build_steps(spec: dict) -> tuple[dict, dict]:
    """The worker's steps (``train``, ``eval``) on the backend ``KERAS_BACKEND`` names; warms
    both up and puts the warm-up timings, versions and machine facts into the returned info."""
    import keras
    import numpy as np

    import mtl_keras
    from mtl_keras.data.numpy_episodes import episode_source
    from mtl_keras.evaluation import evaluate_episodes

    backend = keras.backend.backend()
    if backend != spec["backend"]:
        raise RuntimeError(f"worker for {spec['backend']!r} runs Keras on {backend!r}")
    info = {"backend": backend, "keras_version": keras.__version__, **machine_facts()}
    if backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow_version"] = tf.__version__
        info["intra_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["inter_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    else:
        import jax

        info["jax_version"] = jax.__version__
        info["jax_devices"] = [str(d) for d in jax.devices()]
        info["tensorflow_imported"] = "tensorflow" in sys.modules

    keras.utils.set_random_seed(spec["seed"])
    keras.mixed_precision.set_dtype_policy("float32")
    size = spec["image_size"]
    backbone = mtl_keras.resnet12((size, size, 3), widths=tuple(spec["widths"]))
    model = mtl_keras.MetaTransferModel(
        backbone,
        ways=spec["ways"],
        inner_steps=spec["inner_steps"],
        eval_inner_steps=spec["eval_inner_steps"],
        first_order=False,
        batch_norm="frozen",
    )
    same_initial_weights(model, spec["seed"])
    model.compile(jit_compile=backend == "jax")
    train = synthetic_split(spec["classes"], spec["per_class"], size, spec["seed"], "train")
    test = synthetic_split(spec["classes"], spec["per_class"], size, spec["seed"] + 1, "test")

    def new_source():  # the endless episode stream of `fit`, drawn by numpy on either backend
        return episode_source(
            train,
            spec["ways"],
            spec["shots"],
            spec["queries"],
            meta_batch_size=spec["meta_batch"],
            seed=spec["seed"],
        )

    source = new_source()
    # Cross-check of the two backends' forward pass: meta-batch 0 of the same stream (a fresh
    # source), adapted as in training, from the same weights. (Not fit's first loss: on TensorFlow
    # Keras's PyDataset adapter reads items 0 and 1 for the output signature first, and the source
    # then begins its next pass, so TF's fit starts at meta-batch 2 — the same work, other tasks.)
    first_inputs, first_labels = next(iter(new_source()))
    logits = model(first_inputs, training=True)
    info["meta_batch_0_loss"] = float(
        np.mean(np.asarray(keras.ops.sparse_categorical_crossentropy(first_labels, logits, from_logits=True)))
    )

    def fit(steps: int) -> tuple[float, list[float]]:
        start = time.perf_counter()
        history = model.fit(source, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        for variable in model.trainable_variables:  # wait for the last update (JAX dispatches asynchronously)
            np.asarray(variable)
        return time.perf_counter() - start, [float(v) for v in history.history["loss"]]

    def evaluate(episodes: int) -> tuple[float, float]:
        start = time.perf_counter()
        result = evaluate_episodes(
            model,
            test,
            spec["ways"],
            spec["shots"],
            spec["queries"],
            episodes=episodes,
            seed=spec["seed"] + 2,
            meta_batch_size=spec["eval_meta_batch"],
            verbose=False,
        )
        return time.perf_counter() - start, float(result.mean)

    compiling = jax_compile_clock() if backend == "jax" else None
    last = {}

    def measured(what, call, *args):
        """``call(*args)``'s result, and (JAX) the seconds JAX spent tracing, lowering and compiling in it."""
        before = compiling() if compiling else None
        value = call(*args)
        if compiling:
            last[what + "_jax_compile_seconds"] = compiling() - before
        return value

    warm_fit, warm_loss = measured("warmup_fit", fit, spec["warmup_steps"])
    warm_eval, _ = measured("warmup_eval", evaluate, spec["eval_warmup_episodes"])
    info.update(warmup_fit_seconds=warm_fit, first_loss=warm_loss[0], warmup_eval_seconds=warm_eval)

    def record(what, value):  # read by the driver after the worker quits
        last[what] = value
        with open(spec["result_path"], "w") as f:
            json.dump(last, f)

    return {
        "train": lambda: record("train_losses", measured("train", fit, spec["train_steps"])[1]),
        "eval": lambda: record("eval_accuracy", measured("eval", evaluate, spec["eval_episodes"])[1]),
    }, info


#: JAX's duration events of a compilation (`jax._src.dispatch`): tracing to a jaxpr, lowering to
#: MLIR, and XLA's compilation.
JAX_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def jax_compile_clock():
    """A function returning the seconds JAX has spent compiling since this call (all threads)."""
    import jax

    total = [0.0]

    def listener(event, duration, **kwargs):
        if event in JAX_COMPILE_EVENTS:
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    return lambda: total[0]


def worker_main(argv) -> None:
    """``python -m benchmarks.backend_ratio --worker SPEC_JSON``: `worker_protocol.serve` the
    steps (warmed up by `build_steps` itself: its warm-up calls are shorter than the timed ones)."""
    from benchmarks.harness import worker_protocol

    spec = json.loads(argv[0])
    steps, info = build_steps(spec)
    worker_protocol.serve(steps, info, warmup=0)


# --------------------------------------------------------------------------- the driver
def run_worker(backend: str, spec: dict, threads: int) -> dict:
    """One worker of ``backend``: warm-up, one timed train call, one timed eval call; its measurements."""
    from benchmarks.harness.suite import Worker, _env

    env = {**_env(threads), "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as folder:
        result_path = os.path.join(folder, "last.json")
        worker = Worker(
            [sys.executable, "-m", "benchmarks.backend_ratio", "--worker"],
            {**spec, "backend": backend, "result_path": result_path},
            env,
        )
        try:
            ready = worker.ready
            (train_s,) = worker.time("train")
            (eval_s,) = worker.time("eval")
            rss = worker.close()
        finally:
            worker.kill()
        with open(result_path) as f:
            last = json.load(f)
    steps, tasks = spec["train_steps"], spec["train_steps"] * spec["meta_batch"]
    step_s = train_s / steps
    return {
        **{k: v for k, v in ready.items() if k not in ("ready", "warmup_seconds")},
        "train_seconds": train_s,
        "train_cpu_seconds": worker.cpu_seconds["train"][0],
        "tasks_per_s": tasks / train_s,
        "step_seconds": step_s,
        "compile_seconds": ready["warmup_fit_seconds"] - spec["warmup_steps"] * step_s,
        "eval_seconds": eval_s,
        "eval_cpu_seconds": worker.cpu_seconds["eval"][0],
        "episodes_per_s": spec["eval_episodes"] / eval_s,
        "train_losses": last["train_losses"],
        "eval_accuracy": last["eval_accuracy"],
        **{k: v for k, v in last.items() if k.endswith("_jax_compile_seconds")},
        "max_rss_mb": rss,
    }


def _span(values, digits=3) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def summarise(rounds: list[dict]) -> dict:
    """Per backend: medians over rounds; the JAX/TF ratios of the medians and per round."""
    per = {b: [r[b] for r in rounds] for b in BACKENDS}
    summary = {}
    for b, rows in per.items():
        summary[b] = {
            key: statistics.median(row[key] for row in rows)
            for key in (
                "tasks_per_s",
                "episodes_per_s",
                "compile_seconds",
                "warmup_eval_seconds",
                "max_rss_mb",
            )
        }
    summary["ratio"] = {
        key: summary["jax"][key] / summary["tensorflow"][key] for key in ("tasks_per_s", "episodes_per_s")
    }
    summary["ratio_per_round"] = {
        key: [r["jax"][key] / r["tensorflow"][key] for r in rounds]
        for key in ("tasks_per_s", "episodes_per_s")
    }
    return summary


def format_table(report: dict) -> str:
    rounds, summary, spec = report["rounds"], report["summary"], report["spec"]
    lines = [
        "| backend | train tasks/s, median (min–max) | eval episodes/s, median (min–max) "
        "| compile s (warm-up fit − its steps) | first eval call s | peak RSS MiB | fit's first-step loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in BACKENDS:
        rows = [r[b] for r in rounds]
        lines.append(
            f"| {LABELS[b]} | {_span([r['tasks_per_s'] for r in rows])} "
            f"| {_span([r['episodes_per_s'] for r in rows])} "
            f"| {_span([r['compile_seconds'] for r in rows], 1)} "
            f"| {_span([r['warmup_eval_seconds'] for r in rows], 1)} "
            f"| {summary[b]['max_rss_mb']:.0f} | {rows[0]['first_loss']:.6f} |"
        )
    per_round = summary["ratio_per_round"]

    def ratios(key):
        values = per_round[key]
        return (
            f"**{summary['ratio'][key]:.2f}×** (median of the per-round ratios {statistics.median(values):.2f}: "
            f"{' '.join(f'{v:.2f}' for v in values)})"
        )

    lines.append(
        f"| **JAX / TF** | {ratios('tasks_per_s')} | {ratios('episodes_per_s')} "
        f"| {summary['jax']['compile_seconds'] / summary['tensorflow']['compile_seconds']:.2f}× | | | |"
    )
    lines += [
        "",
        "Process CPU seconds (every thread of the worker) per task and per episode: less sensitive than "
        "wall time to other jobs taking a core away. The last row is JAX's speed over TF's in these terms "
        "(TF's CPU seconds ÷ JAX's, per round; < 1: JAX slower).",
        "",
        "| backend | train CPU s/task, median (min–max) | eval CPU s/episode, median (min–max) |",
        "|---|---|---|",
    ]
    cpu = {
        b: {
            "train": [r[b]["train_cpu_seconds"] / (spec["train_steps"] * spec["meta_batch"]) for r in rounds],
            "eval": [r[b]["eval_cpu_seconds"] / spec["eval_episodes"] for r in rounds],
        }
        for b in BACKENDS
    }
    for b in BACKENDS:
        lines.append(f"| {LABELS[b]} | {_span(cpu[b]['train'])} | {_span(cpu[b]['eval'])} |")
    cpu_ratios = {
        key: [t / j for t, j in zip(cpu["tensorflow"][key], cpu["jax"][key])] for key in ("train", "eval")
    }
    lines.append(
        "| **JAX / TF**, CPU time (per round) | "
        + " | ".join(
            f"**{statistics.median(v):.2f}×** ({' '.join(f'{x:.2f}' for x in v)})"
            for v in cpu_ratios.values()
        )
        + " |"
    )
    m = report["machine"]
    widths = "-".join(map(str, spec["widths"]))
    header = [
        f"- date: {report['date']}; command: `{report['command']}`",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical cores; oneDNN runs on: **{m['isa']}**; "
        f"load average at start {report['load_average_start'][0]:.2f}, at end {report['load_average_end'][0]:.2f}",
        f"- Keras {m['keras_version']}, TensorFlow {m['tensorflow_version']}, JAX {m['jax_version']}"
        f" (TensorFlow imported by the JAX worker: {m['tensorflow_imported']})",
        f"- ResNet-12 {widths} at {spec['image_size']}×{spec['image_size']}×3, {spec['ways']}-way "
        f"{spec['shots']}-shot, {spec['queries']} queries, float32, batch norm frozen, second order; "
        f"train: meta-batch {spec['meta_batch']}, {spec['inner_steps']} inner steps, "
        f"{spec['train_steps']} timed steps per round after {spec['warmup_steps']} warm-up; eval: "
        f"{spec['eval_episodes']} episodes, {spec['eval_inner_steps']} inner steps, "
        f"{spec['classes']}×{spec['per_class']}-image split, {spec['eval_meta_batch']} per call",
        f"- {len(rounds)} round(s), one worker process per backend per round, order alternating; "
        f"wall time {report['wall_seconds'] / 60:.1f} min",
    ]
    jax_rows = [r["jax"] for r in rounds]
    footer = [
        "- JAX's own compilation clock (`jax.monitoring`: tracing, lowering, XLA) inside the calls, "
        f"median over rounds: warm-up fit {_median_of(jax_rows, 'warmup_fit_jax_compile_seconds')} s, "
        f"timed fit {_median_of(jax_rows, 'train_jax_compile_seconds')} s, "
        f"timed evaluation {_median_of(jax_rows, 'eval_jax_compile_seconds')} s "
        "(the timed evaluation compiles nothing where `evaluate_episodes` keeps its compiled functions)",
        "- cross-check, same initial weights on both backends: query loss of meta-batch 0 after the "
        f"inner loop (`model(x, training=True)`), |JAX − TF| {_max_gap(rounds, 'meta_batch_0_loss')}; "
        f"fit's first-step loss |JAX − TF| {_max_gap(rounds, 'first_loss')} (on TensorFlow Keras's "
        "PyDataset adapter reads meta-batches 0 and 1 for the output signature and `EpisodeSource` "
        "then starts its next pass: TF's fit trains from meta-batch 2, JAX's from 0); evaluation "
        f"accuracy (the same episodes) |JAX − TF| {_max_gap(rounds, 'eval_accuracy')}",
    ]
    return "\n".join(header) + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(footer)


def _max_gap(rounds: list[dict], key: str) -> str:
    gaps = [
        abs(r["jax"][key] - r["tensorflow"][key])
        for r in rounds
        if key in r["jax"] and key in r["tensorflow"]
    ]
    return f"{max(gaps):.2g}" if gaps else "not measured"


def _median_of(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if row.get(key) is not None]
    return f"{statistics.median(values):.2f}" if values else "–"


def merge(paths: list[str], out: str | None, raw: list[str], log=print) -> dict:
    """One report of the rounds of the ``--out`` files ``paths`` (same configuration), in order."""
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    spec = reports[0]["spec"]
    for path, report in zip(paths, reports):
        if report["spec"] != spec:
            raise SystemExit(f"--merge: {path} measured another configuration than {paths[0]}.")
    merged = {
        **reports[0],
        "date": reports[0]["date"],
        "command": "python benchmarks/backend_ratio.py " + shlex.join(raw),
        "merged_commands": [r["command"] for r in reports],
        "load_average_start": reports[0]["load_average_start"],
        "load_average_end": reports[-1]["load_average_end"],
        "rounds": [r for report in reports for r in report["rounds"]],
        "wall_seconds": sum(r["wall_seconds"] for r in reports),
    }
    merged["summary"] = summarise(merged["rounds"])
    log(format_table(merged))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(merged, f, indent=1)
        log(f"Wrote {out}")
    return merged


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny ResNet-12 at 16×16, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    parser.add_argument("--widths", default=None, help="ResNet-12 widths (default 64,128,256,512)")
    parser.add_argument(
        "--train-steps", type=int, default=None, help="timed meta-train steps per round (default 5)"
    )
    parser.add_argument("--warmup-steps", type=int, default=None, help="warm-up steps, untimed (default 1)")
    parser.add_argument(
        "--eval-episodes", type=int, default=None, help="timed evaluation episodes (default 100)"
    )
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the workers (default 2)")
    parser.add_argument("--out", default=None, help="also write the measurements as JSON here")
    parser.add_argument(
        "--merge",
        metavar="JSON",
        nargs="+",
        default=None,
        help="measure nothing: join the rounds of these --out files (one configuration) into one table",
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="measure nothing: print the table of a stored --out file",
    )
    return parser.parse_args(argv)


def main(argv=None, log=print) -> dict:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["--worker"]:
        worker_main(raw[1:])
        return {}
    args = parse_args(raw)
    if args.render:
        with open(args.render) as f:
            report = json.load(f)
        log(format_table(report))
        return report
    if args.merge:
        return merge(args.merge, args.out, raw, log)
    spec = dict(QUICK if args.quick else DEFAULTS)
    for key in ("train_steps", "warmup_steps", "eval_episodes"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.widths:
        spec["widths"] = [int(w) for w in args.widths.split(",")]
    rounds = args.rounds or (1 if args.quick else 3)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/backend_ratio.py " + shlex.join(raw),
        "spec": spec,
        "load_average_start": os.getloadavg(),
        "rounds": [],
    }
    started = time.perf_counter()
    for r in range(rounds):
        order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
        measured = {}
        for backend in order:
            log(f"[{time.perf_counter() - started:7.1f}s] round {r + 1}/{rounds}: {LABELS[backend]}")
            measured[backend] = row = run_worker(backend, spec, args.threads)
            log(
                f"           train {row['tasks_per_s']:.3f} tasks/s ({row['step_seconds']:.2f} s/step), "
                f"eval {row['episodes_per_s']:.2f} episodes/s, compile {row['compile_seconds']:.1f} s, "
                f"first loss {row['first_loss']:.6f}"
            )
        report["rounds"].append(measured)
    report["wall_seconds"] = time.perf_counter() - started
    report["load_average_end"] = os.getloadavg()
    first = report["rounds"][0]
    report["machine"] = {
        **{k: first["tensorflow"][k] for k in ("cpu_model", "cpu_count", "isa", "keras_version")},
        "tensorflow_version": first["tensorflow"]["tensorflow_version"],
        "jax_version": first["jax"]["jax_version"],
        "tensorflow_imported": first["jax"]["tensorflow_imported"],
    }
    report["summary"] = summarise(report["rounds"])
    log(format_table(report))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        log(f"Wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
