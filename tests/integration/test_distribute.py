"""tf.distribute: MirroredStrategy on two logical CPUs equals a one-device run;
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 completes a fit.

Both run in subprocesses: logical devices must be configured before TensorFlow
initialises, and a cluster needs one process per worker. See docs/distributed.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import patient

REPO = str(Path(__file__).resolve().parents[2])

COMMON = textwrap.dedent(
    """
    import contextlib, json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    """
)

SETUP = textwrap.dedent(
    """
    import keras
    import numpy as np
    from mtl_keras import HardTaskPool, MetaTransferModel, make_episodes
    from mtl_keras.backbones import resnet12
    from mtl_keras.data import ClassSplit

    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (6, 16, 16, 1))
    labels = np.repeat(np.arange(6), 8)
    images = np.clip(protos[labels] + rng.normal(0, 30, (len(labels), 16, 16, 1)), 0, 255)
    split = ClassSplit.from_arrays(images.astype("uint8"), labels, name="train")

    def run(strategy, steps_per_epoch, epochs, validate=True):
        with strategy.scope() if strategy else contextlib.nullcontext():
            keras.utils.set_random_seed(0)
            model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=3,
                                      inner_steps=2, eval_inner_steps=2)
            model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
        # delay 10 > the in-flight lag under a strategy (the distributed dataset prefetches too)
        pool = HardTaskPool(schedule="periodic", every=2, hard_batches=1, delay=10, seed=0)
        model.task_feedback = pool
        episodes = make_episodes(split, 3, 1, 2, meta_batch_size=4, seed=0, hard_tasks=pool,
                                 num_parallel_calls=1)
        val = make_episodes(split, 3, 1, 2, meta_batch_size=4, seed=1, num_batches=1, repeatable=True)
        history = model.fit(episodes, steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=0,
                            validation_data=val if validate else None)
        return model, history.history, pool
    """
)

MIRRORED = (
    COMMON
    + textwrap.dedent(
        """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """
    )
    + SETUP
    + textwrap.dedent(
        """
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    per_replica = next(iter(strategy.experimental_distribute_dataset(
        make_episodes(split, 3, 1, 2, meta_batch_size=4, num_batches=1))))[0]["support_images"]
    one, one_history, one_pool = run(None, 6, 2)
    two, two_history, two_pool = run(strategy, 6, 2)
    with strategy.scope():
        uneven = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=3, inner_steps=2)
        uneven.compile()
    before = [np.asarray(w).copy() for w in uneven.trainable_weights]
    try:  # 3 tasks over 2 replicas
        uneven.fit(make_episodes(split, 3, 1, 2, meta_batch_size=3, seed=0), steps_per_epoch=1, verbose=0)
        uneven_error = None
    except Exception as err:
        uneven_error = f"{type(err).__name__}: {err}"
    np.savez(sys.argv[1] + "/one.npz", *[np.asarray(w) for w in one.weights])
    np.savez(sys.argv[1] + "/two.npz", *[np.asarray(w) for w in two.weights])
    json.dump({
        "replicas": strategy.num_replicas_in_sync,
        "per_replica_shapes": [list(v.shape) for v in per_replica.values],
        "one": one_history, "two": two_history,
        "one_failures": one_pool.failure_counts(), "two_failures": two_pool.failure_counts(),
        "one_stats": one_pool.stats(), "two_stats": two_pool.stats(),
        "uneven_error": uneven_error,
        "uneven_changed": any(not np.array_equal(a, np.asarray(w)) for a, w in zip(before, uneven.trainable_weights)),
    }, open(sys.argv[1] + "/result.json", "w"))
    """
    )
)

WORKER = (
    COMMON
    + textwrap.dedent(
        """
    out, index, ports = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    """
    )
    + SETUP
    + textwrap.dedent(
        """
    model, history, pool = run(strategy, 2, 2, validate=False)
    json.dump({"replicas": strategy.num_replicas_in_sync, "history": history,
               "weights": [np.asarray(w).tolist() for w in model.trainable_weights],
               "stats": pool.stats()}, open(f"{out}/worker{index}.json", "w"))
    """
    )
)


def _env():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.pop("TF_CONFIG", None)
    return env


def _run(script_text, tmp_path, name, *args, timeout=None):
    timeout = patient(120) if timeout is None else timeout
    script = tmp_path / f"{name}.py"
    script.write_text(script_text)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), *map(str, args)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(proc, timeout=None):
    timeout = patient(120) if timeout is None else timeout
    code, _, err = _finish(proc, timeout)
    assert code == 0, err[-3000:]


def _load(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.mark.slow  # `make test-slow`: 37 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_mirrored_strategy_on_two_cpus_equals_one_device(tmp_path):
    _wait(_run(MIRRORED, tmp_path, "mirrored"))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["replicas"] == 2
    assert result["per_replica_shapes"] == [[2, 3, 16, 16, 1], [2, 3, 16, 16, 1]]  # B=4 split in two
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(result["two"][key], result["one"][key], rtol=0, atol=1e-5)
    for a, b in zip(_load(tmp_path / "two.npz"), _load(tmp_path / "one.npz")):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # The hard-task pool heard about whole meta-batches, once, and trained the same hard tasks.
    one, two = result["one_stats"], result["two_stats"]
    assert two["tasks_reported"] == one["tasks_reported"] == 12 * 4
    assert two["hard_tasks_reported"] == one["hard_tasks_reported"] > 0
    assert two["late_reports"] == 0 and two["unmatched_reports"] == 0
    assert result["two_failures"] == result["one_failures"]
    # A meta-batch that does not split over the replicas is refused before it trains.
    assert "does not split evenly over the 2 replicas" in (result["uneven_error"] or ""), result[
        "uneven_error"
    ]
    assert result["uneven_changed"] is False  # no weight moved


MIRRORED_PRETRAIN = COMMON + textwrap.dedent(
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from mtl_keras import PretrainModel
    from mtl_keras.backbones import resnet12
    from mtl_keras.models.pretrain import synchronize_batch_norm

    rng = np.random.default_rng(0)
    images = rng.random((64, 16, 16, 1)).astype("float32")
    images[32:] += 1.0  # the second replica's half of every batch looks different
    labels = rng.integers(0, 6, 64)
    order = np.concatenate([np.arange(0, 32).reshape(4, 8), np.arange(32, 64).reshape(4, 8)], 1).ravel()
    data = tf.data.Dataset.from_tensor_slices((images[order], labels[order])).batch(16)

    def run(strategy, lr, sync=False, steps=None):
        with strategy.scope() if strategy else contextlib.nullcontext():
            keras.utils.set_random_seed(0)
            model = PretrainModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), num_classes=6)
            if sync:
                synchronize_batch_norm(model.backbone)
            model.compile(optimizer=keras.optimizers.SGD(lr),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(data if steps is None else data.take(steps), epochs=2 if steps is None else 1, verbose=0)
        copies = [[np.asarray(c) for c in getattr(w.value, "values", [w.value])] for w in model.weights]
        differ = [w.path for w, c in zip(model.weights, copies) if any(not np.array_equal(c[0], x) for x in c[1:])]
        return model, differ

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    runs = {
        "one_frozen": run(None, 0.0), "two_frozen": run(mirrored, 0.0),
        "one": run(None, 0.1), "two": run(mirrored, 0.1),
        "one_step": run(None, 0.1, steps=1), "two_sync_step": run(mirrored, 0.1, sync=True, steps=1),
    }
    for name, (model, _) in runs.items():
        np.savez(f"{sys.argv[1]}/{name}.npz", *[np.asarray(w) for w in model.weights])
    json.dump({"names": [w.path for w in runs["one"][0].weights], "differ": {k: v[1] for k, v in runs.items()}},
              open(sys.argv[1] + "/result.json", "w"))
    """
)


