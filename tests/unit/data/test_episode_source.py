"""`episode_source`: the episodes of `make_episodes`, array for array, without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from mtl_keras.data import ClassSplit, EpisodeSource, HardTaskPool, episode_source, make_episodes
from tests.conftest import make_prototype_split
from tests.no_tensorflow import PRELUDE as NO_TENSORFLOW

#: Backend-agnostic: also run in the second pytest pass, on JAX (conftest.py).
pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[3]
KEYS = ("support_images", "support_labels", "query_images", "task_classes")


def _tf_elements(ds, count):
    return [(x, y) for x, y in ds.take(count).as_numpy_iterator()]


def _assert_same(tf_elements, source_elements):
    assert len(tf_elements) == len(source_elements)
    for (xa, ya), (xb, yb) in zip(tf_elements, source_elements):
        assert sorted(xa) == sorted(xb) == sorted(KEYS)
        for key in KEYS:
            assert isinstance(xb[key], np.ndarray), key
            assert (xa[key].dtype, xa[key].shape) == (xb[key].dtype, xb[key].shape), key
            np.testing.assert_array_equal(xa[key], xb[key], err_msg=key)
        assert (ya.dtype, ya.shape) == (yb.dtype, yb.shape)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("repeatable", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_episode_source_yields_the_arrays_of_make_episodes(repeatable, channels):
    split = make_prototype_split(num_classes=8, per_class=12, size=16, channels=channels)
    args = dict(meta_batch_size=3, num_batches=6, seed=11, repeatable=repeatable)
    ds = make_episodes(split, 4, 2, 3, **args)
    source = episode_source(split, 4, 2, 3, **args)
    # Two passes: a training stream continues, a repeatable one restarts, on both pipelines.
    expected = _tf_elements(ds, 6) + _tf_elements(ds, 6)
    by_index = [source[i] for i in range(6)] + [source[i] for i in range(6)]
    _assert_same(expected, by_index)
    x, y = by_index[0]
    assert x["support_images"].shape == (3, 8, 16, 16, channels) and x["support_images"].dtype == np.float32
    assert x["query_images"].shape == (3, 12, 16, 16, channels)
    assert x["support_labels"].dtype == x["task_classes"].dtype == y.dtype == np.int32
    assert x["task_classes"].shape == (3, 4) and y.shape == (3, 12)


def test_iterating_the_source_is_a_pass_like_iterating_the_dataset(proto_split):
    ds = make_episodes(proto_split, 4, 1, 2, meta_batch_size=2, num_batches=4, seed=5)
    source = episode_source(proto_split, 4, 1, 2, meta_batch_size=2, num_batches=4, seed=5)
    _assert_same(_tf_elements(ds, 4) + _tf_elements(ds, 4), list(source) + list(source))
    assert len(source) == 4 and source.num_batches == 4


def test_an_endless_source_matches_an_endless_dataset(proto_split):
    ds = make_episodes(proto_split, 4, 1, 2, meta_batch_size=2, seed=9)
    source = episode_source(proto_split, 4, 1, 2, meta_batch_size=2, seed=9)
    assert source.num_batches is None
    _assert_same(_tf_elements(ds, 7), [source[i] for i in range(7)])
    with pytest.raises(TypeError, match="endless"):
        len(source)


def test_requesting_index_zero_again_starts_the_next_pass(proto_split):
    source = episode_source(proto_split, 4, 1, 2, num_batches=3, seed=2)
    first = [source[i] for i in range(2)]
    again = source[0]  # a new fit: the training stream continues after what was served
    expected = _tf_elements(make_episodes(proto_split, 4, 1, 2, num_batches=3, seed=2), 3)
    _assert_same(expected, first + [again])
    repeatable = episode_source(proto_split, 4, 1, 2, num_batches=3, seed=2, repeatable=True)
    first, _ = repeatable[0], repeatable[1]
    _assert_same([first], [repeatable[0]])  # an evaluation pass again: the same episodes
    with pytest.raises(IndexError):
        repeatable[3]


def test_out_of_order_requests_get_the_meta_batch_of_their_position(proto_split):
    source = episode_source(proto_split, 4, 1, 2, meta_batch_size=2, num_batches=5, seed=4, repeatable=True)
    in_order = [source[i] for i in range(5)]
    shuffled = {i: source[i] for i in (3, 0, 4, 1, 2)}
    _assert_same(in_order, [shuffled[i] for i in range(5)])


def _accuracy(task_classes):
    """A deterministic per-class accuracy: the failure class depends on the classes only."""
    return ((np.asarray(task_classes) * 37) % 11) / 11.0


def test_hard_task_episodes_are_the_same_as_make_episodes():
    split = make_prototype_split(num_classes=10, per_class=12, size=8, channels=1)

    def run(build):
        pool = HardTaskPool(schedule="periodic", every=2, hard_batches=2, delay=5, seed=3)
        elements = []
        for inputs, labels in build(pool):
            elements.append((inputs, labels))
            pool.report(inputs["task_classes"], _accuracy(inputs["task_classes"]))
            if len(elements) == 16:
                break
        return elements, pool.stats()

    def tf_pipeline(pool):
        ds = make_episodes(
            split, 4, 1, 2, meta_batch_size=3, seed=6, hard_tasks=pool, num_parallel_calls=1, prefetch=None
        )
        return ds.as_numpy_iterator()

    def source(pool):
        src = episode_source(split, 4, 1, 2, meta_batch_size=3, seed=6, hard_tasks=pool)
        return (src[i] for i in range(10**6))

    expected, tf_stats = run(tf_pipeline)
    got, stats = run(source)
    _assert_same(expected, got)
    assert stats["hard_tasks_drawn"] > 0 and stats["hard_rounds"] > 0
    assert stats["late_reports"] == tf_stats["late_reports"] == 0
    assert stats["hard_tasks_drawn"] == tf_stats["hard_tasks_drawn"]


def test_hard_task_source_keeps_the_stream_handle(proto_split):
    pool = HardTaskPool(seed=0)
    source = episode_source(proto_split, 4, 1, 2, hard_tasks=pool)
    assert source.episode_stream.hard_tasks is pool
    with pytest.raises(ValueError, match="not both"):
        episode_source(proto_split, 4, 1, 2, hard_tasks=pool, batch_source=pool.batch_source)


def _png_split(tmp_path, file_size, channels, mode):
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for c in range(5):
        for i in range(4):
            shape = (file_size, file_size) + (() if mode == "L" else (len(mode),))
            path = tmp_path / f"c{c}_{i}.png"
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
            paths.append(str(path))
            labels.append(c)
    return ClassSplit(
        name="files",
        class_names=[f"c{c}" for c in range(5)],
        labels=np.array(labels),
        paths=np.array(paths),
        image_size=(12, 12),
        channels=channels,
    )


@pytest.mark.parametrize(
    "file_size, channels, mode",
    [(12, 1, "L"), (12, 3, "RGB"), (12, 3, "L"), (12, 3, "RGBA"), (20, 3, "RGB"), (7, 1, "L")],
)
def test_file_backed_episodes_match_tensorflows_decoder(tmp_path, file_size, channels, mode):
    split = _png_split(tmp_path, file_size, channels, mode)
    args = dict(meta_batch_size=2, num_batches=3, seed=1)
    expected = _tf_elements(make_episodes(split, 3, 1, 2, **args), 3)
    got = list(episode_source(split, 3, 1, 2, **args))
    if file_size == 12:
        _assert_same(expected, got)
    else:  # resized: keras.ops.image.resize is tf.image.resize on this (TensorFlow) backend
        for (xa, _), (xb, _) in zip(expected, got):
            np.testing.assert_allclose(xa["support_images"], xb["support_images"], atol=1e-6)
            np.testing.assert_allclose(xa["query_images"], xb["query_images"], atol=1e-6)


def test_a_truncated_file_is_named(tmp_path):
    split = _png_split(tmp_path, 12, 1, "L")
    bad = split.paths[split.items_of(0)[0]]
    data = Path(bad).read_bytes()
    Path(bad).write_bytes(data[: len(data) // 2])
    source = episode_source(split, 5, 1, 3, num_batches=1, seed=0)
    with pytest.raises(ValueError, match=f"Image file {bad} is truncated"):
        source[0]


def test_augment_runs_on_numpy_arrays(proto_split):
    seen = []

    def augment(images):
        seen.append((type(images), images.shape))
        return keras.ops.flip(images, axis=2)

    plain = episode_source(proto_split, 4, 1, 2, num_batches=1, seed=0)[0][0]
    flipped = episode_source(proto_split, 4, 1, 2, num_batches=1, seed=0, augment=augment)[0][0]
    assert seen == [(np.ndarray, (4, 16, 16, 1)), (np.ndarray, (8, 16, 16, 1))]
    np.testing.assert_array_equal(flipped["support_images"], plain["support_images"][:, :, :, ::-1])
    assert isinstance(flipped["query_images"], np.ndarray) and flipped["query_images"].dtype == np.float32


class QueryClassifier(keras.Model):
    """Logits ``(B, N*Q, N)`` from the query pixels only: enough to see fit take the episodes."""

    def __init__(self, ways, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(ways)

    def call(self, inputs):
        q = inputs["query_images"]
        return self.dense(keras.ops.reshape(q, (-1, q.shape[1], int(np.prod(q.shape[2:])))))


def test_keras_fit_and_evaluate_take_the_source(proto_split):
    train = episode_source(proto_split, 4, 1, 2, meta_batch_size=2, seed=0)
    val = episode_source(proto_split, 4, 1, 2, meta_batch_size=2, num_batches=2, seed=1, repeatable=True)
    model = QueryClassifier(4)
    model.compile("sgd", "sparse_categorical_crossentropy")
    tracker = train.episode_stream.tracker()
    fit = dict(
        steps_per_epoch=3, epochs=2, validation_data=val, shuffle=False, verbose=0, callbacks=[tracker]
    )
    history = model.fit(train, **fit)
    assert len(history.history["loss"]) == 2 and "val_loss" in history.history
    assert train.episode_stream.trained == 6
    assert model.evaluate(val, verbose=0) == pytest.approx(history.history["val_loss"][-1])
    assert isinstance(train, keras.utils.PyDataset) and isinstance(train, EpisodeSource)


# ------------------------------------------------------------------ without TensorFlow

#: A process where ``import tensorflow`` fails, on the JAX backend. ``mtl_keras`` is an empty
#: package there, so that only the modules under test are imported (not its ``__init__``,
#: which imports the models).
_EMPTY_PACKAGE = f"""
import os, sys, types, warnings

