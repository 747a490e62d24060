"""Reliability: exact resume after SIGKILL, atomic backups, the bad-input catalog
(docs/errors.md), determinism, and the up-front memory check.

The subprocess tests write a small worker script into ``tmp_path`` and run it with
this interpreter; each finishes in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mtl_keras import HardTaskPool, MetaTransferModel, make_episodes
from mtl_keras.backbones import conv4, resnet12
from mtl_keras.callbacks import ResumableCheckpoint, StopOnNonFiniteLoss
from mtl_keras.data import ClassSplit
from mtl_keras.data.sources import folders
from mtl_keras.export import export_adapt_and_classify
from mtl_keras.models.weights import load_backbone_weights
from mtl_keras.tensorflow_backend import memory
from tests.helpers import patient

REPO = str(Path(__file__).resolve().parents[2])

# A worker shared by the resume and determinism tests: tiny ResNet-12, hard-task pool,
# a learning-rate schedule, 3 epochs of 4 meta-batches. argv: OUT BACKUP [KILL_AFTER] [DETERMINISM]
WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out, backup = sys.argv[1], sys.argv[2]
    kill_after = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    if len(sys.argv) > 4 and sys.argv[4] == "determinism":
        tf.config.experimental.enable_op_determinism()
    import keras
    import numpy as np
    from mtl_keras import HardTaskPool, MetaTransferModel, make_episodes
    from mtl_keras.backbones import resnet12
    from mtl_keras.callbacks import ResumableCheckpoint, StopOnNonFiniteLoss
    from mtl_keras.data import ClassSplit

    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (6, 16, 16, 1))
    labels = np.repeat(np.arange(6), 8)
    images = np.clip(protos[labels] + rng.normal(0, 30, (len(labels), 16, 16, 1)), 0, 255)
    split = ClassSplit.from_arrays(images.astype("uint8"), labels, name="train")

    keras.utils.set_random_seed(0)
    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=3, inner_steps=2,
                              eval_inner_steps=2)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=3, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.Adam(schedule), head_learning_rate=1e-2)
    pool = HardTaskPool(schedule="periodic", every=2, hard_batches=1, delay=5, seed=0)

    class Recorder:  # what the model trained on, in order
        trained = []
        def report(self, task_classes, class_accuracy):
            self.trained.append(np.asarray(task_classes).tolist())
            pool.report(task_classes, class_accuracy)

    recorder = Recorder()
    model.task_feedback = recorder
    episodes = make_episodes(split, 3, 1, 2, meta_batch_size=2, seed=0, hard_tasks=pool,
                             num_parallel_calls=1)
    fresh = make_episodes(split, 3, 1, 2, meta_batch_size=2, seed=0, num_batches=4)
    episode_hash = hashlib.sha256(b"".join(x["support_images"].numpy().tobytes()
                                           + x["query_images"].numpy().tobytes() for x, _ in fresh))

    class Progress(keras.callbacks.Callback):
        done = 0
        def on_epoch_begin(self, epoch, logs=None):
            with open(os.path.join(out, "epochs.log"), "a") as f:
                f.write(f"{epoch}\\n")
        def on_train_batch_end(self, batch, logs=None):
            Progress.done += 1
            if kill_after is not None and Progress.done == kill_after:
                open(os.path.join(out, "marker"), "w").close()
                time.sleep(300)  # the parent kills us here, mid-epoch

    checkpoint = ResumableCheckpoint(backup, episodes, verbose=0)
    history = model.fit(episodes, steps_per_epoch=4, epochs=3, verbose=0,
                        callbacks=[checkpoint, StopOnNonFiniteLoss(), Progress()])
    np.savez(os.path.join(out, "weights.npz"), *[np.asarray(w) for w in model.weights])
    json.dump({"history": checkpoint.history, "fit_history": history.history,
               "pool": pool.stats(), "trained": recorder.trained,
               "episodes": episode_hash.hexdigest(), "resumed_from": checkpoint.resumed_from},
              open(os.path.join(out, "result.json"), "w"))
    """
)


def _env():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _start(script, *args, out=None):
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(out, "stderr.txt"), "w") if out else subprocess.PIPE,
    )