@pytest.mark.slow  # `make test-slow`: 30 s of the 2-core CI run of 2026-12-07 (a slow day), which went over 30 min
def test_pretraining_under_mirrored_strategy_keeps_the_replicas_identical(tmp_path):
    """Batch norm's moving statistics are averaged over the replicas after every step: every
    replica holds the same model, and the moving means are those of the global batches (Keras 3
    alone keeps each replica's own, from its shard). `synchronize_batch_norm`: equal to one device."""
    _wait(_run(MIRRORED_PRETRAIN, tmp_path, "mirrored_pretrain"))
    result = json.loads((tmp_path / "result.json").read_text())
    names = result["names"]
    assert all(differ == [] for differ in result["differ"].values()), result["differ"]
    runs = {
        k: _load(tmp_path / f"{k}.npz")
        for k in ("one_frozen", "two_frozen", "one", "two", "one_step", "two_sync_step")
    }
    means = [i for i, name in enumerate(names) if name.endswith("moving_mean")]
    assert means and all(np.abs(runs["one_frozen"][i]).max() > 0.01 for i in means)  # statistics moved
    # Weights fixed (learning rate 0): where a layer's input does not depend on earlier batch
    # norm (block 1's first convolution and shortcut read the images), the replicas' averaged
    # moving means are the global batches' (equal shards).
    first = [i for i in means if names[i] in ("block1_bn1/moving_mean", "block1_res_bn/moving_mean")]
    assert len(first) == 2
    for i in first:
        np.testing.assert_allclose(
            runs["two_frozen"][i], runs["one_frozen"][i], rtol=0, atol=1e-5, err_msg=names[i]
        )
    # Synchronized batch norm: a training step equals one device's, moving statistics included.
    # One step, not the whole fit: this tiny training is chaotic at float rounding (a 1e-6
    # perturbation of the initial weights moves the weights after its 8 steps by 1e-2,
    # benchmarks/probes/training_sensitivity.py: 8.5e-2), so after 8 steps the two agreed to 3e-6 on AVX-512
    # only by luck of the rounding and differed by 0.06 on AVX2 (ONEDNN_MAX_CPU_ISA=AVX2).
    for name, a, b in zip(names, runs["one_step"], runs["two_sync_step"]):
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-5, err_msg=name)
    # ... and the step did move every trained weight (the comparison is not of two no-ops).
    trained = [i for i, n in enumerate(names) if n.endswith(("kernel", "gamma"))]
    assert all(np.abs(runs["one_step"][i] - runs["one_frozen"][i]).max() > 1e-4 for i in trained)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # `make test-slow`: 18 s of the fresh-clone CI run of a97b94c on 2 AVX2 EPYC cores (TF pass 17:47; margin under 30 min)
