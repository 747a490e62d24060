"""`mtl-keras reproduce`: the five-row ablation end to end (tiny), and its building blocks."""

import json
import os
import time

import numpy as np
import pytest

from mtl_keras import cli
from mtl_keras.backbones import resnet12
from mtl_keras.data.episodes import make_episodes
from mtl_keras.evaluation import EvaluationResult, evaluate_episodes
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.reproduce import (
    ROWS,
    ReproduceSettings,
    draw_episodes,
    embed_split,
    evaluate_model,
    paired_difference,
    verdict,
)
from tests.conftest import make_prototype_split

#: `--quick` shrunk further so the whole reproduction runs in under 90 s on 2 cores.
#: One shot setting (1-shot) plus the harder 20-way one: every row and code path, fewer models to trace.
TINY_SETS = [
    "image_size=16",
    "widths=4,8,16,32",
    "pretrain_epochs=1",
    "pretrain_batch_size=256",
    "pretrain_augment=false",
    "shots=1",
    "meta_epochs=1",
    "steps_per_epoch=3",
    "meta_batch_size=2",
    "queries=5",
    "test_queries=5",
    "inner_steps=2",
    "eval_inner_steps=20",
    "inner_lr=0.2",
    "val_episodes=20",
    "test_episodes=50",
    "scratch_filters=16",
    "scratch_epochs=1",
    "scratch_steps_per_epoch=3",
    "ft_probe_steps=1",
    "ht_every=1",
    "ht_hard_batches=1",
]


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory, glyph_cache):
    out = tmp_path_factory.mktemp("reproduce")
    argv = ["reproduce", "--quick", "--out", str(out), "--quiet"]
    for item in TINY_SETS:
        argv += ["--set", item]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTL_KERAS_CACHE", glyph_cache)
        start = time.time()
        assert cli.main(argv) == 0
        seconds = time.time() - start
    return out, seconds


def test_reproduce_beats_chance_in_every_row_and_writes_the_table(reproduction):
    out, seconds = reproduction
    with open(out / "results.json") as f:
        summary = json.load(f)
    assert set(summary["results"]) == {"5-way 1-shot", "20-way 1-shot"}
    for setting, by_row in summary["results"].items():
        assert set(by_row) == set(ROWS), setting
        for row, result in by_row.items():
            assert result["episodes"] == 50
            assert result["mean"] > 1.0 / result["ways"], (
                f"{row} at {setting} is not above chance: {result['mean']}"
            )
    text = (out / "RESULTS.md").read_text()
    assert "| method | 5-way 1-shot |" in text and "| method | 20-way 1-shot |" in text
    for label in ("(1) scratch", "(2) pretrained", "(3) FT", "(4) SS", "(5) SS + HT"):
        assert label in text
    assert "mtl-keras reproduce --quick" in text and "Chosen on the validation split" in text
    assert "SS+HT > SS: HT adds on top of SS" in text  # the paired comparisons
    for png in ("accuracy_bars.png", "inner_steps_5way1shot.png", "meta_training.png"):
        assert os.path.getsize(out / png) > 10_000, png
    # ~60 s of CPU time, 75-80 s of wall clock on 2 cores at load 3-5; the wall clock grows with
    # other jobs' load, so only a loose guard here.
    assert seconds < 300, f"the tiny reproduction took {seconds:.0f} s"


def test_the_report_can_be_rewritten_from_results_json(reproduction, tmp_path):
    import shutil

    from mtl_keras.reproduce import rewrite_report

    out, _ = reproduction
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tables = rewrite_report(str(copy))
    assert tables["main"] in (out / "RESULTS.md").read_text()
    assert (copy / "RESULTS.md").read_text().split("\n")[3:] == (out / "RESULTS.md").read_text().split("\n")[
        3:
    ]


def test_draw_episodes_matches_make_episodes():
    split = make_prototype_split(num_classes=10, per_class=10)
    drawn = draw_episodes(split, 5, 1, 3, episodes=25, seed=7)
    ds = make_episodes(split, 5, 1, 3, meta_batch_size=10, num_batches=3, seed=7, repeatable=True)
    classes = np.concatenate([inputs["task_classes"].numpy() for inputs, _ in ds])[:25]
    np.testing.assert_array_equal(drawn.task_classes, classes)
    assert drawn.support_items.shape == (25, 5) and drawn.query_items.shape == (25, 15)


def test_evaluation_on_cached_embeddings_equals_evaluate_episodes():
    split = make_prototype_split(num_classes=10, per_class=10)
    backbone = resnet12((16, 16, 1), widths=(4, 4, 4, 4))
    model = MetaTransferModel(backbone, ways=5, inner_steps=2, eval_inner_steps=4, inner_lr=0.1)
    reference = evaluate_episodes(model, split, 5, 1, 3, episodes=30, seed=3, verbose=False)
    cached = evaluate_model(model, embed_split(backbone, split), draw_episodes(split, 5, 1, 3, 30, seed=3))
    np.testing.assert_allclose(cached.episode_accuracies, reference.episode_accuracies, atol=1e-6)
    np.testing.assert_allclose(cached.per_step_accuracy, reference.per_step_accuracy, atol=1e-6)


def _result(accuracies):
    acc = np.asarray(accuracies, dtype=float)
    return EvaluationResult(acc.mean(), 0.0, acc, np.array([acc.mean()]), np.array([0.0]), 5, 1, 15, 0)


def test_paired_difference_and_verdict():
    a = _result([1.0, 0.9, 0.8, 1.0])
    b = _result([0.9, 0.8, 0.7, 0.9])
    mean, ci = paired_difference(a, b)
    assert mean == pytest.approx(0.1) and ci == pytest.approx(0.0, abs=1e-12)
    assert verdict(mean, ci).startswith("holds")
    assert "reversed" in verdict(-0.1, 0.01)
    assert verdict(0.01, 0.05).startswith("not distinguishable")


def test_set_routes_keys_to_settings_or_config():
    settings = ReproduceSettings().with_overrides(["scratch_filters=8", "ft_lrs=1e-3,1e-4", "widths=4,4,4,4"])
    assert settings.scratch_filters == 8 and settings.ft_lrs == (1e-3, 1e-4)
    assert settings.config.widths == (4, 4, 4, 4)
    with pytest.raises(ValueError, match="no_such_key"):
        ReproduceSettings().with_overrides(["no_such_key=1"])
    with pytest.raises(ValueError, match="hard_ways"):
        ReproduceSettings().replace(hard_ways=3).validate()


def test_reproduce_command_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["reproduce", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mtl-keras reproduce" in out and "--quick" in out


def test_script_is_a_thin_main(monkeypatch):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "reproduce.py")
    spec = importlib.util.spec_from_file_location("reproduce_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    seen = {}
    monkeypatch.setattr(script.cli, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    script.main(["--quick"], seed=3)
    assert seen["argv"] == ["reproduce", "--quick", "--seed", "3"]
