"""The sentence under a run's table: did meta-training beat the simple baselines on the user's data?"""

from __future__ import annotations

import numpy as np

from mtl_keras.evaluation import EvaluationResult
from mtl_keras_app.workflow import format_verdict
from mtl_keras_app.workflow.stages import BASELINE_ROW, CENTROID_ROWS, MTL_ROW

L2N, CL2N = CENTROID_ROWS["L2N"], CENTROID_ROWS["CL2N"]


def _result(accuracies, shots=1):
    acc = np.asarray(accuracies, dtype=float)
    return EvaluationResult(acc.mean(), 0.0, acc, np.array([acc.mean()]), np.array([0.0]), 5, shots, 15, 0)


def _rows(mtl, pretrained, l2n, cl2n, shots=1):
    return {
        BASELINE_ROW: {shots: _result(pretrained, shots)},
        L2N: {shots: _result(l2n, shots)},
        CL2N: {shots: _result(cl2n, shots)},
        MTL_ROW: {shots: _result(mtl, shots)},
    }


rng = np.random.default_rng(0)
BASE = rng.uniform(0.4, 0.8, 600)


def test_mtl_above_both_baselines_says_so_with_both_differences():
    rows = _rows(BASE + 0.03, BASE, BASE + 0.01, BASE - 0.02)
    (line,) = format_verdict(rows, 5)
    assert line.startswith("5-way 1-shot: MTL beats both baselines, CIs above 0")
    assert (
        "+3.00 ± 0.00 points" in line and f"{L2N}: +2.00 ± 0.00 points" in line
    )  # the better SimpleShot row


def test_mtl_below_the_better_simpleshot_row_tells_the_user_to_use_it():
    noise = rng.normal(0, 0.02, 600)
    rows = _rows(BASE + 0.01 + noise, BASE, BASE - 0.01, BASE + 0.02)  # CL2N the better, MTL 1 point below
    (line,) = format_verdict(rows, 5)
    assert line.startswith(f"5-way 1-shot: MTL is below {CL2N} (-1.")
    assert "CI below 0" in line and "use the pretrained backbone with that baseline" in line


def test_a_difference_the_episodes_cannot_show_is_called_that():
    noise = rng.normal(0, 0.05, 600)
    noise -= noise.mean()  # mean difference exactly 0, CI about ±0.4 points
    rows = _rows(BASE + 0.02 + noise, BASE, BASE + 0.02, BASE - 0.05, shots=5)
    (line,) = format_verdict(rows, 5)
    assert line.startswith(f"5-way 5-shot: MTL is not distinguishable from {L2N} (+0.00 ± 0.")
    assert "CI includes 0" in line


def test_one_line_per_shot_and_none_without_an_mtl_row():
    rows = _rows(BASE + 0.03, BASE, BASE, BASE)
    five = _rows(BASE - 0.05, BASE, BASE, BASE, shots=5)
    for name in rows:
        rows[name].update(five[name])
    lines = format_verdict(rows, 5)
    assert [line.split(":")[0] for line in lines] == ["5-way 1-shot", "5-way 5-shot"]
    assert "beats both" in lines[0] and "is below" in lines[1]
    del rows[MTL_ROW]
    assert format_verdict(rows, 5) == []