def test_multi_worker_mirrored_strategy_with_two_local_workers_completes_a_fit(tmp_path):
    ports = ",".join(map(str, _free_ports(2)))
    workers = [_run(WORKER, tmp_path, f"worker{i}", i, ports) for i in range(2)]
    for proc in workers:
        _wait(proc, timeout=patient(150))
    results = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    for result in results:
        assert result["replicas"] == 2
        assert np.isfinite(result["history"]["loss"]).all() and len(result["history"]["loss"]) == 2
        assert result["stats"]["tasks_reported"] == 4 * 4  # every worker's pool saw whole meta-batches
    assert results[0]["history"] == results[1]["history"]
    for a, b in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- mixed precision
MIRRORED_BF16 = COMMON + textwrap.dedent(
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from mtl_keras import MetaTransferModel, make_episodes
    from mtl_keras.backbones import resnet12
    from mtl_keras.data import ClassSplit

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (6, 16, 16, 1))
    labels = np.repeat(np.arange(6), 8)
    images = np.clip(protos[labels] + rng.normal(0, 30, (len(labels), 16, 16, 1)), 0, 255)
    split = ClassSplit.from_arrays(images.astype("uint8"), labels, name="train")

    def run(strategy):
        with strategy.scope() if strategy else contextlib.nullcontext():
            keras.utils.set_random_seed(0)
            model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=3, inner_steps=2)
            # plain SGD: the update is proportional to the gradient (Adam would hide a wrong scale)
            model.compile(optimizer=keras.optimizers.SGD(0.05), head_optimizer=keras.optimizers.SGD(0.05))
        start = [np.asarray(w) for w in model.trainable_weights]
        episodes = make_episodes(split, 3, 1, 2, meta_batch_size=4, seed=0)
        history = model.fit(episodes, steps_per_epoch=4, epochs=1, verbose=0)
        compute = model.backbone.layers[1].compute_dtype
        return [np.asarray(w) - s for w, s in zip(model.trainable_weights, start)], history.history, compute

    one, one_history, compute = run(None)
    two, two_history, _ = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    np.savez(sys.argv[1] + "/one.npz", *one)
    np.savez(sys.argv[1] + "/two.npz", *two)
    json.dump({"one": one_history, "two": two_history, "compute_dtype": compute},
              open(sys.argv[1] + "/result.json", "w"))
    """
)


@pytest.mark.slow  # `make test-slow`: 19 s of the fresh-clone CI run of a97b94c on 2 AVX2 EPYC cores (TF pass 17:47; margin under 30 min)
def test_mixed_bfloat16_under_mirrored_strategy_matches_one_device(tmp_path):
    _wait(_run(MIRRORED_BF16, tmp_path, "mirrored_bf16"))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["compute_dtype"] == "bfloat16"
    assert np.isfinite(result["two"]["loss"]).all()
    one = np.concatenate([d.ravel() for d in _load(tmp_path / "one.npz")])  # updates of 4 SGD steps
    two = np.concatenate([d.ravel() for d in _load(tmp_path / "two.npz")])
    assert np.linalg.norm(one) > 1e-3  # it trained
    # bfloat16 convolutions over half the batch round differently (float32 agrees to 1e-5 above),
    # so the updates agree to a few percent; a missing 1/replicas loss scale would double them.
    assert np.linalg.norm(two - one) / np.linalg.norm(one) < 0.05
    np.testing.assert_allclose(result["two"]["loss"], result["one"]["loss"], rtol=0, atol=5e-3)


# --------------------------------------------------------------------------- the CLI
def _cli(tmp_path, args, env_extra=None, timeout=None):
    timeout = patient(300) if timeout is None else timeout
    from tests.conftest import TINY_CONFIG

    config = tmp_path / "tiny.json"
    if not config.exists():
        config.write_text(json.dumps({**TINY_CONFIG, "meta_batch_size": 2}))
    env = _env()
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "mtl_keras_app.cli", *args, "--config", str(config), "--no-tensorboard"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, timeout=None):
    timeout = patient(300) if timeout is None else timeout
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout}s: {err[-2000:]}") from None
    return proc.returncode, out, err


def test_a_non_chief_worker_meta_trains_from_its_own_pretrained_weights(tmp_path, monkeypatch):
    """Each worker of a multi-worker run saves the (identical) pretrained backbone in its own
    folder; meta-training used to read the chief's file, which the chief may not have written yet:
    `mtl-keras run --strategy multi-worker` failed about 1 run in 6 with 'No pretrained weights at
    RUN/pretrained_backbone.weights.h5' on worker 1."""
    from types import SimpleNamespace

    from mtl_keras_app import workflow
    from mtl_keras_app.config import ExperimentConfig
    from tests.conftest import TINY_CONFIG

    config = ExperimentConfig.from_dict({k: v for k, v in TINY_CONFIG.items() if k != "preset"})
    worker, real = object(), workflow.output_dir

    def output_dir(run_dir, strategy):
        return real(run_dir, None) + ("/worker-1" if strategy is worker else "")

    monkeypatch.setattr(workflow.run_folder, "output_dir", output_dir)
    monkeypatch.setattr(workflow.stages, "output_dir", output_dir, raising=False)
    monkeypatch.setattr(workflow.stages, "check_strategy", lambda config, strategy: None)
    used = []

    def build_meta_model(config, channels, weights_path, strategy):
        used.append(weights_path)
        raise RuntimeError("past the weights")

    monkeypatch.setattr(workflow.stages, "build_meta_model", build_meta_model)
    splits = SimpleNamespace(train=SimpleNamespace(channels=1))
    run_dir = tmp_path / "run"
    (run_dir / "worker-1").mkdir(parents=True)
    (run_dir / "worker-1" / "pretrained_backbone.weights.h5").write_bytes(b"worker 1's")
    with pytest.raises(RuntimeError, match="past the weights"):  # the chief's file is not there yet
        workflow.meta_train_stage(config, str(run_dir), strategy=worker, splits=splits, verbose=False)
    assert used == [str(run_dir / "worker-1" / "pretrained_backbone.weights.h5")]

    # A worker whose folder has none (pretrained by an earlier single-process run) uses the chief's.
    (run_dir / "worker-1" / "pretrained_backbone.weights.h5").unlink()
    (run_dir / "pretrained_backbone.weights.h5").write_bytes(b"the chief's")
    with pytest.raises(RuntimeError, match="past the weights"):
        workflow.meta_train_stage(config, str(run_dir), strategy=worker, splits=splits, verbose=False)
    assert used[-1] == str(run_dir / "pretrained_backbone.weights.h5")


