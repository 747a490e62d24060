"""The pool: `HardTaskPool`, the public class, and how it draws its meta-batches.

`HardTaskPool` is made of the schedule (`schedule.py`), the feedback matching
(`feedback.py`) and the snapshots (`state.py`); this module holds its
configuration, its binding to a pipeline's split, the draws (normal tasks from
the sampler, hard tasks from pooled failure classes with fresh images) and the
inspection methods. The schedules and the feedback lag are described in the
package doc (`mtl_keras.data.hard_tasks`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator

import numpy as np

from mtl_keras.data.hard_tasks.feedback import _Drawn, _FeedbackMixin
from mtl_keras.data.hard_tasks.schedule import SCHEDULES, WEIGHTINGS, _ScheduleMixin
from mtl_keras.data.hard_tasks.state import _StateMixin


class HardTaskPool(_ScheduleMixin, _FeedbackMixin, _StateMixin):
    """Failure classes reported by the model, and the hard tasks drawn from them.

    One object is shared by the pipeline (``make_episodes(..., hard_tasks=pool)``
    or ``batch_source=pool.batch_source``) and the model
    (``model.task_feedback = pool``). `report` runs in the TensorFlow runtime
    thread (via ``tf.numpy_function``) while the generator runs in a `tf.data`
    thread; a lock guards all state.

    Hard tasks draw their ``N`` classes from the pooled failure classes without
    replacement, with probability proportional to how often each class failed
    (``weighting="frequency"``, the default: the classes the model fails on most
    get the most practice) or uniformly over the distinct classes
    (``weighting="uniform"``). Their support and query images avoid every image
    that a pooled failing task used for that class (when the class has enough
    other images; otherwise the class's whole image list is used, see
    `EpisodeSampler.sample_task`). Normal tasks are drawn exactly as
    `EpisodeSampler.sample_batch` does, so without failures the stream is the
    plain episode stream of the same sampler seed.

    Args:
        schedule: ``"periodic"`` or ``"mixed"`` (see the package doc).
        every: periodic: normal meta-batches between hard rounds (paper: 10).
        hard_batches: periodic: hard meta-batches per round (paper: 5).
        hard_fraction: mixed: fraction of the tasks of a meta-batch that are hard.
        window: failures the pool keeps, the most recent (older ones are dropped).
            Mixed: default ``every * meta_batch_size``, the failures one periodic
            round collects. Periodic: default ``10 * every * meta_batch_size``, only
            a memory bound for when the failures stay on fewer than ``N`` classes
            and no round can start.
        delay: reports on meta-batch ``s`` enter the pool when meta-batch
            ``s + delay`` is drawn (0: as soon as they arrive, which makes the
            stream depend on thread timing in `fit`). At least the pipeline's
            feedback lag (package doc) gives a timing-independent stream.
        weighting: ``"frequency"`` or ``"uniform"`` choice of hard classes.
        pool_hard_failures: also pool the failures of hard tasks. Off by default:
            a hard task's classes all come from the pool, so its failure would
            feed the pool with itself.
        max_pending: drawn-but-unreported meta-batches remembered (oldest dropped
            beyond it, e.g. when the pool is used without ``model.task_feedback``).
        seed: seed of the numpy generator that picks hard classes. The images come
            from the sampler's own generator (``make_episodes(seed=...)``).

    Example:
        >>> pool = HardTaskPool(schedule="periodic", every=10, hard_batches=5, seed=0)
        >>> episodes = make_episodes(split, 5, 1, 15, meta_batch_size=4, hard_tasks=pool)
        >>> model.fit(episodes, steps_per_epoch=100, callbacks=[HardTaskMining(episodes)])

    Reference:
        Sun et al., "Meta-Transfer Learning through Hard Tasks", TPAMI 2020, §4.3.
    """

    def __init__(
        self,
        schedule: str = "periodic",
        every: int = 10,
        hard_batches: int = 5,
        hard_fraction: float = 0.25,
        window: int | None = None,
        delay: int = 5,
        weighting: str = "frequency",
        pool_hard_failures: bool = False,
        max_pending: int = 256,
        seed: int = 0,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
        if every < 1 or hard_batches < 1:
            raise ValueError(f"every and hard_batches must be >= 1, got {every} and {hard_batches}.")
        if not 0.0 < hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must lie in (0, 1], got {hard_fraction}.")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}.")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}.")
        self.schedule = schedule
        self.every = int(every)
        self.hard_batches = int(hard_batches)
        self.hard_fraction = float(hard_fraction)
        self.window = None if window is None else int(window)
        self.delay = int(delay)
        self.weighting = weighting
        self.pool_hard_failures = bool(pool_hard_failures)
        self.max_pending = int(max_pending)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        # Bound by the first `batch_source` call.
        self._sampler = None
        self._local = None  # global class id -> local class index
        self._names = {}
        self._split_signature = None
        self._meta_batch_size = None
        self._reset_dynamic_state()

    def _reset_dynamic_state(self) -> None:
        self._serial = 0  # serial of the next meta-batch drawn
        self._pool: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._reset_feedback()
        self._reset_schedule()
        # Statistics.
        self._counters = dict.fromkeys(
            (
                "batches_drawn",
                "hard_tasks_drawn",
                "hard_rounds",
                "tasks_reported",
                "hard_tasks_reported",
                "failures_pooled",
                "orphans",
                "unmatched_reports",
                "late_reports",
                "dropped_pending",
                "max_in_flight",
            ),
            0,
        )
        self._failures = collections.Counter()  # class id -> failures reported, all time
        self._epoch_failures = collections.Counter()
        self._epoch_hard_tasks = 0
        self.hard_tasks_per_epoch: list[int] = []

    # ----------------------------------------------------------------- pipeline side
    def batch_source(self, sampler, meta_batch_size: int) -> Iterator[dict]:
        """The generator factory `make_episodes` plugs in (``batch_source=``).

        Args:
            sampler: the `EpisodeSampler` of the pipeline; the pool binds to its
                split (global class ids, names) and episode size on the first call.
            meta_batch_size: ``B``.

        Returns:
            An endless iterator of index dicts: ``task_classes (B, N) int32`` global
            class ids, ``support_items (B, N*K) int64``, ``query_items (B, N*Q) int64``,
            and ``is_hard (B,) bool`` (which tasks are hard).

        Raises:
            ValueError: when called again with a different split or episode size.
        """
        with self._lock:
            self._bind(sampler, int(meta_batch_size))
        return self._batches(sampler, int(meta_batch_size))

    def _bind(self, sampler, meta_batch_size: int) -> None:
        split = sampler.split
        signature = {
            "split": split.name,
            "num_classes": int(split.num_classes),
            "num_images": int(split.num_images),
            "ways": sampler.ways,
            "shots": sampler.shots,
            "queries": sampler.queries,
            "meta_batch_size": meta_batch_size,
        }
        if self._split_signature is not None and self._split_signature != signature:
            raise ValueError(
                "HardTaskPool is bound to episodes "
                f"{self._split_signature} and cannot serve {signature}: its pooled images "
                "index one split. Use one pool per training pipeline."
            )
        self._split_signature = signature
        self._sampler = sampler
        self._meta_batch_size = meta_batch_size
        ids = [int(c) for c in split.class_ids]
        self._local = {c: i for i, c in enumerate(ids)}
        self._names = dict(zip(ids, split.class_names))

    @property
    def ways(self) -> int | None:
        """``N`` of the bound pipeline (None before `batch_source` is called)."""
        return None if self._sampler is None else self._sampler.ways

    def _batches(self, sampler, meta_batch_size: int) -> Iterator[dict]:
        while True:
            with self._lock:
                batch = self._draw(sampler, meta_batch_size)
            yield batch

    def _draw(self, sampler, B: int) -> dict:
        t = self._serial
        before = self._draw_state()
        self._pool_received(upto=t - self.delay)
        num_hard, source = self._plan(B)
        tasks, is_hard = [], np.zeros(B, dtype=bool)
        for i in range(B):
            if i < num_hard:
                tasks.append(self._hard_task(sampler, source))
                is_hard[i] = True
            else:
                tasks.append(sampler.sample_task())
        class_ids = sampler.split.class_ids
        batch = {
            "task_classes": np.stack([class_ids[task[0]] for task in tasks]).astype(np.int32),
            "support_items": np.stack([task[1] for task in tasks]).astype(np.int64),
            "query_items": np.stack([task[2] for task in tasks]).astype(np.int64),
            "is_hard": is_hard,
        }
        self._remember(
            _Drawn(t, batch["task_classes"], batch["support_items"], batch["query_items"], is_hard, before)
        )
        self._serial += 1
        counters = self._counters
        counters["batches_drawn"] += 1
        counters["hard_tasks_drawn"] += num_hard
        counters["max_in_flight"] = max(counters["max_in_flight"], len(self._pending))
        return batch

    def _hard_task(self, sampler, failures: list):
        counts = collections.Counter(c for c, _ in failures)
        classes = np.array(sorted(counts))
        if self.weighting == "frequency":
            p = np.array([counts[c] for c in classes], dtype=np.float64)
            p /= p.sum()
        else:
            p = None
        chosen = self.rng.choice(classes, sampler.ways, replace=False, p=p)
        used = collections.defaultdict(list)
        for c, items in failures:
            used[c].append(items)
        local = [self._local[int(c)] for c in chosen]
        exclude = {
            self._local[int(c)]: np.unique(np.concatenate(used[int(c)])) for c in chosen if used[int(c)]
        }
        return sampler.sample_task(classes=np.array(local), exclude=exclude)

    # ----------------------------------------------------------------- inspection
    def pooled_classes(self) -> dict[int, int]:
        """``{global class id: failures in the pool}`` (what hard tasks draw from now)."""
        with self._lock:
            return dict(sorted(collections.Counter(c for c, _ in self._pool).items()))

    def class_name(self, class_id: int) -> str:
        """Name of a global class id (``str(class_id)`` before binding)."""
        return self._names.get(int(class_id), str(int(class_id)))

    def most_frequent(self, k: int = 5, epoch: bool = False) -> list[tuple[int, str, int]]:
        """The classes reported as failure classes most often.

        Args:
            k: how many.
            epoch: count the current epoch only (see `end_epoch`) instead of all time.

        Returns:
            Up to ``k`` ``(class_id, class_name, count)``, most frequent first (ties:
            lower class id first).
        """
        with self._lock:
            return self._top(self._epoch_failures if epoch else self._failures, k)

    def _top(self, counts: collections.Counter, k: int) -> list[tuple[int, str, int]]:
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [(int(c), self.class_name(c), int(n)) for c, n in top]

    def failure_counts(self) -> dict[int, int]:
        """``{global class id: times reported as failure class}``, all time."""
        with self._lock:
            return dict(sorted(self._failures.items()))

    def stats(self) -> dict:
        """Counters: ``batches_drawn``, ``hard_tasks_drawn``, ``hard_rounds``,
        ``tasks_reported``, ``hard_tasks_reported``, ``failures_pooled``, ``orphans``,
        ``unmatched_reports``, ``late_reports``, ``dropped_pending``,
        ``max_in_flight``, plus ``in_flight`` and ``pool_size`` now."""
        with self._lock:
            return {**self._counters, "in_flight": len(self._pending), "pool_size": len(self._pool)}

    def end_epoch(self, top_k: int = 5) -> dict:
        """Close an epoch (the `HardTaskLogger` calls this at each epoch end).

        Hard tasks are counted when the model reports on them, i.e. when they are
        trained, so prefetched meta-batches of the next epoch do not count.

        Args:
            top_k: how many of the epoch's most frequent failure classes to return.

        Returns:
            ``{"hard_tasks": hard tasks trained this epoch, "top": the epoch's
            most_frequent(top_k)}``; the count is appended to
            ``hard_tasks_per_epoch`` and the epoch counters restart.
        """
        with self._lock:
            top = self._top(self._epoch_failures, top_k)
            count = self._epoch_hard_tasks
            self.hard_tasks_per_epoch.append(count)
            self._epoch_hard_tasks = 0
            self._epoch_failures = collections.Counter()
        return {"hard_tasks": count, "top": top}

    def __repr__(self) -> str:
        return (
            f"HardTaskPool(schedule={self.schedule!r}, every={self.every}, "
            f"hard_batches={self.hard_batches}, hard_fraction={self.hard_fraction}, "
            f"pool_size={len(self._pool)}, delay={self.delay})"
        )
