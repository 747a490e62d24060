"""Keras Tuner: `MTLHyperModel`, the three tuners, `mtl-keras tune`, and distributed tuning."""

import json
import os
import socket
import subprocess
import sys

import keras
import keras_tuner
import pytest

from mtl_keras.data.episodes import make_episodes
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras_app.config import get_config
from mtl_keras_app.tuning import MTLHyperModel, distributed_role, make_tuner, run_tuning
from tests.conftest import TINY_CONFIG, make_prototype_split
from tests.helpers import patient

# The end-to-end tests' `TINY_CONFIG` with a conv4 of 4 filters: each trial is a few seconds.
_TINY = {key: tuple(v) if isinstance(v, list) else v for key, v in TINY_CONFIG.items() if key != "preset"}
CONFIG = get_config(TINY_CONFIG["preset"], **_TINY).replace(backbone="conv4", eval_inner_steps=2)
SPACE = dict(inner_steps_choices=(1, 2))


@pytest.fixture(scope="module")
def splits():
    return (
        make_prototype_split(num_classes=10, per_class=8, seed=0, name="train"),
        make_prototype_split(num_classes=6, per_class=8, seed=1, name="val"),
    )


def test_build_returns_a_compiled_model_with_the_trial_values(splits):
    hypermodel = MTLHyperModel(CONFIG, *splits, **SPACE)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert isinstance(model, MetaTransferModel) and model.head_optimizer is not None
    assert set(hp.values) == {"inner_lr", "phi_lr", "head_lr", "inner_steps"}
    hp.values.update(inner_lr=0.3, phi_lr=2e-4, head_lr=5e-3, inner_steps=1)
    model = hypermodel.build(hp)
    assert (model.inner_lr, model.inner_steps) == (0.3, 1)
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-4)
    assert float(model.head_optimizer.learning_rate) == pytest.approx(5e-3)
    # Learning rates are searched on a log scale, inner steps among the choices.
    space = {p.name: p for p in hp.space}
    assert all(space[k].sampling == "log" for k in ("inner_lr", "phi_lr", "head_lr"))
    assert list(space["inner_steps"].values) == [1, 2]


def test_build_loads_pretrained_weights(splits, tmp_path):
    hypermodel = MTLHyperModel(CONFIG, *splits, **SPACE)
    donor = hypermodel.build(keras_tuner.HyperParameters())
    kernel = next(w for w in donor.backbone.weights if "kernel" in w.path)
    kernel.assign(kernel * 0 + 0.5)
    path = str(tmp_path / "backbone.weights.h5")
    donor.backbone.save_weights(path)
    model = MTLHyperModel(CONFIG, *splits, weights_path=path, **SPACE).build(keras_tuner.HyperParameters())
    loaded = next(w for w in model.backbone.weights if w.path == kernel.path)
    assert float(keras.ops.min(loaded)) == float(keras.ops.max(loaded)) == 0.5


def test_fit_passes_callbacks_and_returns_the_objective(splits):
    hypermodel = MTLHyperModel(CONFIG, *splits, **SPACE)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(dict(logs)))
    score = hypermodel.fit(hp, model, callbacks=[callback], epochs=2, steps_per_epoch=1)
    assert len(seen) == 2 and "val_accuracy" in seen[0]
    assert score == pytest.approx(max(logs["val_accuracy"] for logs in seen))


def test_the_default_validation_is_the_librarys_one_evaluation_path(splits, monkeypatch):
    """Without validation_data the objective comes from `evaluate_episodes` (as in the workflow),
    once per epoch, on the same episodes every epoch."""
    import mtl_keras.evaluation as evaluation

    calls, real = [], evaluation.evaluate_episodes

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((kwargs["seed"], kwargs["episodes"], result.mean))
        return result

    monkeypatch.setattr(evaluation, "evaluate_episodes", spy)
    hypermodel = MTLHyperModel(CONFIG, *splits, **SPACE)
    hp = keras_tuner.HyperParameters()
    score = hypermodel.fit(hp, hypermodel.build(hp), epochs=2, steps_per_epoch=1)
    assert len(calls) == 2 and calls[0][:2] == calls[1][:2] == (CONFIG.seed + 1, CONFIG.val_episodes)
    assert score == pytest.approx(max(mean for *_, mean in calls))


