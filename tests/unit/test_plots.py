"""Figures: each plot writes a non-blank PNG of the expected size; `plot_run` reads a run folder."""

import json
import os

import matplotlib.image
import numpy as np
import pytest

from mtl_keras_app import cli, plots


def _image(path):
    assert os.path.getsize(path) > 5000, f"{path} is suspiciously small"
    image = matplotlib.image.imread(path)
    rgb = image[..., :3]
    assert rgb.std() > 0.02, f"{path} looks blank"
    assert (rgb < 0.5).mean() > 0.005, f"{path} has almost no dark pixels (no text, bars or axes)"
    return image


def _episode(ways=5, shots=2, queries=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    support = rng.integers(0, 256, (ways * shots, size, size, 1), dtype=np.uint8)
    query = rng.integers(0, 256, (ways * queries, size, size, 1), dtype=np.uint8)
    support_labels = np.repeat(np.arange(ways), shots)
    query_labels = np.repeat(np.arange(ways), queries)
    predictions = query_labels.copy()
    predictions[::3] = (predictions[::3] + 1) % ways
    return support, support_labels, query, query_labels, predictions


def test_per_class_accuracy_figure(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"GREEK LETTER {i} (U+03{i:02X})" for i in range(60)]
    path = plots.plot_per_class_accuracy(
        names, rng.uniform(0, 1, 60), str(tmp_path / "pc.png"), counts=rng.integers(1, 9, 60), top=10
    )
    image = _image(path)
    # 12 x (0.26 * 20 + 1.2) inches at 110 dpi.
    assert image.shape[:2] == (round(6.4 * 110), 12 * 110)


def test_per_class_accuracy_rejects_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match="as many names"):
        plots.plot_per_class_accuracy(["a", "b"], [0.5], str(tmp_path / "x.png"))


def test_hard_class_frequency_figure(tmp_path):
    counts = {f"class {i}": int(c) for i, c in enumerate([5, 3, 3, 1, 0, 7])}
    path = plots.plot_hard_class_frequency(counts, str(tmp_path / "hard.png"))
    image = _image(path)
    assert image.shape[:2] == (round(3.0 * 110), 9 * 110)  # 5 bars: the 3-inch minimum height
    with pytest.raises(ValueError, match="no class"):
        plots.plot_hard_class_frequency({"a": 0}, str(tmp_path / "none.png"))


def test_episode_grid_figure(tmp_path):
    support, s_labels, query, q_labels, preds = _episode()
    path = plots.plot_episode_grid(
        support,
        s_labels,
        query,
        q_labels,
        str(tmp_path / "ep.png"),
        query_predictions=preds,
        class_names=list("ABCDE"),
        max_queries=3,
    )
    image = _image(path)
    # 5 rows, 2 support + 3 query columns: (1.25 * 5 + 1.6) x (1.3 * 5 + 0.6) inches at 100 dpi.
    assert image.shape[:2] == (710, 785)
    # Right (green) and wrong (red) query frames are both drawn.
    rgb = image[..., :3]
    green = (rgb[..., 1] > 0.6) & (rgb[..., 0] < 0.3)
    red = (rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.35)
    assert green.sum() > 100 and red.sum() > 100


def test_episode_grid_without_predictions_handles_rgb(tmp_path):
    rng = np.random.default_rng(1)
    support = rng.uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    query = rng.uniform(0, 1, (6, 8, 8, 3)).astype("float32")
    path = plots.plot_episode_grid(
        support, np.arange(3), query, np.repeat(np.arange(3), 2), str(tmp_path / "e.png")
    )
    _image(path)


def _fake_run_folder(run_dir):
    """What `mtl_keras_app.workflow` writes, with made-up numbers."""
    os.makedirs(run_dir / "episodes")
    rng = np.random.default_rng(0)
    names = [f"ARMENIAN LETTER {i}" for i in range(40)]
    result = {"mean": 0.5, "ci95": 0.02, "episodes": 10, "per_step_accuracy": list(np.linspace(0.2, 0.5, 11))}
    metrics = {
        "benchmark": "glyphs",
        "histories": {
            "pretrain": {
                "loss": [3.0, 2.0, 1.5],
                "accuracy": [0.1, 0.3, 0.4],
                "val_loss": [3.1, 2.2, 1.9],
                "val_accuracy": [0.1, 0.25, 0.3],
            },
            "MTL 1-shot": {"loss": [1.5, 1.2], "accuracy": [0.4, 0.5], "val_accuracy": [0.45, 0.5]},
        },
        "results": {
            "pretrained + inner loop (no meta-training)": {"1-shot": {**result, "mean": 0.4}},
            "MTL (SS, meta-trained)": {"1-shot": result},
        },
        "per_class": {
            "1-shot": {
                "class_names": names,
                "accuracy": rng.uniform(0, 1, 40).tolist(),
                "episodes": rng.integers(1, 5, 40).tolist(),
            }
        },
        "hard_classes": {"1-shot": {n: int(c) for n, c in zip(names, rng.integers(0, 4, 40))}},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    support, s_labels, query, q_labels, preds = _episode(shots=1)
    np.savez(
        run_dir / "episodes" / "sample_1shot.npz",
        support_images=support,
        support_labels=s_labels,
        query_images=query,
        query_labels=q_labels,
        query_predictions=preds,
        class_names=np.array(names[:5]),
    )


def test_plot_run_writes_every_figure_the_folder_allows(tmp_path):
    _fake_run_folder(tmp_path)
    written = plots.plot_run(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == sorted(
        [
            "learning_curves.png",
            "accuracy_vs_inner_steps.png",
            "per_class_accuracy_1shot.png",
            "hard_classes_1shot.png",
            "episode_1shot.png",
        ]
    )
    for path in written:
        assert os.path.dirname(path) == str(tmp_path / "plots")
        _image(path)


def test_plot_run_skips_what_is_missing(tmp_path):
    (tmp_path / "metrics.json").write_text(
        json.dumps({"histories": {"pretrain": {"loss": [1.0, 0.5], "accuracy": [0.2, 0.4]}}})
    )
    assert [os.path.basename(p) for p in plots.plot_run(str(tmp_path))] == ["learning_curves.png"]


def test_plot_command(tmp_path, capsys):
    _fake_run_folder(tmp_path)
    assert cli.main(["plot", str(tmp_path), "--out", str(tmp_path / "figs")]) == 0
    assert len(os.listdir(tmp_path / "figs")) == 5
    assert cli.main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
