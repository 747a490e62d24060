"""Episode sampling and the episodic `tf.data` pipeline.

The sampler (numpy, seedable) draws *indices*; a `tf.data` map turns them into
pixels: a gather for in-memory splits, parallel file decoding for file-backed
splits. Same seed ⇒ same episode stream, whatever the parallelism (the map is
order-preserving).

TensorFlow is imported on first use of `make_episodes` or `pretrain_dataset`, not with
this module. Without TensorFlow `make_episodes` returns the backend-agnostic
`mtl_keras.data.numpy_episodes.EpisodeSource` (same elements, numpy arrays).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from mtl_keras._tensorflow import import_tensorflow
from mtl_keras.data.episode_stream import EpisodeSampler, episode_labels, open_stream
from mtl_keras.data.split import ClassSplit

if TYPE_CHECKING:
    import tensorflow as tf

    from mtl_keras.data.numpy_episodes import EpisodeSource


def _tf(purpose: str = "the tf.data episode pipeline"):
    return import_tensorflow(purpose)


def tf_data_pipelines() -> bool:
    """Whether the library's own data paths (evaluation, the workflow) read `tf.data` pipelines:
    on the TensorFlow backend. On another backend (JAX) they read the same episodes as numpy
    arrays (`episode_source`) and pretraining batches from `pretrain_source`, with or without
    TensorFlow installed: one data path per backend."""
    import keras

    return keras.backend.backend() == "tensorflow"


_said_fallback = False


def make_episodes(
    split: ClassSplit,
    ways: int,
    shots: int,
    queries: int = 15,
    meta_batch_size: int = 1,
    num_batches: int | None = None,
    seed: int = 0,
    repeatable: bool = False,
    batch_source: Callable[[EpisodeSampler, int], Iterator[dict]] | None = None,
    hard_tasks=None,
    augment: Callable | None = None,
    num_parallel_calls: int | None = None,
    prefetch: int | None = 2,
) -> tf.data.Dataset | EpisodeSource:
    """An episodic `tf.data.Dataset` over ``split``.

    Each element is ``(inputs, query_labels)`` with::

        inputs["support_images"]: (B, N*K, H, W, C) float32 in [0, 1]
        inputs["support_labels"]: (B, N*K) int32 in 0..N-1
        inputs["query_images"]:   (B, N*Q, H, W, C) float32 in [0, 1]
        inputs["task_classes"]:   (B, N) int32 global class ids
        query_labels:             (B, N*Q) int32 in 0..N-1

    Args:
        split: a `ClassSplit` (in memory or file-backed).
        ways: ``N``, classes per task.
        shots: ``K``, support images per class.
        queries: ``Q``, query images per class.
        meta_batch_size: tasks per element ``B``.
        num_batches: elements per pass; ``None`` = endless (give
            ``steps_per_epoch`` to `fit`).
        seed: sampler seed. Same seed ⇒ same episodes.
        repeatable: if True every pass over the dataset yields the same episodes
            (for validation/test); if False (training) the stream continues across
            passes (epochs) instead of restarting. Task ``j`` of the stream is drawn
            with a generator seeded by ``(seed, j)``: the episodes do not depend on
            ``meta_batch_size``, and a stream resumes at any meta-batch (`EpisodeStream`).
        batch_source: advanced: a generator factory ``(sampler, B) → iterator of
            index dicts`` replacing plain random sampling (the hard-task schedule
            plugs in here).
        hard_tasks: a `HardTaskPool`; shorthand for
            ``batch_source=hard_tasks.batch_source`` (give one or the other). Then pass
            ``mtl_keras.callbacks.HardTaskMining(dataset)`` to ``fit``: it connects the model's
            failure reports to the pool.
        augment: optional function ``images (M, H, W, C) float32 → same`` applied to
            support and query images.
        num_parallel_calls: decode parallelism (default AUTOTUNE). Output order is
            deterministic either way.
        prefetch: elements to prefetch (None: no prefetch).

    Returns:
        A `tf.data.Dataset` as above, with an ``episode_stream`` attribute (an
        `EpisodeStream`: the position `ResumableCheckpoint` and `HardTaskMining` track so
        a resumed run continues the same stream). Where TensorFlow cannot be imported, the
        `EpisodeSource` of `episode_source` with the same arguments instead (the same
        elements as numpy arrays; ``num_parallel_calls`` and ``prefetch`` do not apply),
        with a warning, once per process.
    """
    try:
        tf = _tf("make_episodes' tf.data pipeline")
    except ImportError as err:
        from mtl_keras.data.numpy_episodes import episode_source

        global _said_fallback
        if not _said_fallback:
            _said_fallback = True
            warnings.warn(
                f"make_episodes: TensorFlow is not available ({err.__cause__ or err}), so it returns "
                "mtl_keras.data.episode_source(...) instead of a tf.data.Dataset: the same episodes "
                "as numpy arrays, a keras.utils.PyDataset for fit/evaluate on any backend. "
                "`pip install tensorflow` for the tf.data pipeline.",
                stacklevel=2,
            )
        return episode_source(
            split,
            ways,
            shots,
            queries,
            meta_batch_size=meta_batch_size,
            num_batches=num_batches,
            seed=seed,
            repeatable=repeatable,
            batch_source=batch_source,
            hard_tasks=hard_tasks,
            augment=augment,
        )
    B = int(meta_batch_size)
    stream = open_stream(split, ways, shots, queries, B, seed, batch_source, hard_tasks)

    def generate():
        # Meta-batch i is drawn from a generator seeded with (seed, i); the stream
        # stops without drawing one batch too many (a hard-task schedule counts draws).
        for batch in stream.batches(num_batches, repeatable):
            yield batch["task_classes"], batch["support_items"], batch["query_items"]

    signature = (
        tf.TensorSpec((B, ways), tf.int32),
        tf.TensorSpec((B, ways * shots), tf.int64),
        tf.TensorSpec((B, ways * queries), tf.int64),
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    load = _image_loader(split)
    support_labels = tf.constant(episode_labels(ways, shots, B))
    query_labels = tf.constant(episode_labels(ways, queries, B))

    # Plain TF ops, no Python control flow on tensors: nothing for AutoGraph to convert. Converting
    # re-reads this file's source, and when the file changed since import (an edit during a long
    # run) AutoGraph parses the wrong lines and warns "Cause: generators are not supported".
    @tf.autograph.experimental.do_not_convert
    def to_element(task_classes, support_items, query_items):
        support = load(support_items)
        query = load(query_items)
        if augment is not None:
            support = _apply_flat(augment, support)
            query = _apply_flat(augment, query)
        inputs = {
            "support_images": support,
            "support_labels": support_labels,
            "query_images": query,
            "task_classes": task_classes,
        }
        return inputs, query_labels

    ds = ds.map(
        to_element,
        num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE,
        deterministic=True,
    )
    if num_batches is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
    if prefetch:
        ds = ds.prefetch(prefetch)
    # A generator cannot be sharded by file: under MultiWorkerMirroredStrategy every
    # worker draws the same (seeded) meta-batches and keeps its replicas' share.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    # Resume/rewind handle (see `EpisodeStream`); `ResumableCheckpoint` and `HardTaskMining`
    # take the dataset and use it. Lost if the dataset is transformed further.
    ds.episode_stream = stream
    return ds


def _apply_flat(fn, images):
    tf = _tf()
    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[-1], shape[2:]], 0))
    return tf.reshape(fn(flat), shape)


def _image_loader(split: ClassSplit):
    """``items (...,) int64 → images (..., H, W, C) float32 in [0, 1]`` (TensorFlow ops)."""
    tf = _tf()
    h, w = split.image_size
    c = split.channels
    if not split.is_file_backed:
        pixels = tf.constant(split.images)

        def load(items):
            return tf.cast(tf.gather(pixels, items), tf.float32) / 255.0

        return load

    paths = tf.constant(split.paths)

    def decode(path):
        raw = tf.io.read_file(path)
        # Name the file when it is truncated or not an image (decode_image's own error does not).
        with tf.control_dependencies([_check_image_bytes(raw, path)]):
            raw = tf.identity(raw)
        # Grayscale, RGB and RGBA files mix freely: every file is decoded to `c` channels.
        image = tf.io.decode_image(raw, channels=c, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (h, w), antialias=True)
        return tf.clip_by_value(image, 0.0, 255.0) / 255.0

    def load(items):
        flat = tf.reshape(items, [-1])
        images = tf.map_fn(
            decode, tf.gather(paths, flat), fn_output_signature=tf.TensorSpec((h, w, c), tf.float32)
        )
        return tf.reshape(images, tf.concat([tf.shape(items), [h, w, c]], 0))

    return load


#: Bytes at the end of a file searched for the JPEG/PNG end marker.
_TAIL_BYTES = 4096


def _check_image_bytes(raw, path):
    """An assert op that fails, naming ``path``, when ``raw`` is not a complete image file.

    Checks the magic bytes (JPEG, PNG, GIF, BMP, WebP) and, for JPEG and PNG, the
    end-of-image marker near the end of the file: a truncated download fails here
    with the file's name instead of inside ``decode_image`` with an anonymous error.
    """
    tf = _tf()
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(raw, 0, 12), b"\0" * 12]), 0, 12)

    def starts(prefix):
        return tf.equal(tf.strings.substr(head, 0, len(prefix)), prefix)

    size = tf.strings.length(raw)
    tail = tf.strings.substr(raw, tf.maximum(size - _TAIL_BYTES, 0), _TAIL_BYTES)

    def has(marker):
        return tf.size(tf.strings.split(tail, sep=marker)) > 1

    webp = starts(b"RIFF") & tf.equal(tf.strings.substr(head, 8, 4), b"WEBP")
    complete = (
        (starts(b"\xff\xd8\xff") & has(b"\xff\xd9"))
        | (starts(b"\x89PNG\r\n\x1a\n") & has(b"IEND"))
        | starts(b"GIF8")
        | starts(b"BM")
        | webp
    )
    return tf.debugging.Assert(
        complete,
        [
            "Image file",
            path,
            "is truncated or not an image (JPEG/PNG/GIF/BMP/WebP). Replace or delete it; "
            "load the benchmark with verify='full' (CLI: --set verify=full) to find every such file before training.",
        ],
    )


def pretrain_dataset(
    split: ClassSplit,
    batch_size: int = 128,
    seed: int = 0,
    shuffle: bool = True,
    holdout: float = 0.0,
    epoch=None,
) -> tf.data.Dataset | tuple[tf.data.Dataset, tf.data.Dataset]:
    """``(images (b, H, W, C) float32 in [0, 1], labels (b,) int32)`` batches of a split.

    Labels are the split's local class indices ``0..C-1``.

    Args:
        split: the base classes.
        batch_size: images per batch.
        seed: shuffle seed (reshuffled each epoch, deterministically).
        shuffle: shuffle the images.
        holdout: fraction of each class's images held out; when > 0 returns
            ``(train_ds, holdout_ds)`` for monitoring pretraining.
        epoch: optional scalar int64 ``tf.Variable`` (`EpochSeeds` sets it at each epoch's
            start): then each pass's order is the permutation drawn from ``(seed, epoch)``
            (stateless `tf.random.experimental.index_shuffle`), not the next one of a
            generator, so a training resumed at epoch ``e`` sees epoch ``e``'s order — however
            often the dataset was iterated before (other passes, e.g. batch-norm
            re-estimation, read the order of the epoch they run in).

    Raises:
        ImportError: TensorFlow is not installed (this is a `tf.data` pipeline; `pretrain_source`
            gives the same batches as numpy arrays without it).
    """
    from mtl_keras.data.numpy_batches import holdout_items

    tf = _tf("pretrain_dataset's tf.data pipeline")
    train_items, held_items = holdout_items(split, seed, holdout)
    load = _image_loader(split)
    labels = tf.constant(split.labels.astype(np.int32))

    def build(items, shuffle_it):
        if shuffle_it and epoch is not None:
            table, last = tf.constant(items), len(items) - 1

            def pick(i):
                key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch.read_value(), tf.int64)])
                return tf.gather(table, tf.random.experimental.index_shuffle(i, key, last))

            ds = tf.data.Dataset.range(len(items)).map(pick)
        else:
            ds = tf.data.Dataset.from_tensor_slices(items)
            if shuffle_it:
                ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        ds = ds.map(lambda i: (load(i), tf.gather(labels, i)), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(2)

    train = build(train_items, shuffle)
    if holdout > 0:
        return train, build(held_items, False)
    return train
