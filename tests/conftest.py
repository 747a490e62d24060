"""Shared fixtures: seeds, a quiet TensorFlow, tiny backbones and splits."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The bfloat16 tests test bfloat16 on every CPU, also where it is emulated (slow but correct);
# tests/unit/test_hardware.py unsets this to test the float32 fallback.
os.environ["MTL_KERAS_ALLOW_EMULATED_BF16"] = "1"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mtl_keras.data.split import ClassSplit  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """On a Keras backend other than TensorFlow (``KERAS_BACKEND=jax``, the second pass of
    ``make test``), run only the tests marked ``backends``: the rest test TensorFlow itself
    (gradient tapes, tf.data, tf.distribute, SavedModels) or call TensorFlow in the test.
    ``tensorflow_only`` takes a case of a marked test back out (a parameter, for time)."""
    if keras.backend.backend() == "tensorflow":
        return

    def on_this_backend(item):
        return item.get_closest_marker("backends") and not item.get_closest_marker("tensorflow_only")

    keep = [item for item in items if on_this_backend(item)]
    dropped = [item for item in items if not on_this_backend(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def glyph_cache(tmp_path_factory):
    """A cache folder shared by every test that builds the glyph dataset."""
    path = os.environ.get("MTL_KERAS_TEST_CACHE") or str(tmp_path_factory.mktemp("glyph_cache"))
    return path


def make_prototype_split(num_classes=8, per_class=12, size=16, channels=1, noise=30.0, seed=0, name="train"):
    """A synthetic split: each class is a random prototype image plus noise (uint8)."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (num_classes, size, size, channels))
    labels = np.repeat(np.arange(num_classes), per_class)
    images = protos[labels] + rng.normal(0, noise, (len(labels), size, size, channels))
    return ClassSplit.from_arrays(np.clip(images, 0, 255).astype("uint8"), labels, name=name)


@pytest.fixture
def proto_split():
    return make_prototype_split()


#: A config small enough for end-to-end tests on 2 CPU cores (tens of seconds):
#: 16x16 glyphs, a 4-channel ResNet-12, one pretraining epoch without augmentation,
#: one meta-epoch of 2 steps, 10 validation and test episodes, 1-shot only.
TINY_CONFIG = {
    "preset": "cpu-glyphs",
    "image_size": 16,
    "widths": [4, 4, 4, 4],
    "pretrain_epochs": 1,
    "pretrain_batch_size": 512,
    "pretrain_augment": False,
    "shots": [1],
    "meta_epochs": 1,
    "steps_per_epoch": 2,
    "meta_batch_size": 2,
    "queries": 3,
    "test_queries": 3,
    "inner_steps": 2,
    "eval_inner_steps": 3,
    "val_episodes": 10,
    "test_episodes": 10,
}


@pytest.fixture
def tiny_config_file(tmp_path, glyph_cache, monkeypatch):
    """Path of a JSON file holding `TINY_CONFIG`; glyphs are cached in ``glyph_cache``."""
    import json

    monkeypatch.setenv("MTL_KERAS_CACHE", glyph_cache)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return str(path)