package = types.ModuleType("mtl_keras")
package.__path__ = [{str(ROOT / "mtl_keras")!r}]
sys.modules["mtl_keras"] = package
"""
PRELUDE = NO_TENSORFLOW + _EMPTY_PACKAGE


def _without_tensorflow(code, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    environ |= {"KERAS_BACKEND": "jax", "KERAS_HOME": str(tmp_path / "keras_home"), "JAX_PLATFORMS": "cpu"}
    environ |= env
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _check(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_episodes_build_without_tensorflow_on_the_jax_backend(tmp_path, proto_split):
    args = dict(meta_batch_size=2, num_batches=4, seed=3)
    expected = _tf_elements(make_episodes(proto_split, 4, 2, 3, **args), 4)
    np.savez(tmp_path / "split.npz", images=proto_split.images, labels=proto_split.labels)
    np.savez(
        tmp_path / "expected.npz",
        **{f"{i}_{k}": x[k] for i, (x, _) in enumerate(expected) for k in KEYS},
        **{f"{i}_query_labels": y for i, (_, y) in enumerate(expected)},
    )
    proc = _without_tensorflow(
        """
        import numpy as np
        import keras
        from mtl_keras.data import ClassSplit, make_episodes, episode_source
        from mtl_keras.data.episodes import EpisodeSampler
        assert keras.backend.backend() == "jax"

        arrays = np.load("split.npz")
        split = ClassSplit.from_arrays(arrays["images"], arrays["labels"], name="train")
        expected = np.load("expected.npz")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = make_episodes(split, 4, 2, 3, meta_batch_size=2, num_batches=4, seed=3)
            make_episodes(split, 4, 2, 3, seed=3)
        said = [str(w.message) for w in caught if "TensorFlow is not available" in str(w.message)]
        assert len(said) == 1 and "pip install tensorflow" in said[0], said
        for i, (x, y) in enumerate(ds):
            for k, v in list(x.items()) + [("query_labels", y)]:
                assert isinstance(v, np.ndarray), k
                np.testing.assert_array_equal(v, expected[f"{i}_{k}"], err_msg=k)
        assert i == 3

        class Classifier(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(4)

            def call(self, inputs):
                q = inputs["query_images"]
                return self.dense(keras.ops.reshape(q, (-1, q.shape[1], int(np.prod(q.shape[2:])))))

        model = Classifier()
        model.compile("sgd", "sparse_categorical_crossentropy")
        train = episode_source(split, 4, 2, 3, meta_batch_size=2, seed=0)
        history = model.fit(train, steps_per_epoch=2, epochs=2, shuffle=False, verbose=0)
        assert len(history.history["loss"]) == 2
        assert "tensorflow" not in sys.modules
        print("ok")
        """,
        tmp_path,
    )
    assert _check(proc).stdout.strip().endswith("ok")


def test_tensorflow_only_parts_say_what_to_install(tmp_path):
    proc = _without_tensorflow(
        """
        import numpy as np
        from mtl_keras import export, hardware
        from mtl_keras_app import distribute
        from mtl_keras.data import ClassSplit, pretrain_dataset
        from mtl_keras.data.episodes import _image_loader

        split = ClassSplit.from_arrays(np.zeros((8, 4, 4, 1), np.uint8), np.repeat(np.arange(2), 4))
        calls = {
            "pretrain_dataset": lambda: pretrain_dataset(split),
            "SavedModel export": lambda: export.export_adapt_and_classify(None, "model"),
            "tf.data episode pipeline": lambda: _image_loader(split),
        }
        for needle, call in calls.items():
            try:
                call()
            except ImportError as err:
                assert needle in str(err) and "pip install tensorflow" in str(err), str(err)
            else:
                raise AssertionError(needle + " did not raise")
        assert distribute.make_strategy("none") is None and distribute.is_chief(None)
        for call in (lambda: distribute.make_strategy("mirrored"), lambda: distribute.configure_logical_cpus(2)):
            try:  # a tf.distribute strategy trains TensorFlow models: refused by name on JAX
                call()
            except ValueError as err:
                assert "KERAS_BACKEND=tensorflow" in str(err) and "DataParallel" in str(err), str(err)
            else:
                raise AssertionError("a tf.distribute strategy on JAX did not raise")
        assert hardware._has_gpu() is False  # asks JAX, not TensorFlow
        print("ok")
        """,
        tmp_path,
    )
    assert _check(proc).stdout.strip().endswith("ok")


def test_evaluation_reads_image_files_without_tensorflow(tmp_path):
    """File-backed splits are embedded and sampled through Pillow on JAX (they used tf.data)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "val", "test"):
        for c in range(3):
            os.makedirs(tmp_path / "images" / part / f"{part}{c}")
            for i in range(4):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "images" / part / f"{part}{c}" / f"{i}.png")
    proc = _without_tensorflow(
        """
        import numpy as np
        from mtl_keras.backbones import conv4
        from mtl_keras.data.sources import folders
        from mtl_keras.evaluation import embed_split, evaluate_episodes, _split_images
        from mtl_keras.models.meta_transfer import MetaTransferModel
        from mtl_keras.data.numpy_episodes import numpy_image_loader

        split = folders.load("images", image_size=16)[2]
        assert split.is_file_backed
        model = MetaTransferModel(conv4((16, 16, 3), filters=4), ways=3, inner_steps=1, eval_inner_steps=1)
        features = embed_split(model, split)
        assert features.shape[0] == 12 and np.isfinite(features).all()
        pixels = _split_images(split, np.arange(12))
        expected = np.round(numpy_image_loader(split)(np.arange(12)) * 255).astype(np.uint8)
        np.testing.assert_array_equal(pixels, expected)
        result = evaluate_episodes(model, split, ways=3, shots=1, queries=2, episodes=4, verbose=0)
        assert result.episodes == 4 and 0 <= result.mean <= 1
        assert "tensorflow" not in sys.modules
        print("ok")
        """,
        tmp_path,
    )
    assert _check(proc).stdout.strip().endswith("ok")


