"""`PretrainSource`: the pretraining batches of `pretrain_dataset` as numpy arrays, without TensorFlow.

A `keras.utils.PyDataset`, so ``PretrainModel.fit(source)`` runs on every Keras backend (JAX in
particular, where TensorFlow may not be installed). It holds out the same images as
`pretrain_dataset` (the same per-class permutation of ``seed``) and decodes them as
`episode_source` does (numpy for in-memory splits, Pillow for files: `numpy_image_loader`).
The order of a shuffled pass is numpy's permutation of ``(seed, epoch)``, not TensorFlow's
``index_shuffle``: the same images each epoch, in another order than the `tf.data` pipeline.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from mtl_keras.data.numpy_episodes import numpy_image_loader
from mtl_keras.data.split import ClassSplit


class EpochNumber:
    """The epoch a `PretrainSource` draws its order from; `mtl_keras.callbacks.EpochSeeds` sets it.

    The numpy counterpart of `pretrain_dataset`'s ``epoch`` variable (a ``tf.Variable`` the
    `tf.data` graph reads): anything with ``assign(int)`` that ``int()`` reads works.
    """

    def __init__(self, value: int = 0):
        self.value = int(value)

    def assign(self, value) -> None:
        """Set the epoch (``EpochSeeds`` calls this at every epoch's start)."""
        self.value = int(np.asarray(value))

    def __int__(self) -> int:
        return self.value


def holdout_items(split: ClassSplit, seed: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train items, held-out items)`` of ``split``, each sorted ``(n,) int64``.

    Each class's images are permuted by one generator of ``seed`` (class by class, in class
    order) and its first ``round(holdout * count)`` held out: `pretrain_dataset` and
    `pretrain_source` hold out the same images.
    """
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in range(split.num_classes):
        items = rng.permutation(split.items_of(c))
        n_held = int(round(holdout * len(items)))
        held.append(items[:n_held])
        train.append(items[n_held:])
    return (
        np.sort(np.concatenate(train)).astype(np.int64),
        np.sort(np.concatenate(held)).astype(np.int64),
    )


def pretrain_source(
    split: ClassSplit,
    batch_size: int = 128,
    seed: int = 0,
    shuffle: bool = True,
    holdout: float = 0.0,
    epoch=None,
    workers: int = 1,
) -> PretrainSource | tuple[PretrainSource, PretrainSource]:
    """The batches of `pretrain_dataset` (same arguments) as a backend-agnostic `PretrainSource`.

    Each element is ``(images (b, H, W, C) float32 in [0, 1], labels (b,) int32)``; labels are
    the split's local class indices ``0..C-1``. Imports no TensorFlow.

    Args:
        split: the base classes (in memory or file-backed).
        batch_size: images per batch (the last batch of a pass may be smaller).
        seed: the hold-out and shuffle seed.
        shuffle: shuffle the training images (each pass: the permutation of ``(seed, epoch)``).
        holdout: fraction of each class's images held out; when > 0 returns
            ``(train, held_out)``, the held-out source unshuffled.
        epoch: an `EpochNumber` (or anything ``int()`` reads) that
            `mtl_keras.callbacks.EpochSeeds` sets at each epoch's start, so a resumed
            training replays the order of the epoch it resumes at. None: a pass ``p`` of the
            source (counted by the source itself) uses the permutation of ``(seed, p)``.
        workers: Keras loader threads (`keras.utils.PyDataset`).

    Returns:
        A `PretrainSource`, or ``(train, held_out)`` when ``holdout`` > 0.

    Example:
        >>> epoch = EpochNumber()
        >>> train, held = pretrain_source(split, batch_size=64, holdout=0.1, epoch=epoch)
        >>> model.fit(train, validation_data=held, epochs=10, callbacks=[EpochSeeds(epoch)])
    """
    train_items, held_items = holdout_items(split, seed, holdout)
    load = numpy_image_loader(split)
    labels = split.labels.astype(np.int32)
    common = dict(load=load, labels=labels, batch_size=batch_size, seed=seed, workers=workers)
    train = PretrainSource(train_items, shuffle=shuffle, epoch=epoch, **common)
    if holdout > 0:
        return train, PretrainSource(held_items, shuffle=False, **common)
    return train


class PretrainSource(keras.utils.PyDataset):
    """Batches of ``(images, labels)`` over fixed items of a split (made by `pretrain_source`).

    Batch ``i`` of a pass depends only on ``i`` and the pass' epoch, so Keras may read the
    batches in any order or from several threads.

    Args:
        items: ``(n,) int64`` the images of the split it serves.
        load: ``items (b,) → images (b, H, W, C) float32`` (`numpy_image_loader`).
        labels: ``(num_images,) int32`` every image's class.
        batch_size: images per batch.
        seed: the shuffle seed.
        shuffle: a new permutation of ``items`` per epoch.
        epoch: see `pretrain_source`.
        workers: Keras loader threads.
    """

    def __init__(self, items, load, labels, batch_size, seed=0, shuffle=True, epoch=None, workers=1):
        super().__init__(workers=int(workers), use_multiprocessing=False)
        if int(batch_size) < 1:
            raise ValueError(f"pretrain_source: batch_size must be >= 1, got {batch_size}.")
        self.items = np.asarray(items, dtype=np.int64)
        self.load = load
        self.labels = np.asarray(labels, dtype=np.int32)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = epoch
        self._passes = 0  # passes begun, the epoch when no ``epoch`` is given
        self._order_of: tuple[int, np.ndarray] | None = None

    @property
    def num_batches(self) -> int:
        """Batches per pass."""
        return math.ceil(len(self.items) / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def cardinality(self) -> int:
        """Batches per pass (the name `tf.data.Dataset` uses)."""
        return self.num_batches

    def order(self) -> np.ndarray:
        """``(n,) int64``: the items in this pass' order."""
        if not self.shuffle:
            return self.items
        epoch = int(self.epoch) if self.epoch is not None else self._passes
        if self._order_of is None or self._order_of[0] != epoch:
            rng = np.random.default_rng((self.seed, epoch))
            self._order_of = (epoch, self.items[rng.permutation(len(self.items))])
        return self._order_of[1]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = int(index)
        if not 0 <= index < self.num_batches:
            raise IndexError(f"PretrainSource index {index} out of range ({self.num_batches} batches).")
        chosen = self.order()[index * self.batch_size : (index + 1) * self.batch_size]
        return self.load(chosen), self.labels[chosen]

    def __iter__(self):
        for i in range(self.num_batches):
            yield self[i]
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        self._passes += 1
