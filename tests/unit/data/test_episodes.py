import numpy as np
import pytest

from mtl_keras.data import EpisodeSampler, make_episodes, pretrain_dataset
from tests.conftest import make_prototype_split

#: Backend-agnostic: also run in the second pytest pass, on JAX (conftest.py).
pytestmark = pytest.mark.backends


def _items_to_rows(split):
    return {split.images[i].tobytes(): i for i in range(split.num_images)}


def test_episode_shapes_dtypes_and_label_ranges(proto_split):
    ds = make_episodes(proto_split, ways=4, shots=2, queries=3, meta_batch_size=2, num_batches=3, seed=0)
    batches = list(ds)
    assert len(batches) == 3
    inputs, query_labels = batches[0]
    assert inputs["support_images"].shape == (2, 8, 16, 16, 1)
    assert inputs["query_images"].shape == (2, 12, 16, 16, 1)
    assert inputs["support_labels"].shape == (2, 8)
    assert inputs["task_classes"].shape == (2, 4)
    assert query_labels.shape == (2, 12)
    assert inputs["support_images"].dtype.name == "float32"
    assert 0.0 <= float(np.min(inputs["support_images"])) and float(np.max(inputs["support_images"])) <= 1.0
    for labels in (inputs["support_labels"].numpy(), query_labels.numpy()):
        assert labels.min() == 0 and labels.max() == 3
        assert all(np.bincount(row, minlength=4).min() == np.bincount(row).max() for row in labels)


def test_support_and_query_images_are_disjoint_and_match_their_class(proto_split):
    sampler = EpisodeSampler(proto_split, ways=5, shots=3, queries=4, seed=1)
    for _ in range(20):
        classes, support, query = sampler.sample_task()
        assert len(set(classes)) == 5
        assert not set(support) & set(query)
        assert len(set(support)) == 15 and len(set(query)) == 20
        np.testing.assert_array_equal(proto_split.labels[support], np.repeat(classes, 3))
        np.testing.assert_array_equal(proto_split.labels[query], np.repeat(classes, 4))


def test_episode_pixels_are_the_sampled_images(proto_split):
    ds = make_episodes(proto_split, ways=3, shots=1, queries=2, num_batches=1, seed=3)
    inputs, query_labels = next(iter(ds))
    rows = _items_to_rows(proto_split)
    pixels = np.round(inputs["support_images"].numpy()[0] * 255).astype("uint8")
    found = [rows[p.tobytes()] for p in pixels]
    classes = proto_split.class_ids[proto_split.labels[found]]
    np.testing.assert_array_equal(classes, inputs["task_classes"].numpy()[0])


def test_same_seed_same_episodes_and_different_seed_differs(proto_split):
    def stream(seed):
        ds = make_episodes(proto_split, 4, 1, 2, meta_batch_size=2, num_batches=4, seed=seed)
        return [x["support_images"].numpy() for x, _ in ds]

    a, b, c = stream(7), stream(7), stream(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_repeatable_restarts_and_training_stream_continues(proto_split):
    rep = make_episodes(proto_split, 4, 1, 2, num_batches=2, seed=0, repeatable=True)
    first = [x["task_classes"].numpy() for x, _ in rep]
    second = [x["task_classes"].numpy() for x, _ in rep]
    np.testing.assert_array_equal(first, second)
    cont = make_episodes(proto_split, 4, 1, 2, num_batches=4, seed=0)
    one = np.concatenate([x["support_images"].numpy() for x, _ in cont])
    two = np.concatenate([x["support_images"].numpy() for x, _ in cont])
    assert not np.array_equal(one, two), "a training epoch replayed the previous epoch's episodes"


def test_sampler_rejects_class_with_too_few_images():
    split = make_prototype_split(num_classes=5, per_class=4)
    with pytest.raises(ValueError, match=r"Class '0' in split 'train' has 4 images .* needs 6"):
        EpisodeSampler(split, ways=5, shots=1, queries=5)


def test_sampler_rejects_more_ways_than_classes(proto_split):
    with pytest.raises(ValueError, match="10-way episodes need 10 classes but split 'train' has only 8"):
        make_episodes(proto_split, ways=10, shots=1, queries=1)


def test_pretrain_dataset_labels_and_holdout(proto_split):
    train, held = pretrain_dataset(proto_split, batch_size=16, holdout=0.25, seed=0)
    n_train = sum(int(x.shape[0]) for x, _ in train)
    n_held = sum(int(x.shape[0]) for x, _ in held)
    assert n_train + n_held == proto_split.num_images
    assert n_held == 8 * 3
    labels = np.concatenate([y.numpy() for _, y in held])
    assert set(labels) == set(range(8))


def test_excluded_images_are_avoided_and_when_too_few_remain_every_fresh_one_is_used():
    split = make_prototype_split(num_classes=4, per_class=20)
    sampler = EpisodeSampler(split, ways=2, shots=1, queries=15, seed=0)  # 16 images per class and task
    items0, items1 = split.items_of(0), split.items_of(1)
    # Enough fresh images (class 1: 4 used, 16 left): none of the used ones is drawn.
    # Too few (class 0: 16 used, 4 left): all 4 fresh ones are drawn, topped up with 12 used ones.
    exclude = {0: items0[:16], 1: items1[:4]}
    for _ in range(5):
        classes, support, query = sampler.sample_task(classes=np.array([0, 1]), exclude=exclude)
        drawn = np.concatenate([support, query])
        of0, of1 = drawn[np.isin(drawn, items0)], drawn[np.isin(drawn, items1)]
        assert len(of0) == len(of1) == 16 and len(np.unique(drawn)) == 32
        assert set(items0[16:]) <= set(of0.tolist())
        assert not set(items1[:4]) & set(of1.tolist())


def test_pretrain_dataset_with_an_epoch_variable_draws_each_epochs_order_from_the_epoch(proto_split):
    """The order of epoch e is the same whether or not the dataset was iterated before (a resumed
    training), differs between epochs and covers every training image once."""
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    train = pretrain_dataset(proto_split, batch_size=16, seed=3, epoch=epoch)

    def order():
        return np.concatenate([labels.numpy() for _, labels in train]), np.concatenate(
            [images.numpy().reshape(len(images), -1)[:, :4] for images, _ in train]
        )

    epoch.assign(2)
    labels_2, pixels_2 = order()
    epoch.assign(0)
    labels_0, _ = order()
    order()  # more passes in between change nothing
    epoch.assign(2)
    again_labels, again_pixels = order()
    np.testing.assert_array_equal(again_labels, labels_2)
    np.testing.assert_array_equal(again_pixels, pixels_2)
    assert not np.array_equal(labels_0, labels_2)
    assert sorted(labels_2.tolist()) == sorted(proto_split.labels.tolist())
