"""Feedback: the model's reports, matched to the meta-batches the pipeline drew.

`select_failures` picks each task's failure class; `_FeedbackMixin` (a part of
`HardTaskPool`) keeps the drawn-but-unreported meta-batches (`_Drawn`, FIFO),
matches each report to one of them (`report`, `_match`; skipped ones are
orphans), holds the failures until their ``delay`` has passed (`_pool_received`,
late reports) and logs reports in arrival order for `rewind`.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np


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


class _FeedbackMixin:
    """The report side of `HardTaskPool`.

    Owns ``_pending`` (drawn `_Drawn` meta-batches, oldest first), ``_received``
    (``(serial, failures)`` reported but not yet pooled), ``_arrivals`` and
    ``_report_log`` (reports in arrival order). Also reads and writes the pool's
    ``_pool``, ``_counters``, failure statistics and binding.
    """

    def _reset_feedback(self) -> None:
        self._pending: collections.deque[_Drawn] = collections.deque()
        self._received: list[tuple[int, list]] = []  # (serial, [(class_id, items)]) not yet pooled
        # Reports in arrival order, kept while a drawn meta-batch's snapshot may need them.
        self._arrivals = 0
        self._report_log: collections.deque[tuple[int, int, list]] = collections.deque()

    @property
    def in_flight(self) -> int:
        """Drawn meta-batches whose report has not arrived yet."""
        with self._lock:
            return len(self._pending)

    def _remember(self, drawn: _Drawn) -> None:
        """Keep a drawn meta-batch until its report (the oldest is dropped beyond ``max_pending``)."""
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self._counters["dropped_pending"] += 1
        self._pending.append(drawn)

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

    def _prune_report_log(self) -> None:
        keep_after = (
            self._pending[0].before["arrivals"] if self._pending and self._pending[0].before else None
        )
        while self._report_log and (keep_after is None or self._report_log[0][0] <= keep_after):
            self._report_log.popleft()
