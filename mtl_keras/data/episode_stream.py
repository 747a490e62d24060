"""`EpisodeStream`: where a training episode stream stands, so it can be resumed exactly.

Task ``j`` of a `make_episodes` stream is drawn by a numpy generator seeded with
``(seed, j)`` (`EpisodeSampler.seek`), so meta-batch ``i`` (tasks ``i*B … i*B+B-1``)
is a pure function of the seed and the batch index — plus, with hard tasks, of the `HardTaskPool`'s
state, which the pool can rewind to any meta-batch it has drawn but not yet
seen trained. Resuming at meta-batch ``k`` is then `seek(k)`: no replay of the
``k`` batches before it.

Why a position at all: `tf.data` prefetches, so the generator runs a few
meta-batches ahead of training, and an iterator that is thrown away (Keras'
symbolic build under a `tf.distribute` strategy peeks one element; a second
`fit` call makes a new iterator) loses what it prefetched. The stream therefore
counts *trained* meta-batches (``trained``, kept by the callback `tracker`, which
`mtl_keras.callbacks.ResumableCheckpoint` and `mtl_keras.callbacks.HardTaskMining` run
for you) and every ``fit`` with such a callback starts the generator at ``trained``, not
at the number drawn. Without one, a second ``fit`` on the same dataset continues after the
meta-batches the first one *drew* (prefetched ones included): add
``episodes.episode_stream.tracker()`` to its callbacks to continue exactly.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator

import keras
import numpy as np

from mtl_keras.data.split import ClassSplit


class EpisodeSampler:
    """Draws N-way K-shot Q-query tasks from a `ClassSplit`.

    A task's support set is class-major: labels ``[0]*K + [1]*K + …``; the query
    set likewise with ``Q`` per class. Support and query images of a class are
    distinct items.

    Args:
        split: the classes to draw from.
        ways: ``N``; shots: ``K``; queries: ``Q``.
        seed: seed of the numpy generator.

    Raises:
        ValueError: at construction, naming the class, when a class has fewer than
            ``K + Q`` images or the split has fewer than ``N`` classes.
    """

    def __init__(self, split: ClassSplit, ways: int, shots: int, queries: int, seed: int = 0):
        split.check_episode_size(ways, shots, queries)
        self.split = split
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        # Entropy of the indexed stream (`seek`); drawn once when seed is None.
        self._entropy = np.random.SeedSequence(seed).entropy
        self._next_task = None  # index of the next task once `seek` was called

    def reset(self, seed: int | None = None) -> None:
        """Restart the stream (from ``seed``, default the constructor's)."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def seek(self, task_index: int) -> None:
        """Switch to the indexed stream, at task ``task_index``.

        From then on the ``j``-th task drawn (`sample_task`) uses a generator
        seeded with ``(seed, j)`` only, ``j = task_index, task_index + 1, …``:
        `make_episodes` seeks to ``i * B`` before meta-batch ``i``, so a stream can
        resume at any meta-batch without replaying the ones before it, and the
        tasks do not depend on how they are batched.
        """
        self._next_task = int(task_index)

    def sample_task(self, classes: np.ndarray | None = None, exclude: dict | None = None):
        """One task.

        Args:
            classes: local class indices to use (``N`` of them); drawn at random if None.
            exclude: optional ``{local class: item indices}`` not to draw (e.g. the
                images a failed task used, so hard tasks get fresh samples). When a
                class has fewer than ``shots + queries`` other images, all of them
                are used and topped up with excluded ones (as fresh as it can be).

        Returns:
            ``(classes (N,), support_items (N*K,), query_items (N*Q,))`` item indices.
        """
        if self._next_task is not None:
            self.rng = np.random.default_rng(
                np.random.SeedSequence(self._entropy, spawn_key=(self._next_task,))
            )
            self._next_task += 1
        if classes is None:
            classes = self.rng.choice(self.split.num_classes, self.ways, replace=False)
        classes = np.asarray(classes)
        need = self.shots + self.queries
        support, query = [], []
        for c in classes:
            items = self.split.items_of(int(c))
            fresh = np.setdiff1d(items, exclude[int(c)]) if exclude and int(c) in exclude else items
            if len(fresh) >= need:
                picked = self.rng.choice(fresh, need, replace=False)
            else:  # every fresh image, topped up with excluded ones
                reused = self.rng.choice(np.setdiff1d(items, fresh), need - len(fresh), replace=False)
                picked = self.rng.permutation(np.concatenate([fresh, reused]))
            support.append(picked[: self.shots])
            query.append(picked[self.shots :])
        return classes, np.concatenate(support), np.concatenate(query)

    def sample_batch(self, meta_batch_size: int) -> dict:
        """``meta_batch_size`` tasks as index arrays (see `make_episodes`)."""
        tasks = [self.sample_task() for _ in range(meta_batch_size)]
        return self._pack(tasks)

    def _pack(self, tasks) -> dict:
        classes = np.stack([t[0] for t in tasks])
        return {
            "task_classes": self.split.class_ids[classes].astype(np.int32),
            "support_items": np.stack([t[1] for t in tasks]),
            "query_items": np.stack([t[2] for t in tasks]),
        }


def episode_labels(ways: int, per_class: int, batch: int) -> np.ndarray:
    """The labels of ``batch`` class-major tasks: ``(batch, ways * per_class)`` int32, each row
    ``[0]*per_class + [1]*per_class + … + [ways-1]*per_class``."""
    return np.tile(np.repeat(np.arange(ways, dtype=np.int32), per_class), (batch, 1))


def open_stream(
    split,
    ways: int,
    shots: int,
    queries: int,
    meta_batch_size: int,
    seed: int,
    batch_source: Callable | None = None,
    hard_tasks=None,
) -> EpisodeStream:
    """The one constructor of an episode stream: an `EpisodeSampler` over ``split`` and its
    `EpisodeStream`. `make_episodes` (tf.data), `episode_source` (numpy) and evaluation's
    `draw_episodes` all start here, so the same arguments give the same tasks everywhere.

    Args:
        split: a `ClassSplit`.
        ways, shots, queries: ``N``, ``K``, ``Q``.
        meta_batch_size: tasks per meta-batch ``B``.
        seed: the sampler's seed (task ``j`` is drawn from ``(seed, j)``).
        batch_source: optional generator factory ``(sampler, B) → index dicts``.
        hard_tasks: a `HardTaskPool`, shorthand for ``batch_source=hard_tasks.batch_source``.

    Raises:
        ValueError: both ``batch_source`` and ``hard_tasks`` are given, or the split cannot
            hold an ``N``-way ``K + Q`` episode (the message names the class).
    """
    if hard_tasks is not None:
        if batch_source is not None:
            raise ValueError("Give `hard_tasks` or `batch_source`, not both.")
        batch_source = hard_tasks.batch_source
    sampler = EpisodeSampler(split, ways, shots, queries, seed=seed)
    return EpisodeStream(sampler, int(meta_batch_size), batch_source=batch_source, hard_tasks=hard_tasks)


class EpisodeStream:
    """The position of one episode pipeline (`make_episodes` attaches one as
    ``dataset.episode_stream``, `episode_source` as ``source.episode_stream``).

    Args:
        sampler: the pipeline's `EpisodeSampler`.
        meta_batch_size: tasks per meta-batch ``B``.
        batch_source: optional generator factory ``(sampler, B) → index dicts``.
        hard_tasks: the `HardTaskPool` behind ``batch_source``, if any (rewound with
            the stream).

    Attributes:
        next_index: the meta-batch the generator draws next.
        trained: meta-batches trained so far (updated by `tracker` during `fit`).
    """

    def __init__(self, sampler, meta_batch_size: int, batch_source: Callable | None = None, hard_tasks=None):
        self.sampler = sampler
        self.meta_batch_size = int(meta_batch_size)
        self.batch_source = batch_source
        owner = getattr(batch_source, "__self__", None)  # batch_source=pool.batch_source
        if hard_tasks is None and hasattr(owner, "rewind") and hasattr(owner, "get_state"):
            hard_tasks = owner
        self.hard_tasks = hard_tasks
        self.next_index = 0
        self.trained = 0
        self._generation = 0
        self._lock = threading.Lock()

    def batches(self, num_batches: int | None, repeatable: bool) -> Iterator[dict]:
        """One pass: index dicts for `make_episodes`' generator.

        A repeatable pass starts at meta-batch 0 every time; otherwise the pass
        continues at `next_index`. A pass made stale by a later `seek` stops.
        """
        with self._lock:
            generation = self._generation
            index = 0 if repeatable else self.next_index
        source = None
        count = 0
        while num_batches is None or count < num_batches:
            with self._lock:
                if not repeatable and generation != self._generation:
                    return  # an abandoned iterator: a newer pass owns the stream
                self.sampler.seek(index * self.meta_batch_size)
                if source is None:
                    source = (
                        self.batch_source(self.sampler, self.meta_batch_size)
                        if self.batch_source
                        else _random_batches(self.sampler, self.meta_batch_size)
                    )
                batch = next(source)
                index += 1
                if not repeatable:
                    self.next_index = index
            count += 1
            yield batch

    def seek(self, index: int, strict: bool = True) -> None:
        """Make the next pass start at meta-batch ``index`` (before the iterator is made).

        Rewinds the hard-task pool to the state it had before drawing meta-batch
        ``index`` (meta-batches drawn after it were never trained).

        Args:
            index: the meta-batch to draw next.
            strict: if False, a pool that cannot rewind that far only warns and the
                stream continues where it is (not exactly reproducible).

        Raises:
            ValueError: the pool cannot rewind that far (see `HardTaskPool.rewind`).
        """
        index = int(index)
        with self._lock:
            if index != self.next_index:
                if self.hard_tasks is not None:
                    try:
                        self.hard_tasks.rewind(index)
                    except ValueError as err:
                        if strict:
                            raise
                        warnings.warn(
                            f"EpisodeStream: {err} Continuing at meta-batch {self.next_index}.", stacklevel=2
                        )
                        self.trained = index = self.next_index
                elif self.batch_source is not None:
                    warnings.warn(
                        "EpisodeStream: a custom batch_source cannot be rewound; meta-batches "
                        f"{index}..{self.next_index - 1} will differ from an uninterrupted run.",
                        stacklevel=2,
                    )
            self.next_index = index
            self._generation += 1

    def get_state(self) -> dict:
        """JSON for a checkpoint: ``{"trained": k, "hard_tasks": pool state or None}``.

        The pool's state is taken as it was before meta-batch ``k`` was drawn
        (`HardTaskPool.get_state(upto=k)`), not the live state of the prefetched
        batches.
        """
        with self._lock:
            pool = None if self.hard_tasks is None else self.hard_tasks.get_state(upto=self.trained)
            return {"trained": int(self.trained), "hard_tasks": pool}

    def set_state(self, state: dict) -> None:
        """Restore `get_state`: the next pass starts at the saved ``trained`` meta-batch.

        Raises:
            ValueError: the state holds a hard-task pool but this stream has none,
                or the other way round.
        """
        pool = state.get("hard_tasks")
        if (pool is None) != (self.hard_tasks is None):
            raise ValueError(
                "EpisodeStream: the checkpoint was written "
                f"{'with' if pool is not None else 'without'} a HardTaskPool but this pipeline has "
                f"{'one' if self.hard_tasks is not None else 'none'}; build the episodes as in the "
                "interrupted run."
            )
        with self._lock:
            if pool is not None:
                self.hard_tasks.set_state(pool)
            self.trained = self.next_index = int(state["trained"])
            self._generation += 1

    def tracker(self) -> keras.callbacks.Callback:
        """A callback keeping ``trained`` up to date during `fit`.

        At ``fit`` start it rewinds the stream to ``trained`` (dropping what an
        earlier iterator or Keras' build peek prefetched); after every batch it
        records the number of meta-batches trained.
        """
        return _StreamTracker(self)


def _random_batches(sampler, batch: int):
    while True:
        yield sampler.sample_batch(batch)


class _StreamTracker(keras.callbacks.Callback):
    def __init__(self, stream: EpisodeStream):
        super().__init__()
        self.stream = stream
        self._epoch_start = 0

    def on_train_begin(self, logs=None):
        self.stream.seek(self.stream.trained, strict=False)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.stream.trained

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of the execution (steps_per_execution > 1 skips some).
        self.stream.trained = self._epoch_start + int(batch) + 1