#: Bayesian and Hyperband in `make test-slow` (24 and 29 s of the 2-core CI run of 2026-12-07, which
#: went over 30 min); random search stays in make test.
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "kind", ["random", pytest.param("bayesian", marks=SLOW), pytest.param("hyperband", marks=SLOW)]
)
def test_each_tuner_runs_two_trials(kind, splits, tmp_path):
    if kind == "bayesian":
        pytest.importorskip(
            "sklearn", reason="BayesianOptimization needs scikit-learn (keras-tuner[bayesian])"
        )
        pytest.importorskip("scipy", reason="BayesianOptimization needs scipy (keras-tuner[bayesian])")
    # Hyperband with max_epochs=2 and factor 3 is one bracket of 2 trials of 2 epochs.
    config = CONFIG.replace(meta_epochs=2, steps_per_epoch=1) if kind == "hyperband" else CONFIG
    hypermodel = MTLHyperModel(config, *splits, **SPACE)
    tuner = make_tuner(hypermodel, kind, directory=str(tmp_path), max_trials=2, overwrite=True)
    tuner.search(
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "logs"), write_graph=False)], verbose=0
    )
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert all(0.0 <= t.score <= 1.0 for t in trials)
    best = tuner.get_best_hyperparameters(1)[0].values
    assert {"inner_lr", "phi_lr", "head_lr", "inner_steps"} <= set(best)
    assert os.listdir(tmp_path / "logs"), "the tuner's TensorBoard callback wrote nothing"


@pytest.mark.parametrize("kind", ["random", "hyperband"])
@pytest.mark.parametrize("seed", [0, 3])
def test_the_same_seed_gives_the_same_trials(kind, seed, splits, tmp_path):
    """Keras Tuner replaces seed 0 with a random one; `make_tuner` must not let it."""
    hypermodel = MTLHyperModel(CONFIG, *splits, **SPACE)

    def first_trials(folder):
        tuner = make_tuner(hypermodel, kind, directory=str(tmp_path / folder), max_trials=3, seed=seed)
        return [tuner.oracle.create_trial(f"t{i}").hyperparameters.values for i in range(3)]

    first = first_trials("a")
    assert first == first_trials("b")
    assert len({tuple(sorted(v.items())) for v in first}) > 1  # the trials themselves differ


def test_unknown_tuner_is_named(splits):
    with pytest.raises(ValueError, match="'grid'"):
        make_tuner(MTLHyperModel(CONFIG, *splits), "grid")


