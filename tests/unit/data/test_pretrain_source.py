"""`pretrain_source`: the pretraining batches without TensorFlow (numpy, any backend)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtl_keras.callbacks import EpochSeeds
from mtl_keras.data import EpochNumber, PretrainSource, pretrain_source
from tests.conftest import make_prototype_split

pytestmark = pytest.mark.backends


@pytest.fixture(scope="module")
def split():
    return make_prototype_split(num_classes=5, per_class=10)


def _items(split, source):
    """The split's items a pass serves, recovered from the pixels (every image is distinct)."""
    flat = split.images.reshape(len(split.images), -1).astype(np.float32) / 255.0
    found = []
    for images, labels in source:
        for image, label in zip(images, labels):
            (item,) = np.flatnonzero(np.all(np.isclose(flat, image.reshape(-1)), axis=1))
            assert split.labels[item] == label
            found.append(int(item))
    return found


def test_batches_hold_every_training_image_once_with_its_label(split):
    train, held = pretrain_source(split, batch_size=16, seed=3, holdout=0.2)
    assert isinstance(train, PretrainSource) and isinstance(train, keras.utils.PyDataset)
    assert len(train) == 3 and train.cardinality() == 3  # 40 images: 16 + 16 + 8
    images, labels = train[0]
    assert images.shape == (16, 16, 16, 1) and images.dtype == np.float32 and labels.dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0
    train_items, held_items = _items(split, train), _items(split, held)
    assert sorted(train_items + held_items) == list(range(50))
    assert held_items == sorted(held_items)  # unshuffled
    assert np.bincount(split.labels[held_items]).tolist() == [2] * 5  # 20% of each class


def test_it_holds_out_the_images_of_the_tf_data_pipeline(split):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares with the tf.data pipeline")
    from mtl_keras.data import pretrain_dataset

    _, held_tf = pretrain_dataset(split, batch_size=16, seed=3, holdout=0.2)
    _, held = pretrain_source(split, batch_size=16, seed=3, holdout=0.2)
    np.testing.assert_array_equal(
        np.concatenate([x.numpy() for x, _ in held_tf]), np.concatenate([x for x, _ in held])
    )


def test_the_order_is_a_function_of_the_epoch(split):
    epoch = EpochNumber()
    train = pretrain_source(split, batch_size=8, seed=1, epoch=epoch)
    first = _items(split, train)
    again = _items(split, train)  # another pass, same epoch: the same order
    epoch.assign(1)
    second = _items(split, train)
    assert first == again and first != second and sorted(first) == sorted(second)
    resumed = pretrain_source(split, batch_size=8, seed=1, epoch=EpochNumber(1))
    assert _items(split, resumed) == second  # a training resumed at epoch 1 sees epoch 1's order
    # Without an epoch, each pass draws the next one.
    counted = pretrain_source(split, batch_size=8, seed=1)
    assert _items(split, counted) == first and _items(split, counted) == second


def test_epoch_seeds_sets_the_epoch_in_fit(split):
    epoch = EpochNumber()
    train = pretrain_source(split, batch_size=25, seed=0, epoch=epoch)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            seen.append(int(epoch))

    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=3, verbose=0, shuffle=False, callbacks=[EpochSeeds(epoch), Record()])
    assert seen == [0, 1, 2]


def test_bad_batch_size_is_named(split):
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        pretrain_source(split, batch_size=0)