@pytest.mark.slow  # `make test-slow`: the longest CLI runs (60-160 s on 2 AVX2 cores)
def test_cli_run_with_mirrored_strategy_and_mixed_bfloat16(tmp_path, glyph_cache):
    run_dir = tmp_path / "run"
    code, out, err = _finish(
        _cli(
            tmp_path,
            [
                "run",
                "--strategy",
                "mirrored",
                "--logical-cpus",
                "2",
                "--run-dir",
                str(run_dir),
                "--set",
                "precision=mixed_bfloat16",
            ],
            {"MTL_KERAS_CACHE": glyph_cache},
        )
    )
    assert code == 0, err[-3000:]
    assert "MirroredStrategy: 2 replicas" in out
    assert json.loads((run_dir / "config.json").read_text())["precision"] == "mixed_bfloat16"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["histories"]["MTL 1-shot"]["loss"]).all()
    assert 0 <= metrics["results"]["MTL (SS, meta-trained)"]["1-shot"]["mean"] <= 1
    assert (run_dir / "export" / "5way1shot" / "saved_model.pb").exists()


def test_cli_strategy_errors_come_before_any_training(tmp_path, monkeypatch):
    from mtl_keras_app import cli

    code, _, err = _finish(
        _cli(
            tmp_path,
            [
                "meta-train",
                "--strategy",
                "mirrored",
                "--logical-cpus",
                "2",
                "--run-dir",
                str(tmp_path / "r"),
                "--set",
                "meta_batch_size=3",
            ],
        )
    )
    assert code == 2 and "meta_batch_size" in err and "multiple of the 2 replicas" in err, err[-2000:]
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cli.main(["run", "--strategy", "multi-worker", "--run-dir", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()


@pytest.mark.slow  # `make test-slow`: the longest CLI runs (60-160 s on 2 AVX2 cores)
def test_cli_tune_with_mirrored_strategy_equals_one_device(tmp_path, glyph_cache):
    """`mtl-keras tune --strategy mirrored`: each trial's model trains on two replicas, and the
    trial scores what the same trial scores on one device; a meta-batch that does not split
    is refused before any trial."""
    common = ["tune", "--max-trials", "2", "--quiet"]
    env = {"MTL_KERAS_CACHE": glyph_cache}
    procs = {
        "one": _cli(tmp_path, [*common, "--run-dir", str(tmp_path / "one")], env),
        "two": _cli(
            tmp_path,
            [*common, "--strategy", "mirrored", "--logical-cpus", "2", "--run-dir", str(tmp_path / "two")],
            env,
        ),
    }
    for proc in procs.values():
        code, _, err = _finish(proc)
        assert code == 0, err[-3000:]
    one, two = (json.loads((tmp_path / k / "tuning.json").read_text()) for k in ("one", "two"))
    assert [t["hyperparameters"] for t in two["trials"]] == [t["hyperparameters"] for t in one["trials"]]
    queries = 10 * 5 * 3  # val_episodes × ways × queries of the tiny config: one query apart at most
    for a, b in zip(one["trials"], two["trials"]):
        assert b["score"] == pytest.approx(a["score"], abs=1 / queries + 1e-9)
    bad = ["--strategy", "mirrored", "--logical-cpus", "2", "--set", "meta_batch_size=3"]
    code, _, err = _finish(_cli(tmp_path, [*common, "--run-dir", str(tmp_path / "bad"), *bad], env))
    assert code == 2 and "multiple of the 2 replicas" in err, err[-2000:]
    assert not (tmp_path / "bad" / "tuner").exists()


@pytest.mark.slow  # `make test-slow`: the longest CLI runs (60-160 s on 2 AVX2 cores)
def test_cli_run_with_multi_worker_strategy_on_two_local_workers(tmp_path, glyph_cache):
    ports = _free_ports(2)
    run_dir = tmp_path / "run"
    procs = []
    for index in range(2):
        tf_config = json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                "task": {"type": "worker", "index": index},
            }
        )
        procs.append(
            _cli(
                tmp_path,
                ["run", "--strategy", "multi-worker", "--run-dir", str(run_dir)],
                {"MTL_KERAS_CACHE": glyph_cache, "TF_CONFIG": tf_config},
            )
        )
    finished = [_finish(proc) for proc in procs]
    # Both workers' errors: a worker that fails first is seen by the other only as "unhealthy".
    report = "\n".join(
        f"worker {i} (exit {code}): {err[-3000:]}" for i, (code, _, err) in enumerate(finished)
    )
    for code, out, _ in finished:
        assert code == 0, report
        assert "MultiWorkerMirroredStrategy: 2 replicas" in out
    chief = json.loads((run_dir / "metrics.json").read_text())
    worker = json.loads((run_dir / "worker-1" / "metrics.json").read_text())  # non-chief: its own folder
    assert chief["histories"]["MTL 1-shot"] == worker["histories"]["MTL 1-shot"]
    for row, by_shot in chief["results"].items():
        ours, theirs = by_shot["1-shot"], worker["results"][row]["1-shot"]
        assert ours["mean"] == theirs["mean"]
        # Same pretrained model on both workers (synchronized batch norm), so the same curve.
        assert ours["per_step_accuracy"] == theirs["per_step_accuracy"]
    assert (run_dir / "mtl_1shot.weights.h5").exists() and (
        run_dir / "worker-1" / "mtl_1shot.weights.h5"
    ).exists()
