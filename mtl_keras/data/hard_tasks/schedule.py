"""The hard-task schedule: when a meta-batch carries hard tasks, and how many.

`_ScheduleMixin` (a part of `HardTaskPool`) holds the schedule's position — the
normal meta-batches since the last periodic round, the hard meta-batches left in
the current round and the failures that round draws from, the mixed schedule's
running credit — and plans each meta-batch from it (`_plan`).
"""

from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("periodic", "mixed")
WEIGHTINGS = ("frequency", "uniform")


class _ScheduleMixin:
    """The schedule part of `HardTaskPool` (see the package doc for the two schedules).

    Reads the pool's configuration (``schedule``, ``every``, ``hard_batches``,
    ``hard_fraction``, ``window``), its binding (``_sampler``, ``_meta_batch_size``),
    the pooled failures ``_pool`` (a periodic round takes them) and ``_counters``.
    `_plan` runs with the pool's lock held.
    """

    def _reset_schedule(self) -> None:
        self._normal_since_round = 0
        self._hard_left = 0
        self._round: list[tuple[int, np.ndarray]] = []  # the pool snapshot a hard round draws from
        self._credit = 0.0

    @property
    def resolved_window(self) -> int | None:
        """Failures the pool keeps (``window`` or its schedule's default, see class doc)."""
        if self.window is not None:
            return self.window
        if self._meta_batch_size is None:
            return None
        rounds = 1 if self.schedule == "mixed" else 10
        return rounds * self.every * self._meta_batch_size

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