def _finish(proc, out, timeout=None):
    timeout = patient(120) if timeout is None else timeout
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = Path(out, "stderr.txt").read_text()[-3000:]
    assert proc.returncode == 0, err
    return json.loads(Path(out, "result.json").read_text())


def _weights(out):
    with np.load(Path(out, "weights.npz")) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _epochs(out):
    return [int(line) for line in Path(out, "epochs.log").read_text().split()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three concurrent workers with op determinism — two uninterrupted, one killed
    with SIGKILL in epoch 2 — then the killed one restarted. ~40 s on 2 idle cores."""
    root = tmp_path_factory.mktemp("runs")
    script = root / "worker.py"
    script.write_text(WORKER)
    dirs = {name: root / name for name in ("full", "again", "crash")}
    for path in dirs.values():
        path.mkdir()
    procs = {
        name: _start(script, path, path / "backup", 6 if name == "crash" else "-", "determinism", out=path)
        for name, path in dirs.items()
    }
    crash, victim = dirs["crash"], procs["crash"]
    deadline = time.time() + 150
    while not (crash / "marker").exists():
        assert victim.poll() is None, (crash / "stderr.txt").read_text()[-3000:]
        assert time.time() < deadline, "the worker never reached the kill point"
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL)  # mid-epoch: epoch 2, after its 2nd meta-batch
    victim.wait()
    killed_state = json.loads((crash / "backup" / "state.json").read_text())
    leftovers = [f for f in os.listdir(crash / "backup") if f.startswith(".tmp")]
    resume = _start(script, crash, crash / "backup", "-", "determinism", out=crash)
    results = {name: _finish(procs[name], dirs[name], timeout=patient(150)) for name in ("full", "again")}
    results["crash"] = _finish(resume, crash, timeout=patient(150))
    return {"dirs": dirs, "results": results, "killed_state": killed_state, "leftovers": leftovers}


# --------------------------------------------------------------------------- resume
def test_resume_after_sigkill_mid_epoch_matches_an_uninterrupted_run(runs):
    state = runs["killed_state"]
    assert state["epoch"] == 1 and state["batches"] == 4
    assert runs["leftovers"] == []
    resumed, expected = runs["results"]["crash"], runs["results"]["full"]
    crash, full = runs["dirs"]["crash"], runs["dirs"]["full"]
    # Epoch 1 finished before the kill and is not redone; epoch 2 (interrupted) is.
    assert _epochs(crash) == [0, 1, 1, 2]
    assert resumed["resumed_from"] == 1 and len(resumed["fit_history"]["loss"]) == 2
    assert resumed["history"] == expected["history"]
    reported = ("tasks_reported", "hard_tasks_reported", "orphans", "unmatched_reports", "late_reports")
    assert {k: resumed["pool"][k] for k in reported} == {k: expected["pool"][k] for k in reported}
    assert expected["pool"]["hard_tasks_reported"] > 0 and expected["pool"]["late_reports"] == 0
    # The resumed run trained the same meta-batches (hard tasks included) after epoch 1.
    assert resumed["trained"] == expected["trained"][4:]
    for a, b in zip(_weights(crash), _weights(full)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_two_runs_with_op_determinism_are_identical(runs):
    first, second = runs["results"]["full"], runs["results"]["again"]
    assert first["episodes"] == second["episodes"]
    assert first["trained"] == second["trained"]  # identical episodes, hard tasks included
    assert first["fit_history"] == second["fit_history"]
    for a, b in zip(_weights(runs["dirs"]["full"]), _weights(runs["dirs"]["again"])):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- stream + pool rewind
def _pipeline(split):
    pool = HardTaskPool(schedule="mixed", hard_fraction=0.5, delay=3, seed=0)
    stream = make_episodes(split, 3, 1, 2, meta_batch_size=2, seed=0, hard_tasks=pool).episode_stream
    return pool, stream


def _accuracy(serial):
    return np.random.default_rng(serial).random((2, 3))


def test_stream_rewind_redraws_exactly_what_an_uninterrupted_stream_draws(proto_split):
    # Reference: each report arrives right after its draw.
    pool, stream = _pipeline(proto_split)
    draws = stream.batches(None, repeatable=False)
    expected = []
    for serial in range(10):
        expected.append(next(draws))
        pool.report(expected[-1]["task_classes"], _accuracy(serial))
    # Prefetching run: the generator is 3 meta-batches ahead of training (= delay, so the
    # stream does not depend on timing); at 5 trained, 8 are drawn. Rewind to 5, as a
    # resumed fit does, and continue.
    pool2, stream2 = _pipeline(proto_split)
    ahead = stream2.batches(None, repeatable=False)
    got = []
    for serial in range(8):
        if serial >= 3:
            pool2.report(got[serial - 3]["task_classes"], _accuracy(serial - 3))
        got.append(next(ahead))
    saved = pool2.get_state(upto=5)
    stream2.seek(5)
    with pytest.raises(StopIteration):
        next(ahead)  # the abandoned iterator stops instead of drawing from the rewound pool
    again = stream2.batches(None, repeatable=False)
    got = got[:5]
    for serial in range(5, 10):
        got.append(next(again))
        pool2.report(got[-1]["task_classes"], _accuracy(serial))
    for a, b in zip(expected, got):
        for key in ("task_classes", "support_items", "query_items", "is_hard"):
            np.testing.assert_array_equal(a[key], b[key])
    assert any(b["is_hard"].any() for b in expected[5:]), "no hard task in the rewound draws"
    # The checkpoint state at 5 trained equals the live state of a pool that drew exactly 5.
    pool3, stream3 = _pipeline(proto_split)
    draws3 = stream3.batches(None, repeatable=False)
    for serial in range(5):
        pool3.report(next(draws3)["task_classes"], _accuracy(serial))
    reference_state = pool3.get_state()
    for state in (saved, reference_state):
        state["counters"].pop("max_in_flight")
    assert saved == reference_state


# --------------------------------------------------------------------------- in-process helpers
def _tiny_model(ways=3, widths=(4, 8, 8, 8), shape=(16, 16, 1)):
    model = MetaTransferModel(resnet12(shape, widths=widths), ways=ways, inner_steps=2, eval_inner_steps=2)
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    return model


def _episodes(split, seed=0, **kwargs):
    return make_episodes(split, 3, 1, 2, meta_batch_size=2, seed=seed, **kwargs)


def _fit_with_backup(model, episodes, backup, epochs, steps_per_epoch=2, callbacks=()):
    """``model.fit`` quietly, with a `ResumableCheckpoint` into ``backup`` before ``callbacks``."""
    return model.fit(
        episodes,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        verbose=0,
        callbacks=[ResumableCheckpoint(backup, episodes, verbose=0), *callbacks],
    )


@pytest.fixture
def one_epoch_backup(proto_split, tmp_path):
    """``(model, episodes, backup)``: a tiny model after one epoch checkpointed into ``backup``."""
    backup = tmp_path / "backup"
    model = _tiny_model()
    episodes = _episodes(proto_split)
    _fit_with_backup(model, episodes, backup, epochs=1)
    return model, episodes, backup


def test_checkpoint_crash_between_weights_and_state_keeps_previous_backup(
    one_epoch_backup, proto_split, monkeypatch
):
    import mtl_keras.callbacks.resumable as callbacks_module

    model, episodes, backup = one_epoch_backup
    assert json.loads((backup / "state.json").read_text())["epoch"] == 1

    def crash(path, text):
        raise OSError("disk died while committing")

    monkeypatch.setattr(callbacks_module, "_atomic_write_text", crash)
    with pytest.raises(OSError, match="disk died"):
        _fit_with_backup(model, episodes, backup, epochs=2)
    monkeypatch.undo()
    state = json.loads((backup / "state.json").read_text())
    assert state["epoch"] == 1 and (backup / state["weights"]).exists()
    fresh = _tiny_model()
    episodes = _episodes(proto_split)
    checkpoint = ResumableCheckpoint(backup, episodes, verbose=0)
    history = fresh.fit(episodes, steps_per_epoch=2, epochs=2, verbose=0, callbacks=[checkpoint])
    assert checkpoint.resumed_from == 1 and len(history.history["loss"]) == 1
    assert episodes.episode_stream.trained == 4


def test_backup_holds_both_optimizers_and_refuses_another_model(one_epoch_backup, proto_split):
    import h5py

    _, _, backup = one_epoch_backup
    state = json.loads((backup / "state.json").read_text())
    with h5py.File(backup / state["weights"]) as f:
        assert {"optimizer", "head_optimizer"} <= set(f)
    other = MetaTransferModel(conv4((16, 16, 1), filters=4), ways=3)
    other.compile()
    with pytest.raises(ValueError, match="was written by .* but this model is"):
        other.fit(
            _episodes(proto_split),
            steps_per_epoch=1,
            epochs=2,
            verbose=0,
            callbacks=[ResumableCheckpoint(backup, verbose=0)],
        )


# --------------------------------------------------------------------------- bad input catalog
@pytest.mark.filterwarnings("ignore:ResumableCheckpoint. epoch 2 stopped")
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(proto_split, tmp_path):
    backup = tmp_path / "backup"
    model = _tiny_model()
    episodes = _episodes(proto_split)

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.head.kernel.assign(np.full(self.model.head.kernel.shape, np.nan, "float32"))

    guard = StopOnNonFiniteLoss()
    with pytest.warns(RuntimeWarning, match=r"loss became nan at epoch 2, batch 1: training stopped"):
        history = _fit_with_backup(
            model, episodes, backup, epochs=4, steps_per_epoch=3, callbacks=[guard, Poison()]
        )
    assert guard.stopped_at == (1, 0) and len(history.history["loss"]) == 2
    state = json.loads((backup / "state.json").read_text())
    assert state["epoch"] == 1
    restored = _tiny_model()
    restored.load_weights(backup / state["weights"])
    assert np.isfinite(restored.head.kernel.numpy()).all()


def test_folder_dataset_missing_or_empty_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent.*does not exist"):
        folders.load(tmp_path / "absent", image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"split folder '.*empty/train' is missing"):
        folders.load(tmp_path / "empty", image_size=8)


def _png_tree(root, modes, per_class=3, size=(12, 12)):
    """train/val/test class folders of PNGs; class ``i`` uses ``modes[i % len(modes)]``."""
    rng = np.random.default_rng(0)
    paths = []
    for split, names in {"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}.items():
        for i, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(per_class):
                mode = modes[(i + j) % len(modes)]
                bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
                pixels = rng.integers(0, 256, (*size, bands), dtype=np.uint8)
                path = folder / f"{j}.png"
                Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode).save(path)
                paths.append(path)
    return paths


def test_truncated_image_in_the_pipeline_names_the_file(tmp_path):
    paths = _png_tree(tmp_path, ["RGB"])
    bad = paths[1]  # train/a/1.png
    bad.write_bytes(bad.read_bytes()[:60])
    train, _, _ = folders.load(tmp_path, image_size=8, verify="none")
    episodes = make_episodes(train, 3, 1, 2, num_batches=4, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"a/1\.png.*truncated or not an image"):
        for _ in episodes:
            pass
    with pytest.raises(ValueError, match=r"a/1\.png' is not a readable image"):
        folders.load(tmp_path, image_size=8, verify="full")


def test_mixed_grayscale_rgb_rgba_files_decode_to_the_requested_channels(tmp_path):
    _png_tree(tmp_path, ["L", "RGB", "RGBA"])
    for channels in (1, 3):
        train, _, _ = folders.load(tmp_path, image_size=8, channels=channels)
        inputs, _ = next(iter(make_episodes(train, 3, 1, 2, num_batches=1, seed=0)))
        assert inputs["support_images"].shape == (1, 3, 8, 8, channels)
        assert inputs["query_images"].shape == (1, 6, 8, 8, channels)


def test_in_memory_images_of_mixed_shapes_or_rgba_are_rejected():
    images = [np.zeros((8, 8, 1), "uint8")] * 3 + [np.zeros((8, 8, 3), "uint8")]
    with pytest.raises(ValueError, match=r"image 3 has shape \(8, 8, 3\) but image 0 has \(8, 8, 1\)"):
        ClassSplit(name="s", class_names=["x", "y"], labels=[0, 0, 1, 1], images=images)
    with pytest.raises(ValueError, match=r"channels must be 1 or 3, got 4. Drop the alpha"):
        ClassSplit.from_arrays(np.zeros((4, 8, 8, 4), "uint8"), [0, 0, 1, 1])


def test_backbone_rejects_too_small_images_and_model_rejects_other_image_shapes(proto_split):
    with pytest.raises(ValueError, match="images of 8x8 are too small"):
        resnet12((8, 8, 1), widths=(4, 4, 4, 4))
    model = _tiny_model(shape=(32, 32, 1))
    inputs, _ = next(iter(_episodes(proto_split, num_batches=1)))
    with pytest.raises(ValueError, match=r"support_images are 16x16x1 images but backbone .* takes 32x32x1"):
        model(inputs)


def test_support_labels_out_of_range_or_missing_class_are_named(proto_split):
    model = _tiny_model()
    inputs, _ = next(iter(_episodes(proto_split, num_batches=1)))
    support = inputs["support_images"]
    labels = inputs["support_labels"].numpy()
    with pytest.raises(ValueError, match=r"support_labels of task 0 hold 7, outside 0..2"):
        model.adapt(support, np.where(labels == 2, 7, labels), inputs["query_images"])
    with pytest.raises(ValueError, match=r"Task 0 has no support example of class 2"):
        model.adapt(support, np.where(labels == 2, 0, labels), inputs["query_images"])
    graph = tf.function(lambda s, y, q: model.adapt(s, y, q))
    with pytest.raises(tf.errors.InvalidArgumentError, match="every one of the 3 classes needs a support"):
        graph(support, tf.constant(np.where(labels == 2, 0, labels)), inputs["query_images"])


def test_export_and_construction_refuse_an_unbuilt_model(tmp_path):
    stub = types.SimpleNamespace(
        backbone=types.SimpleNamespace(built=False), head=types.SimpleNamespace(built=True)
    )
    with pytest.raises(ValueError, match="Cannot export an unbuilt model"):
        export_adapt_and_classify(stub, str(tmp_path / "out"), verbose=False)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="lazy")
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (keras.ops.shape(x)[0], -1)))

    with pytest.raises(ValueError, match="backbone 'lazy' is not built"):
        MetaTransferModel(Subclassed(), ways=3)


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_loading_weights_of_another_backbone_names_both(tmp_path):
    model = _tiny_model()
    path = tmp_path / "mtl.weights.h5"
    model.save_weights(path)
    other = MetaTransferModel(conv4((16, 16, 1), filters=4), ways=3)
    with pytest.raises(
        ValueError,
        match=r"holds weights of another architecture: the file has .*12 "
        r"scale_shift_conv2d.*MetaTransferModel .*backbone 'conv4'\) has .*4 scale_shift_conv2d",
    ):
        other.load_weights(path)
    backbone_file = tmp_path / "backbone.weights.h5"
    model.backbone.save_weights(backbone_file)
    wider = resnet12((16, 16, 1), widths=(4, 8, 8, 16))
    with pytest.raises(ValueError, match=r"conv widths 4/8, .*conv widths 4/8/16"):
        load_backbone_weights(wider, backbone_file)


# --------------------------------------------------------------------------- memory
def test_memory_estimate_is_dominated_by_activations_not_inner_steps():
    backbone = resnet12((84, 84, 3), widths=(64, 160, 320, 640))
    few = memory.estimate_training_memory(backbone, 4, 5, 75, 5, inner_steps=20)
    many = memory.estimate_training_memory(backbone, 4, 5, 75, 5, inner_steps=100)
    assert few["activations"] == many["activations"] > 10 * 2**30  # the paper's setting: > 10 GB
    assert many["inner_loop"] - few["inner_loop"] < 10 * 2**20  # 80 more steps: < 10 MB


def test_a_configuration_that_cannot_fit_is_rejected_before_training(proto_split, monkeypatch):
    model = _tiny_model()
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)
    with pytest.raises(
        MemoryError, match=r"needs at least .* \(2 tasks x 9 images of 16x16x1.*Lower meta_batch_size"
    ):
        model.fit(_episodes(proto_split), steps_per_epoch=1, epochs=1, verbose=0)
    assert model.optimizer.iterations.numpy() == 0
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    model.fit(_episodes(proto_split), steps_per_epoch=1, epochs=1, verbose=0)
    assert model.head_optimizer.iterations.numpy() == 1


def test_available_memory_reads_proc_meminfo():
    available = memory.available_memory()
    assert available is None or available > 0