def test_distributed_role_follows_the_environment(monkeypatch):
    monkeypatch.delenv("KERASTUNER_ORACLE_IP", raising=False)
    assert distributed_role() == "single"
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert distributed_role() == "chief"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    assert distributed_role() == "worker"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_worker_on_loopback(tiny_config_file, glyph_cache, tmp_path):
    """`mtl-keras tune` as a chief oracle and one worker, over gRPC on 127.0.0.1 only."""
    # Build the glyph cache here, not in two processes at once.
    run_tuning_args = [
        "--config",
        tiny_config_file,
        "--set",
        "backbone=conv4",
        "--tuner",
        "random",
        "--max-trials",
        "2",
        "--run-dir",
        str(tmp_path / "tune"),
        "--quiet",
    ]
    from mtl_keras.data.registry import load_benchmark

    load_benchmark("glyphs", image_size=16, verbose=False, cache_dir=glyph_cache)
    port = _free_loopback_port()
    env = {
        **os.environ,
        "MTL_KERAS_CACHE": glyph_cache,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
    }
    command = [sys.executable, "-m", "mtl_keras_app.cli", "tune", *run_tuning_args]

    def start(tuner_id):
        return subprocess.Popen(
            command,
            env={**env, "KERASTUNER_TUNER_ID": tuner_id},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    chief = start("chief")
    worker = start("tuner0")
    try:
        _, worker_err = worker.communicate(timeout=patient(180))
        _, chief_err = chief.communicate(timeout=patient(60))
    finally:
        for process in (worker, chief):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert worker.returncode == 0, worker_err[-3000:]
    assert chief.returncode == 0, chief_err[-3000:]
    summary = json.loads((tmp_path / "tune" / "tuning.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED", "COMPLETED"]
    assert summary["best_hyperparameters"] and 0 <= summary["best_score"] <= 1
    # Both processes registered in the shared project; the worker ran the trials (checkpoints).
    project = tmp_path / "tune" / "tuner"
    assert (project / "chief.json").exists() and (project / "tuner0.json").exists()
    for trial in ("trial_0", "trial_1"):
        assert (project / trial / "checkpoint.weights.h5").exists()


def test_run_tuning_writes_a_summary(tiny_config_file, tmp_path, monkeypatch):
    monkeypatch.delenv("KERASTUNER_ORACLE_IP", raising=False)
    config = get_config(tiny_config_file).replace(backbone="conv4")
    summary = run_tuning(config, str(tmp_path), max_trials=1, verbose=False, hypermodel_kwargs=SPACE)
    assert json.loads((tmp_path / "tuning.json").read_text()) == json.loads(
        json.dumps(summary, default=float)
    )
    assert len(summary["trials"]) == 1 and (tmp_path / "config.json").exists()
    assert os.listdir(tmp_path / "logs" / "tuning")


def test_a_search_whose_every_trial_failed_is_an_error(tiny_config_file, tmp_path, monkeypatch):
    """Keras Tuner goes on after a failed trial; a search with no scored trial used to end with
    ``best_score: None`` in tuning.json and exit 0."""
    monkeypatch.delenv("KERASTUNER_ORACLE_IP", raising=False)

    def fail(self, hp, model, *args, **kwargs):
        raise RuntimeError("the trial broke")

    monkeypatch.setattr(MTLHyperModel, "fit", fail)
    config = get_config(tiny_config_file).replace(backbone="conv4")
    with pytest.raises(ValueError, match="Every trial of the search failed"):
        run_tuning(
            config, str(tmp_path), max_trials=1, verbose=False, tensorboard=False, hypermodel_kwargs=SPACE
        )
    assert not (tmp_path / "tuning.json").exists()


def test_search_passes_its_episodes_to_the_hypermodel(splits, tmp_path):
    """As Keras Tuner's `HyperModel.fit(hp, model, *args, **kwargs)`: `tuner.search(x,
    validation_data=...)` hands its datasets on — a hypermodel without splits trains on them."""
    train, val = splits
    channels = train.channels
    hypermodel = MTLHyperModel(CONFIG, None, None, channels=channels, **SPACE)
    tuner = make_tuner(hypermodel, "random", directory=str(tmp_path), max_trials=1, overwrite=True)
    shots = CONFIG.shots[0]
    episodes = make_episodes(train, CONFIG.ways, shots, CONFIG.queries, meta_batch_size=2, seed=0)
    validation = make_episodes(val, CONFIG.ways, shots, CONFIG.queries, 5, num_batches=2, repeatable=True)
    tuner.search(episodes, validation_data=validation, epochs=1, steps_per_epoch=2, verbose=0)
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED" and 0.0 <= trial.score <= 1.0
    with pytest.raises(ValueError, match="no validation episodes"):
        hypermodel.fit(
            keras_tuner.HyperParameters(), hypermodel.build(keras_tuner.HyperParameters()), episodes
        )
    with pytest.raises(ValueError, match="give `channels`"):
        MTLHyperModel(CONFIG, None, None)