def test_quiet_startup_imports_nothing_on_another_backend(tmp_path):
    home = tmp_path / "keras_home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"backend": "jax"}))
    code = """
        sys.meta_path.remove(next(f for f in sys.meta_path if isinstance(f, NoTensorFlow)))  # installed here: the backend alone must keep it out
        from mtl_keras_app import quiet as _quiet
        print(_quiet.keras_backend_name(), _quiet.tensorflow_installed())
        assert _quiet.quiet_tensorflow_startup() is False
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        print("ok")
        """
    for env in ({}, {"KERAS_BACKEND": ""}):  # KERAS_BACKEND=jax, then keras.json's "jax"
        proc = _check(_without_tensorflow(code, tmp_path, **env))
        assert proc.stdout.split() == ["jax", "True", "ok"]
        assert "cuInit" not in proc.stderr and "absl" not in proc.stderr


def test_keras_backend_name_defaults_to_tensorflow_and_reads_keras_json(tmp_path):
    proc = _check(
        _without_tensorflow(
            """
            from mtl_keras_app import quiet as _quiet
            home = os.environ["KERAS_HOME"]
            print(_quiet.keras_backend_name({"KERAS_HOME": home}))
            os.makedirs(home)
            with open(os.path.join(home, "keras.json"), "w") as f:
                f.write('{"backend": "torch"}')
            print(_quiet.keras_backend_name({"KERAS_HOME": home}))
            print(_quiet.keras_backend_name({"KERAS_HOME": home, "KERAS_BACKEND": "jax"}))
            print(_quiet.tensorflow_installed())
            """,
            tmp_path,
        )
    )
    assert proc.stdout.split() == ["tensorflow", "torch", "jax", "False"]
