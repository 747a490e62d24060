"""`HardTaskPool`: the hard-task (HT) meta-batch of meta-transfer learning.

After every training step the model reports, for each task of the meta-batch,
the query accuracy of each of its classes. The class with the lowest accuracy
is the task's *failure class*; the pool collects failure classes (as global
class ids) together with the images the failing task used for them, and the
episode pipeline then draws *hard tasks*: ``N`` classes taken from the pool,
with fresh support and query images (the failing task's images excluded).

The pool is the only link between data and model (`data` never imports
`models`); the callback `mtl_keras.callbacks.HardTaskMining` attaches it to a ``fit``
(the model reports to the pool, the stream counts trained meta-batches, each epoch logs)::

    pool = HardTaskPool(schedule="periodic", every=10, hard_batches=5, seed=0)
    episodes = make_episodes(train, ways=5, shots=1, queries=15, meta_batch_size=4,
                             hard_tasks=pool)          # the pipeline draws from it
    model.fit(episodes, steps_per_epoch=100, epochs=10, callbacks=[HardTaskMining(episodes)])

Schedules:

* ``"periodic"`` (the paper's HT meta-batch): after every ``every`` normal
  meta-batches, as soon as the pool holds at least ``N`` distinct classes, emit
  ``hard_batches`` meta-batches made only of hard tasks, then start a new round
  with an empty pool: the hard meta-batches draw from the pool as it stood when
  the round began, and only failures pooled after that feed the next round (each
  failure serves one round; nothing stale is reused). If the pool holds fewer than
  ``N`` classes when a round is due, normal meta-batches continue (and failures
  keep accumulating) until it does.
* ``"mixed"``: once the pool holds at least ``N`` classes, each meta-batch carries
  a fraction ``hard_fraction`` of hard tasks (a deterministic running credit, so
  ``hard_fraction * B`` need not be an integer: with ``B=4`` and ``0.1`` every
  2nd or 3rd meta-batch carries one). The pool is a sliding window over the
  ``window`` most recent failures (default: as many as one periodic round collects).

Feedback lag. The generator runs ahead of training: `tf.data` prefetches, so
when the model reports on meta-batch ``s`` the generator has already drawn a few
more. Reports are matched to drawn meta-batches in FIFO order (each report
belongs to the oldest drawn meta-batch not yet reported; its ``task_classes``
must match — drawn meta-batches skipped on the way, e.g. prefetched elements
dropped with a discarded iterator, are *orphans*: never trained, never reported).
The number of drawn-but-unreported meta-batches is bounded by the pipeline's
buffers: at most ``prefetch + num_parallel_calls + 1`` (prefetch buffer, parallel
map in flight, the one being trained; measured exactly so in `fit`). With
`make_episodes`' defaults (``prefetch=2``, AUTOTUNE map, whose parallelism is at
most the number of CPU cores) that is 5 on 2 cores. ``stats()["max_in_flight"]``
records the largest value seen.

To keep the stream independent of thread timing, the failures reported for
meta-batch ``s`` enter the pool exactly when meta-batch ``s + delay`` is drawn
(default ``delay=5``). That is exact whenever ``delay`` is at least the lag bound
above; a report arriving later is still used, at the next draw, and counted in
``stats()["late_reports"]`` — raise ``delay`` (or give `make_episodes` an explicit
``num_parallel_calls``) if it is not 0 and you need reproducible runs.

Reference:
    Sun et al., "Meta-Transfer Learning through Hard Tasks", TPAMI 2020, §4.3
    (and "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Iterator

import numpy as np

SCHEDULES = ("periodic", "mixed")
WEIGHTINGS = ("frequency", "uniform")
_STATE_VERSION = 1


def select_failures(class_accuracy: np.ndarray) -> np.ndarray:
    """The failure class of each task: its class with the lowest query accuracy.

    Ties go to the lowest position in the task (``np.argmin`` keeps the first
    minimum), so the choice is deterministic. A task whose classes are all
    classified perfectly (minimum accuracy 1) has no failure class: it would
    otherwise contribute an arbitrary class (position 0) to the pool.

    Args:
        class_accuracy: ``(B, N)`` float, query accuracy of each class of each task.

    Returns:
        ``(B,)`` int: the position ``0..N-1`` of each task's failure class, ``-1``
        for a task without failure.
    """
    acc = np.asarray(class_accuracy, dtype=np.float64)
    if acc.ndim != 2:
        raise ValueError(f"class_accuracy must be (B, N), got shape {acc.shape}.")
    positions = np.argmin(acc, axis=1)
    positions[acc.min(axis=1) >= 1.0] = -1
    return positions


@dataclasses.dataclass
class _Drawn:
    """A meta-batch the generator drew and the model has not yet reported on."""

    serial: int
    task_classes: np.ndarray  # (B, N) global class ids
    support_items: np.ndarray  # (B, N*K)
    query_items: np.ndarray  # (B, N*Q)
    is_hard: np.ndarray  # (B,) bool
    before: dict | None = None  # the draw-side state just before this draw (for `rewind`)


#: Counters that belong to the drawing side (rewound with it); the others count reports.
_DRAW_COUNTERS = ("batches_drawn", "hard_tasks_drawn", "hard_rounds", "failures_pooled", "dropped_pending")


class HardTaskPool:
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
        schedule: ``"periodic"`` or ``"mixed"`` (see the module doc).
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
            feedback lag (module doc) gives a timing-independent stream.
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
        self._pending: collections.deque[_Drawn] = collections.deque()
        self._received: list[tuple[int, list]] = []  # (serial, [(class_id, items)]) not yet pooled
        self._pool: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        # Schedule state.
        self._normal_since_round = 0
        self._hard_left = 0
        self._round: list[tuple[int, np.ndarray]] = []  # the pool snapshot a hard round draws from
        self._credit = 0.0
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
        # Reports in arrival order, kept while a drawn meta-batch's snapshot may need them.
        self._arrivals = 0
        self._report_log: collections.deque[tuple[int, int, list]] = collections.deque()

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

    @property
    def resolved_window(self) -> int | None:
        """Failures the pool keeps (``window`` or its schedule's default, see class doc)."""
        if self.window is not None:
            return self.window
        if self._meta_batch_size is None:
            return None
        rounds = 1 if self.schedule == "mixed" else 10
        return rounds * self.every * self._meta_batch_size

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
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self._counters["dropped_pending"] += 1
        self._pending.append(
            _Drawn(t, batch["task_classes"], batch["support_items"], batch["query_items"], is_hard, before)
        )
        self._serial += 1
        counters = self._counters
        counters["batches_drawn"] += 1
        counters["hard_tasks_drawn"] += num_hard
        counters["max_in_flight"] = max(counters["max_in_flight"], len(self._pending))
        return batch

    def _plan(self, B: int) -> tuple[int, list]:
        """How many of the next meta-batch's tasks are hard, and the failures to draw from."""
        ways = self._sampler.ways
        if self.schedule == "periodic":
            if (
                self._hard_left == 0
                and self._normal_since_round >= self.every
                and self._num_classes(self._pool) >= ways
            ):
                # A new round: it draws from the failures pooled so far; the pool restarts empty.
                self._round = list(self._pool)
                self._pool.clear()
                self._hard_left = self.hard_batches
                self._counters["hard_rounds"] += 1
            if self._hard_left > 0:
                self._hard_left -= 1
                source = self._round
                if self._hard_left == 0:
                    self._round = []
                    self._normal_since_round = 0
                return B, source
            self._normal_since_round += 1
            return 0, []
        # Mixed.
        if self._num_classes(self._pool) < ways:
            return 0, []
        self._credit += self.hard_fraction * B
        num_hard = min(B, int(math.floor(self._credit + 1e-9)))
        self._credit -= num_hard
        return num_hard, list(self._pool)

    @staticmethod
    def _num_classes(failures) -> int:
        return len({c for c, _ in failures})

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

    def _pool_received(self, upto: int) -> None:
        """Move the failures reported on meta-batches ``<= upto`` into the pool."""
        if not self._received:
            return
        self._received.sort(key=lambda r: r[0])
        keep = []
        for serial, failures in self._received:
            if serial > upto:
                keep.append((serial, failures))
                continue
            self._pool.extend(failures)
            self._counters["failures_pooled"] += len(failures)
        self._received = keep
        window = self.resolved_window
        while window is not None and len(self._pool) > window:
            self._pool.popleft()

    # ----------------------------------------------------------------- model side
    def report(self, task_classes: np.ndarray, class_accuracy: np.ndarray) -> None:
        """Record the outcome of one trained meta-batch (called by the model).

        The report is matched to the oldest drawn, not yet reported meta-batch
        whose ``task_classes`` equal these (FIFO; drawn meta-batches skipped on the
        way are orphans — never trained). A report matching no drawn meta-batch
        (a pipeline not fed by this pool) still pools its failure classes, without
        image exclusion.

        Args:
            task_classes: ``(B, N)`` int global class ids of the tasks.
            class_accuracy: ``(B, N)`` float query accuracy of each class.
        """
        task_classes = np.asarray(task_classes).astype(np.int64)
        class_accuracy = np.asarray(class_accuracy)
        if task_classes.ndim != 2 or task_classes.shape != class_accuracy.shape:
            raise ValueError(
                "report expects task_classes and class_accuracy of the same shape (B, N), "
                f"got {task_classes.shape} and {class_accuracy.shape}."
            )
        positions = select_failures(class_accuracy)
        with self._lock:
            drawn = self._match(task_classes)
            counters = self._counters
            failures = []
            for b, pos in enumerate(positions):
                hard = bool(drawn.is_hard[b]) if drawn is not None else False
                counters["tasks_reported"] += 1
                if hard:
                    counters["hard_tasks_reported"] += 1
                    self._epoch_hard_tasks += 1
                if pos < 0:
                    continue
                class_id = int(task_classes[b, pos])
                self._failures[class_id] += 1
                self._epoch_failures[class_id] += 1
                if hard and not self.pool_hard_failures:
                    continue
                if self._local is not None and class_id not in self._local:
                    continue  # a class of another split: no hard task can use it
                failures.append((class_id, self._items_of(drawn, b, int(pos))))
            if drawn is None:
                counters["unmatched_reports"] += 1
                serial = -1
            else:
                serial = drawn.serial
                # Its failures were due when meta-batch `serial + delay` was drawn.
                if self.delay and self._serial > serial + self.delay:
                    counters["late_reports"] += 1
            self._received.append((serial, failures))
            self._arrivals += 1
            self._report_log.append((self._arrivals, serial, failures))
            self._prune_report_log()

    # ----------------------------------------------------------------- rewind
    def _draw_state(self) -> dict:
        """The state the drawing side reads and writes (snapshotted before every draw)."""
        return {
            "serial": self._serial,
            "pool": list(self._pool),
            "received": list(self._received),
            "round": list(self._round),
            "normal_since_round": self._normal_since_round,
            "hard_left": self._hard_left,
            "credit": self._credit,
            "rng": self.rng.bit_generator.state,
            "counters": {k: self._counters[k] for k in _DRAW_COUNTERS},
            "arrivals": self._arrivals,
        }

    def _draw_state_at(self, serial: int) -> dict:
        """The draw-side state as if only meta-batches ``< serial`` had been drawn.

        That is the snapshot taken before drawing ``serial``, plus every report that
        arrived after it (all of them belong to trained meta-batches ``< serial``).
        """
        if serial == self._serial:
            return self._draw_state()
        if serial > self._serial:
            raise ValueError(
                f"HardTaskPool cannot move forward to meta-batch {serial}: only {self._serial} were drawn."
            )
        drawn = next((d for d in self._pending if d.serial == serial and d.before is not None), None)
        if drawn is None:
            raise ValueError(
                f"HardTaskPool cannot rewind to meta-batch {serial}: its state is no longer held "
                f"(the pool keeps the last {self.max_pending} drawn, unreported meta-batches). "
                "Restore it from a checkpoint instead (set_state)."
            )
        state = dict(drawn.before)
        later = [(s, f) for n, s, f in self._report_log if n > state["arrivals"] and s < serial]
        state["received"] = list(state["received"]) + later
        return state

    def rewind(self, serial: int) -> None:
        """Forget the meta-batches drawn from ``serial`` on (prefetched, never trained).

        The drawing side (pool, schedule, class-choice generator, draw counters)
        returns to its state before meta-batch ``serial`` was drawn; the reports
        received so far are kept. `EpisodeStream.seek` calls this so that a new
        iterator (a resumed or second `fit`) draws exactly what an uninterrupted
        run would have.

        Raises:
            ValueError: ``serial`` is ahead of the draws, or too far back (its
                snapshot was dropped, see ``max_pending``).
        """
        with self._lock:
            state = self._draw_state_at(int(serial))
            self._serial = int(state["serial"])
            self._pool = collections.deque(state["pool"])
            self._received = list(state["received"])
            self._round = list(state["round"])
            self._normal_since_round = int(state["normal_since_round"])
            self._hard_left = int(state["hard_left"])
            self._credit = float(state["credit"])
            self.rng.bit_generator.state = state["rng"]
            self._counters.update(state["counters"])
            self._pending = collections.deque(d for d in self._pending if d.serial < self._serial)
            self._prune_report_log()

    def _prune_report_log(self) -> None:
        keep_after = (
            self._pending[0].before["arrivals"] if self._pending and self._pending[0].before else None
        )
        while self._report_log and (keep_after is None or self._report_log[0][0] <= keep_after):
            self._report_log.popleft()

    def _match(self, task_classes: np.ndarray) -> _Drawn | None:
        for i, drawn in enumerate(self._pending):
            if drawn.task_classes.shape == task_classes.shape and np.array_equal(
                drawn.task_classes, task_classes
            ):
                for _ in range(i):
                    self._pending.popleft()
                    self._counters["orphans"] += 1
                return self._pending.popleft()
        return None

    def _items_of(self, drawn: _Drawn | None, task: int, position: int) -> np.ndarray:
        """Item indices task ``task`` of ``drawn`` used for its class at ``position``."""
        if drawn is None:
            return np.zeros(0, dtype=np.int64)
        k, q = self._sampler.shots, self._sampler.queries
        support = drawn.support_items[task, position * k : (position + 1) * k]
        query = drawn.query_items[task, position * q : (position + 1) * q]
        return np.concatenate([support, query]).astype(np.int64)

    # ----------------------------------------------------------------- inspection
    @property
    def in_flight(self) -> int:
        """Drawn meta-batches whose report has not arrived yet."""
        with self._lock:
            return len(self._pending)

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

    # ----------------------------------------------------------------- state
    def _config(self) -> dict:
        return {
            "schedule": self.schedule,
            "every": self.every,
            "hard_batches": self.hard_batches,
            "hard_fraction": self.hard_fraction,
            "window": self.window,
            "delay": self.delay,
            "weighting": self.weighting,
            "pool_hard_failures": self.pool_hard_failures,
        }

    def get_state(self, upto: int | None = None) -> dict:
        """A JSON-serialisable snapshot, for checkpoints.

        Holds the configuration (checked by `set_state`), the pool, the failures
        reported but not yet pooled, the schedule position, the statistics and the
        class-choice generator's state. Drawn-but-unreported meta-batches are left
        out: after a restart they are never trained.

        Args:
            upto: the number of meta-batches trained. The generator runs ahead of
                training (prefetch), so the live drawing state belongs to batches
                never trained; with ``upto`` the snapshot holds the drawing state
                from before meta-batch ``upto`` was drawn (see `rewind`), which is
                what a resumed run must continue from. None: the live state.

        Returns:
            A dict of lists, ints, floats, strings and None.
        """

        def failures(records):
            return [[int(c), [int(i) for i in items]] for c, items in records]

        def counter(c):
            return [[int(k), int(v)] for k, v in sorted(c.items())]

        with self._lock:
            draw = self._draw_state() if upto is None else self._draw_state_at(int(upto))
            return {
                "version": _STATE_VERSION,
                "config": self._config(),
                "bound_to": None if self._split_signature is None else dict(self._split_signature),
                "serial": draw["serial"],
                "pool": failures(draw["pool"]),
                "received": [[int(s), failures(f)] for s, f in draw["received"]],
                "normal_since_round": draw["normal_since_round"],
                "hard_left": draw["hard_left"],
                "round": failures(draw["round"]),
                "credit": float(draw["credit"]),
                "counters": {k: int(v) for k, v in {**self._counters, **draw["counters"]}.items()},
                "failures": counter(self._failures),
                "epoch_failures": counter(self._epoch_failures),
                "epoch_hard_tasks": int(self._epoch_hard_tasks),
                "hard_tasks_per_epoch": [int(n) for n in self.hard_tasks_per_epoch],
                "rng": _jsonable(draw["rng"]),
            }

    def set_state(self, state: dict) -> None:
        """Restore a `get_state` snapshot (e.g. after ``json.loads``).

        Raises:
            ValueError: when the snapshot comes from a pool configured differently
                or from another state format.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"Unknown HardTaskPool state version {state.get('version')!r}.")
        config = dict(state["config"])
        if config != self._config():
            raise ValueError(f"HardTaskPool state was saved with {config}, this pool is {self._config()}.")

        def failures(records):
            return [(int(c), np.asarray(items, dtype=np.int64)) for c, items in records]

        with self._lock:
            self._reset_dynamic_state()
            bound = state.get("bound_to")
            if bound is not None:
                if self._split_signature is not None and self._split_signature != bound:
                    raise ValueError(
                        f"HardTaskPool state is bound to {bound}, this pool to {self._split_signature}."
                    )
                self._split_signature = dict(bound)
            self._serial = int(state["serial"])
            self._pool.extend(failures(state["pool"]))
            self._received = [(int(s), failures(f)) for s, f in state["received"]]
            self._normal_since_round = int(state["normal_since_round"])
            self._hard_left = int(state["hard_left"])
            self._round = failures(state["round"])
            self._credit = float(state["credit"])
            self._counters.update({k: int(v) for k, v in state["counters"].items()})
            self._failures = collections.Counter({int(k): int(v) for k, v in state["failures"]})
            self._epoch_failures = collections.Counter({int(k): int(v) for k, v in state["epoch_failures"]})
            self._epoch_hard_tasks = int(state["epoch_hard_tasks"])
            self.hard_tasks_per_epoch = [int(n) for n in state["hard_tasks_per_epoch"]]
            self.rng.bit_generator.state = state["rng"]

    def __repr__(self) -> str:
        return (
            f"HardTaskPool(schedule={self.schedule!r}, every={self.every}, "
            f"hard_batches={self.hard_batches}, hard_fraction={self.hard_fraction}, "
            f"pool_size={len(self._pool)}, delay={self.delay})"
        )


def _jsonable(value):
    """numpy scalars/arrays inside nested dicts/lists → plain Python."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
