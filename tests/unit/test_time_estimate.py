"""Long work says how long: `TimeEstimate` in `fit`, the estimate of `evaluate_episodes`."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from mtl_keras import MetaTransferModel, evaluate_episodes, resnet12
from mtl_keras.callbacks import TimeEstimate, format_duration


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _fit(
    callback,
    clock,
    epochs,
    steps,
    first_step,
    step,
    val_batches=0,
    first_val=0.0,
    val=0.0,
    overhead=0.0,
    initial_epoch=0,
):
    """Call the hooks as `fit` does, the clock advancing by the given durations."""
    callback.set_params({"epochs": epochs, "steps": steps, "verbose": 2})
    callback.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback.on_epoch_begin(epoch)
        for batch in range(steps):
            callback.on_train_batch_begin(batch)
            clock.now += first_step if (epoch == initial_epoch and batch == 0) else step
            callback.on_train_batch_end(batch)
        if val_batches:
            callback.on_test_begin()
            for batch in range(val_batches):
                callback.on_test_batch_begin(batch)
                clock.now += first_val if (epoch == initial_epoch and batch == 0) else val
                callback.on_test_batch_end(batch)
            callback.on_test_end()
        callback.on_epoch_end(epoch)
        clock.now += overhead  # the other callbacks' end-of-epoch work (checkpoints)
    callback.on_train_end()


def test_first_estimate_leaves_out_the_tracing_step_and_is_exact_for_constant_steps(capsys):
    clock = FakeClock()
    callback = TimeEstimate("pretraining", clock=clock)
    start = clock.now
    _fit(callback, clock, epochs=4, steps=50, first_step=7.0, step=0.25)
    total = clock.now - start
    assert total == 7.0 + (4 * 50 - 1) * 0.25
    assert callback.estimates[0] == pytest.approx(total, abs=1e-9)
    assert callback.estimates[1] == pytest.approx(total, abs=1e-9)  # refined: still exact
    assert callback.elapsed == pytest.approx(total)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "pretraining: about 57 s for 4 epochs (from steps 2-6: 0.25 s/step, training steps only)",
        "pretraining: about 57 s for 4 epochs, 38 s left (epoch 1: 19 s)",
        "pretraining: 57 s",
    ]


def test_refined_estimate_counts_validation_and_end_of_epoch_work_exactly(capsys):
    clock = FakeClock()
    callback = TimeEstimate("meta-training 1-shot", clock=clock)
    start = clock.now
    _fit(
        callback,
        clock,
        epochs=5,
        steps=30,
        first_step=20.0,
        step=2.0,
        val_batches=10,
        first_val=9.0,
        val=0.5,
        overhead=1.5,
    )
    total = clock.now - start
    assert total == 20.0 + (5 * 30 - 1) * 2.0 + 9.0 + (5 * 10 - 1) * 0.5 + 5 * 1.5
    first, refined = callback.estimates
    assert first == pytest.approx(20.0 + (5 * 30 - 1) * 2.0)  # training steps only, as it says
    assert refined == pytest.approx(total, abs=1e-9)
    out = capsys.readouterr().out
    assert "(from steps 2-6: 2 s/step, training steps only)" in out
    assert "meta-training 1-shot: about 5 min 59 s for 5 epochs, 4 min 26 s left " in out
    assert "(epoch 1: 1 min 33 s, of which validation 14 s)" in out
    assert out.splitlines()[-1] == "meta-training 1-shot: 5 min 59 s"


def test_a_resumed_fit_estimates_the_epochs_it_has_left(capsys):
    clock = FakeClock()
    callback = TimeEstimate("pretraining", clock=clock)
    start = clock.now
    _fit(callback, clock, epochs=5, steps=10, first_step=3.0, step=1.0, initial_epoch=2)
    assert callback.estimates == [pytest.approx(clock.now - start)] * 2
    assert "for the last 3 of 5 epochs" in capsys.readouterr().out


def test_short_epochs_skip_the_first_estimate_and_one_epoch_skips_the_refined_one(capsys):
    clock = FakeClock()
    callback = TimeEstimate("meta-training 1-shot", clock=clock)
    _fit(callback, clock, epochs=1, steps=2, first_step=3.0, step=1.0, val_batches=1, first_val=1.0)
    assert callback.estimates == []
    assert capsys.readouterr().out == "meta-training 1-shot: 5.0 s\n"


def test_format_duration():
    assert [format_duration(s) for s in (0.04, 4.24, 42.4, 250, 3599.6, 7500)] == [
        "0.0 s",
        "4.2 s",
        "42 s",
        "4 min 10 s",
        "1 h 00 min",
        "2 h 05 min",
    ]


def test_in_a_real_fit_validation_is_timed(capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((64, 3), "float32"), np.zeros((64, 2), "float32")
    callback = TimeEstimate("toy")
    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x[:8], y[:8]), verbose=0, callbacks=[callback])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and len(callback.estimates) == 2, out
    assert out[0].startswith("toy: about ") and "for 2 epochs (from steps 2-6: " in out[0]
    assert re.fullmatch(
        r"toy: about .* for 2 epochs, .* left \(epoch 1: .*, of which validation .*\)", out[1]
    )
    assert re.fullmatch(r"toy: \d+\.\d s", out[2])


def test_evaluation_estimates_its_time_after_its_first_batches(proto_split, capsys):
    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=4, eval_inner_steps=2)
    evaluate_episodes(model, proto_split, 4, 1, 2, episodes=8, meta_batch_size=1, verbose=True)
    out = capsys.readouterr().out
    assert re.search(
        r"^4-way 1-shot evaluation: about \d+\.\d s for 8 episodes \(from batches 2-6: [\d.]+ s per batch of 1 episode\)$",
        out,
        re.M,
    ), out
