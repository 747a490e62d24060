"""State: `HardTaskPool` snapshots for checkpoints (`get_state` / `set_state`) and `rewind`.

`_StateMixin` (a part of `HardTaskPool`) reads and writes the whole pool: the
draw-side state (`_draw_state`, snapshotted before every draw, and
`_draw_state_at` an earlier meta-batch) and the JSON snapshot format
(``_STATE_VERSION``).
"""

from __future__ import annotations

import collections

import numpy as np

_STATE_VERSION = 1

#: Counters that belong to the drawing side (rewound with it); the others count reports.
_DRAW_COUNTERS = ("batches_drawn", "hard_tasks_drawn", "hard_rounds", "failures_pooled", "dropped_pending")


class _StateMixin:
    """Snapshots and rewind of `HardTaskPool` (all its state, under its lock)."""

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
