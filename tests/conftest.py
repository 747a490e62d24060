"""Shared fixtures: seeds, a quiet TensorFlow, tiny backbones and splits."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mtl_keras.data.split import ClassSplit  # noqa: E402


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
