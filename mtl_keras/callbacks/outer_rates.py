"""The outer loop's learning rates during ``fit``: `OuterRateDecay` (a step decay of both) and
`DivergenceGuard` (undo an epoch that blew up, lower both rates, say so)."""

from __future__ import annotations

import math

import keras
import numpy as np


def outer_optimizers_of(model) -> list:
    """``[(name, optimizer)]`` of ``model``'s outer loop: ``("phi", model.optimizer)`` and, for a
    `MetaTransferModel`, ``("head", model.head_optimizer)``."""
    found = [("phi", getattr(model, "optimizer", None)), ("head", getattr(model, "head_optimizer", None))]
    return [(name, opt) for name, opt in found if opt is not None]


def _rate(optimizer) -> float:
    return float(np.asarray(optimizer.learning_rate))


def _set_rate(optimizer, value: float) -> None:
    try:
        optimizer.learning_rate = value
    except TypeError as err:  # a LearningRateSchedule: its rate cannot be set
        raise TypeError(
            f"Optimizer '{optimizer.name}' takes its learning rate from a schedule, which cannot be "
            "lowered or decayed by a callback: give it a float rate (and use OuterRateDecay for a "
            "step decay)."
        ) from err


class OuterRateDecay(keras.callbacks.Callback):
    """Multiply both outer learning rates by ``rate`` at the start of every ``every``-th epoch.

    The official MTL code's ``StepLR(step_size=every, gamma=rate)`` over both Adam groups, as a
    callback instead of a schedule inside the optimizers: the rates stay plain variables (saved
    with the optimizers, so a resumed ``fit`` continues from them), which `DivergenceGuard` can
    lower too. Decays at epochs ``every, 2·every, ...`` (0-based), relative to the current rate.

    Args:
        every: epochs between decays (> 0).
        rate: the factor, in (0, 1].
    """

    def __init__(self, every: int, rate: float = 0.5):
        super().__init__()
        if int(every) < 1 or not 0 < float(rate) <= 1:
            raise ValueError(f"OuterRateDecay: every must be >= 1 and rate in (0, 1], got {every}, {rate}.")
        self.every, self.rate = int(every), float(rate)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch > 0 and epoch % self.every == 0:
            for _, optimizer in outer_optimizers_of(self.model):
                _set_rate(optimizer, _rate(optimizer) * self.rate)


class DivergenceGuard(keras.callbacks.Callback):
    """Undo an epoch whose outer gradients or loss blew up, lower both outer rates, and say so.

    Second-order meta-gradients through a long inner loop can explode once meta-training has
    changed the features enough that the inner loop turns unstable; epoch means of the outer
    gradient norms then grow by orders of magnitude while accuracy falls, and nothing stops it.
    At every epoch end this compares the epoch's ``loss`` and gradient norms (``phi_grad_norm``,
    ``head_grad_norm``: `MetaTransferModel`'s logs) with the first epoch's. An epoch with a
    non-finite value, or one more than ``factor`` times the first epoch's, is undone: the weights
    and both optimizers' states return to the end of the last good epoch, both learning rates
    are multiplied by ``rate_factor``, a line says what happened, and ``logs["restored"]`` is 1
    (0 otherwise). After ``max_restores`` restores training stops, at the last good epoch.

    Put it after the callbacks that evaluate or checkpoint the epoch as trained (validation,
    `BestCheckpoint`) and before `ResumableCheckpoint`, so the backup holds the restored state.
    The optimizers' rates must be plain values, not schedules (use `OuterRateDecay`).

    Args:
        factor: how many times the first epoch's value counts as a blow-up (default 10: healthy
            runs stay within about 3×).
        rate_factor: what a restore multiplies both learning rates by.
        max_restores: restores before training stops.
        monitors: the logs watched.
        reference: the first epoch's ``{monitor: value}`` when resuming a ``fit`` that already
            trained it (default: taken from the first epoch this callback sees).
        verbose: print a line per restore.

    Attributes:
        restores: ``[(epoch, reason)]`` (0-based epochs) of the restores so far.
    """

    def __init__(
        self,
        factor: float = 10.0,
        rate_factor: float = 0.5,
        max_restores: int = 3,
        monitors=("loss", "phi_grad_norm", "head_grad_norm"),
        reference: dict | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        if not factor > 1 or not 0 < rate_factor < 1 or int(max_restores) < 0:
            raise ValueError(
                "DivergenceGuard: factor must be > 1, rate_factor in (0, 1) and max_restores >= 0; got "
                f"{factor}, {rate_factor}, {max_restores}."
            )
        self.factor, self.rate_factor = float(factor), float(rate_factor)
        self.max_restores = int(max_restores)
        self.monitors = tuple(monitors)
        self.reference = dict(reference) if reference else None
        self.verbose = int(verbose)
        self.restores: list[tuple[int, str]] = []
        self._snapshot = None

    def _take_snapshot(self):
        self._snapshot = (
            [np.array(v) for v in self.model.trainable_variables],
            [[np.array(v) for v in optimizer.variables] for _, optimizer in outer_optimizers_of(self.model)],
        )

    def _restore_snapshot(self):
        weights, states = self._snapshot
        for variable, value in zip(self.model.trainable_variables, weights):
            variable.assign(value)
        for (_, optimizer), values in zip(outer_optimizers_of(self.model), states):
            rate = _rate(optimizer)
            for variable, value in zip(optimizer.variables, values):
                variable.assign(value)
            _set_rate(optimizer, rate)  # the rates are not rolled back: they are lowered below

    def on_train_begin(self, logs=None):
        for _, optimizer in outer_optimizers_of(self.model):
            _set_rate(optimizer, _rate(optimizer))  # a schedule raises here, naming the fix
        self._snapshot = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._snapshot is None:  # here, not in on_train_begin: after a resumed state is restored
            self._take_snapshot()

    def _problem(self, values: dict) -> str | None:
        """Why the epoch's ``values`` are a blow-up, or None."""
        for name, value in values.items():
            if not math.isfinite(value):
                return f"{name} is {value}"
        for name, value in values.items():
            first = (self.reference or {}).get(name)
            if first is not None and first > 0 and value > self.factor * first:
                return f"{name} {value:.4g} is {value / first:.0f}× the first epoch's {first:.4g}"
        return None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        values = {m: float(logs[m]) for m in self.monitors if m in logs}
        problem = self._problem(values)
        logs["restored"] = 0.0 if problem is None else 1.0
        if problem is None:
            if self.reference is None:
                self.reference = values
            self._take_snapshot()
            return
        self.restores.append((epoch, problem))
        self._restore_snapshot()
        rates = []
        for name, optimizer in outer_optimizers_of(self.model):
            old = _rate(optimizer)
            _set_rate(optimizer, old * self.rate_factor)
            rates.append(f"{name} {old:.3g} → {old * self.rate_factor:.3g}")
        stop = len(self.restores) > self.max_restores
        if stop:
            self.model.stop_training = True
        if self.verbose:
            print(
                f"DivergenceGuard: epoch {epoch + 1}: {problem} (limit {self.factor:g}×): restored the "
                "weights and optimizer states of the last good epoch and lowered the outer learning rates "
                f"({', '.join(rates)})"
                + (
                    f"; {len(self.restores)} restores, more than {self.max_restores}: training stops."
                    if stop
                    else "."
                ),
                flush=True,
            )
