"""`TimeEstimate`: how long a ``fit`` will take, once its speed is known, and how long it took."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    pass


def format_duration(seconds: float) -> str:
    """A duration for people: ``"4.2 s"``, ``"42 s"``, ``"4 min 10 s"``, ``"2 h 05 min"``."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class TimeEstimate(keras.callbacks.Callback):
    """Print how long a ``fit`` will take once its speed is known, and how long it took.

    Up to three lines, each starting with ``stage``:

    1. After training steps 2 to ``1 + measure_steps`` of the first epoch (step 1 is left
       out: it traces the graph), the whole fit's time at that rate, training steps only:
       ``pretraining: about 4 min 10 s for 4 epochs (from steps 2-6: 0.41 s/step, training
       steps only)``. Not printed when the first epoch has fewer than ``measure_steps + 2``
       steps or an unknown number.
    2. When the second epoch begins, the estimate again from the first epoch's whole time,
       so validation and the other callbacks' end-of-epoch work (checkpoints) count; the
       tracing in the first training step and the first validation batch is replaced by
       the steady time of the others: ``pretraining: about 4 min 30 s for 4 epochs, 3 min
       25 s left (epoch 1: 1 min 5 s, of which validation 6.2 s)``.
    3. At the end: ``pretraining: 3 min 58 s``.

    Both estimates are exact when every step (and every validation batch) after the first
    takes the same time, as the tests check with a fake clock; a run that resumes at a later
    epoch estimates the epochs it has left. Put it first in the callbacks list.

    Args:
        stage: the name that starts each line (e.g. ``"pretraining"``).
        measure_steps: training steps timed for the first estimate, after the first one.
        clock: seconds as a float (``time.perf_counter``; tests pass a fake one).

    Attributes:
        estimates: the totals printed, in seconds (one or two).
        elapsed: seconds from ``fit``'s start to its end (None until the end).
    """

    def __init__(self, stage: str, measure_steps: int = 5, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        if int(measure_steps) < 1:
            raise ValueError(f"measure_steps must be at least 1, got {measure_steps}.")
        self.stage = str(stage)
        self.measure_steps = int(measure_steps)
        self.clock = clock
        self.estimates: list[float] = []
        self.elapsed: float | None = None

    def on_train_begin(self, logs=None):
        self._start = self.clock()
        self._first_epoch = self._epoch = None
        self._epoch_start = None
        self._steps = []  # end times of the first epoch's training steps
        self._validation = []  # its validation: start, then the end time of every batch
        self._validation_end = None
        self.estimates, self.elapsed = [], None

    def _epochs_left(self, epoch: int) -> int:
        return int(self.params.get("epochs") or 1) - epoch

    def _epochs_text(self, count: int) -> str:
        total = int(self.params.get("epochs") or 1)
        if count == total:
            return f"{count} epoch{'s' * (count != 1)}"
        return f"the last {count} of {total} epochs"

    def _say(self, text: str) -> None:
        # On a terminal Keras' bar is being redrawn in place: start a line of our own.
        live_bar = self.params.get("verbose") == 1 and sys.stdout.isatty()
        print(("\n" if live_bar else "") + f"{self.stage}: {text}", flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        now = self.clock()
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch, self._epoch_start = epoch, now
        elif epoch == self._first_epoch + 1:
            self._refine(epoch, now)

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch != self._first_epoch:
            return
        self._steps.append(self.clock())
        steps = self.params.get("steps")
        n, k = len(self._steps), self.measure_steps
        if n == k + 1 and steps and steps >= k + 2:
            rate = (self._steps[-1] - self._steps[0]) / k
            elapsed = self._steps[-1] - self._start
            left = steps * self._epochs_left(self._first_epoch) - n
            self.estimates.append(elapsed + left * rate)
            self._say(
                f"about {format_duration(self.estimates[-1])} for "
                f"{self._epochs_text(self._epochs_left(self._first_epoch))} "
                f"(from steps 2-{n}: {rate:.3g} s/step, training steps only)"
            )

    def on_test_begin(self, logs=None):
        if self._epoch is not None and self._epoch == self._first_epoch and not self._validation:
            self._validation.append(self.clock())

    def on_test_batch_end(self, batch, logs=None):
        if self._epoch == self._first_epoch and self._validation:
            self._validation.append(self.clock())

    def on_test_end(self, logs=None):
        if self._epoch == self._first_epoch and self._validation:
            self._validation_end = self.clock()

    def _refine(self, epoch: int, now: float) -> None:
        epoch_time = now - self._epoch_start
        tracing = 0.0  # the first step's and first validation batch's extra time
        if len(self._steps) >= 2:
            rate = (self._steps[-1] - self._steps[0]) / (len(self._steps) - 1)
            tracing += (self._steps[0] - self._epoch_start) - rate
        validation = ""
        if len(self._validation) >= 2:
            start, ends = self._validation[0], self._validation[1:]
            if len(ends) >= 2:
                tracing += (ends[0] - start) - (ends[-1] - ends[0]) / (len(ends) - 1)
            took = (self._validation_end or ends[-1]) - start
            validation = f", of which validation {format_duration(took)}"
        elapsed = now - self._start
        left = (epoch_time - tracing) * self._epochs_left(epoch)
        self.estimates.append(elapsed + left)
        self._say(
            f"about {format_duration(self.estimates[-1])} for "
            f"{self._epochs_text(self._epochs_left(self._first_epoch))}, {format_duration(left)} left "
            f"(epoch {self._first_epoch + 1}: {format_duration(epoch_time)}{validation})"
        )

    def on_train_end(self, logs=None):
        self.elapsed = self.clock() - self._start
        self._say(format_duration(self.elapsed))


# --------------------------------------------------------------------------- reliability
