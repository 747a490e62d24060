"""The four stages of the workflow, each implemented once: pretrain → meta-train → evaluate →
export. Every stage reads and writes one run folder (`mtl_keras_app.workflow.run_folder`), so the
``mtl-keras`` subcommands ``pretrain`` → ``meta-train`` → ``evaluate`` → ``export`` → ``plot``,
run one after the other (possibly days apart), give what `run_workflow` (``mtl-keras run``,
``mtl-keras demo``) gives in one go — it calls these same functions.

Resumable: a stage that completed in an earlier run of the folder is skipped (it says so), an
interrupted one resumes after its last completed epoch (`RunProgress`); ``restart=True``
starts the folder over.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import TYPE_CHECKING

import numpy as np

from mtl_keras.callbacks import save_weights_atomic
from mtl_keras.evaluation import (
    EvaluationResult,
    base_feature_mean,
    embed_split,
    evaluate_episodes,
    evaluate_nearest_centroid,
)
from mtl_keras.models.weights import non_finite_weights
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.plots import plot_episode_grid, plot_run
from mtl_keras_app.workflow.builders import build_meta_model, load_config_benchmark
from mtl_keras_app.workflow.run_folder import (
    PRETRAINED_WEIGHTS,
    check_strategy,
    checkpoint_path,
    open_run,
    output_dir,
    read_metrics,
    run_info,
    update_metrics,
    writes_run_folder,
)
from mtl_keras_app.workflow.tensorboard import (
    tensorboard_available,
    tensorboard_callbacks,
    write_episode_image,
)
from mtl_keras_app.workflow.training import meta_train, pretrain, weak_pretraining

if TYPE_CHECKING:
    import tensorflow as tf

#: The names of the rows of a run's results table (and of ``metrics.json`` → ``results``).
BASELINE_ROW = "pretrained + inner loop (no meta-training)"
MTL_ROW = "MTL (SS, meta-trained)"
#: Nearest centroid on the pretrained backbone's features (SimpleShot), by normalisation: the
#: simple baseline a run's table always shows beside MTL (`evaluate_nearest_centroid`).
CENTROID_ROWS = {
    "L2N": "SimpleShot L2N (pretrained features)",
    "CL2N": "SimpleShot CL2N (pretrained features)",
}


def best_centroid_row(rows: dict, shots: int) -> str:
    """The SimpleShot row MTL is paired against at ``shots``: whichever of `CENTROID_ROWS` scored
    higher on the very test episodes of the table — the baseline gets the benefit of the doubt
    (on ``glyph_scenes`` L2N wins, on the folder sets CL2N mostly)."""
    present = [name for name in CENTROID_ROWS.values() if shots in rows.get(name, {})]
    return max(present, key=lambda name: rows[name][shots].mean) if present else CENTROID_ROWS["CL2N"]


def _say(verbose: bool):
    return print if verbose else (lambda *a, **k: None)


def _shots(config: ExperimentConfig, shots) -> tuple[int, ...]:
    return tuple(config.shots if shots is None else shots)


@writes_run_folder
def pretrain_stage(
    config: ExperimentConfig,
    run_dir: str,
    verbose: bool = True,
    tensorboard: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    restart: bool = False,
    *,
    splits=None,
    plots: bool = True,
) -> str:
    """Pretrain the backbone into a run folder (``mtl-keras pretrain``).

    Writes ``config.json``, ``pretrained_backbone.weights.h5``, the ``pretrain``
    history in ``metrics.json``, TensorBoard logs in ``logs/pretrain`` and the plots.
    Skipped when an earlier run of the folder completed it; resumes an interrupted
    pretraining (`RunProgress`; ``restart=True`` starts over); under a multi-worker
    ``strategy`` non-chief workers write to `output_dir`. Prints a warning when the
    backbone barely separates the base classes (`weak_pretraining`).

    Args:
        config: the experiment settings.
        run_dir: the run folder.
        verbose: progress output.
        tensorboard: log to ``logs/pretrain``.
        strategy: a `tf.distribute` strategy to train under.
        restart: forget the folder's earlier progress.
        splits: the benchmark's ``(train, val, test)`` already loaded (default: load the
            config's; classes too small for the episodes are only reported here).
        plots: write the run folder's plots (`plot_run`) at the end.

    Returns:
        The path of the pretrained backbone weights.
    """
    say = _say(verbose)
    check_strategy(config, strategy)
    run_dir, progress = open_run(config, run_dir, strategy, restart)
    splits = splits or load_config_benchmark(config, small_classes="warn")
    path = os.path.join(run_dir, PRETRAINED_WEIGHTS)
    if progress.finished("pretrain", path):
        say(f"Pretraining: done in an earlier run ({path})")
        history = progress.history("pretrain")
    else:
        say(
            f"Pretraining {config.backbone} {tuple(config.widths)} on {splits.train.num_classes} base classes"
            + (" (resuming)" if progress.started("pretrain") else "")
        )
        model, history = pretrain(
            config,
            splits.train,
            verbose=verbose,
            callbacks=tensorboard_callbacks(os.path.join(run_dir, "logs", "pretrain"))
            if tensorboard
            else None,
            strategy=strategy,
            backup_dir=progress.backup_dir("pretrain"),
        )
        bad = non_finite_weights(model.backbone)
        if bad:
            epochs = len(history.get("loss", []))
            raise ValueError(
                f"Pretraining diverged: after {epochs} epoch(s) weight '{bad}' holds NaN or inf (loss "
                f"{history.get('loss', [float('nan')])[-1]:.4g}); nothing was saved to {path}. Lower the rate "
                f"(--set pretrain_lr=..., now {config.pretrain_lr:g}) and run again with --restart."
            )
        save_weights_atomic(model.backbone, path)
        progress.complete("pretrain", history)
        say(f"Pretrained backbone: {path}")
    weak = weak_pretraining(history, splits.train.num_classes)
    if weak:
        print(weak, flush=True)  # before meta-training, even with verbose=False
    update_metrics(
        run_dir,
        {**run_info(config, splits), "histories": {"pretrain": history}, "warnings": [weak] if weak else []},
    )
    if plots:
        plot_run(run_dir)
    return path


@writes_run_folder
def meta_train_stage(
    config: ExperimentConfig,
    run_dir: str,
    weights_path: str | None = None,
    verbose: bool = True,
    tensorboard: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    restart: bool = False,
    *,
    shots: tuple[int, ...] | None = None,
    splits=None,
    plots: bool = True,
) -> dict[int, str]:
    """Meta-train one MTL model per shot setting from pretrained weights (``mtl-keras meta-train``).

    Each model keeps its best validation epoch (`meta_train`; epoch 0, the pretrained model,
    competes) in ``mtl_{K}shot.weights.h5``; its history goes into ``metrics.json`` (``MTL
    {K}-shot``). A shot setting completed in an earlier run of the folder is skipped.

    Args:
        config: the experiment settings.
        run_dir: the run folder; its ``pretrained_backbone.weights.h5`` is used
            unless ``weights_path`` is given (a non-chief worker of a multi-worker strategy
            uses its own copy in `output_dir` where it has one).
        weights_path: a pretrained backbone weights file (``.weights.h5``) of the
            configured backbone.
        verbose: progress output.
        tensorboard: log to ``logs/mtl_{K}shot``.
        strategy: a `tf.distribute` strategy to train under (see ``docs/distributed.md``);
            non-chief workers of a multi-worker strategy write to `output_dir`.
        restart: start over instead of resuming an interrupted meta-training of this
            run folder (`RunProgress`).
        shots: the shot settings (default ``config.shots``).
        splits: the benchmark already loaded and checked (default: load the config's).
        plots: write the run folder's plots at the end.

    Returns:
        ``{K: checkpoint path}`` (``mtl_{K}shot.weights.h5``, the best validation epoch).

    Raises:
        FileNotFoundError: no pretrained weights.
    """
    say = _say(verbose)
    check_strategy(config, strategy)
    if not weights_path:
        # A non-chief worker's own copy (it pretrained in this run) where there is one: the
        # chief may not have written its file yet when the other workers get here.
        own = os.path.join(output_dir(run_dir, strategy), PRETRAINED_WEIGHTS)
        weights_path = own if os.path.exists(own) else os.path.join(run_dir, PRETRAINED_WEIGHTS)
    if not os.path.exists(weights_path):
        raise FileNotFoundError(
            f"No pretrained weights at {weights_path}: run `mtl-keras pretrain --run-dir {run_dir}` "
            "first or pass --weights."
        )
    run_dir, progress = open_run(config, run_dir, strategy, restart)
    splits = splits or load_config_benchmark(config)
    written = {}
    for k in _shots(config, shots):
        stage, path = f"mtl_{k}shot", checkpoint_path(run_dir, k)
        if progress.finished(stage, path):
            say(f"    meta-training {k}-shot: done in an earlier run ({path})")
            history = progress.history(stage)
        else:
            if progress.started(stage):
                say(f"    meta-training {k}-shot: resuming")
            model = build_meta_model(config, splits.train.channels, weights_path, strategy)
            history = meta_train(
                config,
                model,
                splits.train,
                splits.val,
                k,
                path,
                verbose=verbose,
                callbacks=tensorboard_callbacks(os.path.join(run_dir, "logs", stage))
                if tensorboard
                else None,
                backup_dir=progress.backup_dir(stage),
            )
            progress.complete(stage, history)
        kept = history["kept_epoch"][0]
        say(
            f"    {config.ways}-way {k}-shot MTL weights: {path}; kept meta-training epoch {kept} of "
            f"{config.meta_epochs} by validation accuracy"
            + (" (0 = the pretrained model: no epoch beat it)" if kept == 0 else "")
        )
        update_metrics(run_dir, {**run_info(config, splits), "histories": {f"MTL {k}-shot": history}})
        written[k] = path
    if plots:
        plot_run(run_dir)
    return written


def _save_evaluation(run_dir: str, shots: int, details: dict, benchmark: str, tensorboard: bool) -> None:
    """Write an evaluation's per-class statistics and sample episode into the run folder (and
    the episode into TensorBoard, ``logs/test_{K}shot``)."""
    key = f"{shots}-shot"
    update_metrics(
        run_dir,
        {
            "per_class": {
                key: {k: details[k] for k in ("class_ids", "class_names", "accuracy", "episodes", "worst")}
            },
            "hard_classes": {key: {n: w for n, w in zip(details["class_names"], details["worst"]) if w}},
            "episodes": {key: os.path.join("episodes", f"sample_{shots}shot.npz")},
        },
    )
    os.makedirs(os.path.join(run_dir, "episodes"), exist_ok=True)
    np.savez_compressed(os.path.join(run_dir, "episodes", f"sample_{shots}shot.npz"), **details["sample"])
    if tensorboard and tensorboard_available():
        sample = details["sample"]
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_episode_grid(
                sample["support_images"],
                sample["support_labels"],
                sample["query_images"],
                sample["query_labels"],
                os.path.join(tmp, "episode.png"),
                query_predictions=sample["query_predictions"],
                class_names=sample["class_names"],
                title=f"{benchmark}: a test episode ({shots}-shot)",
            )
            write_episode_image(os.path.join(run_dir, "logs", f"test_{shots}shot"), png, tag="test_episode")


@writes_run_folder
def evaluate_stage(
    config: ExperimentConfig,
    run_dir: str,
    weights_path: str | None = None,
    episodes: int | None = None,
    verbose: bool = True,
    tensorboard: bool = True,
    *,
    shots: tuple[int, ...] | None = None,
    pretrained: bool = False,
    splits=None,
    plots: bool = True,
) -> dict[int, EvaluationResult]:
    """Evaluate on test episodes (``mtl-keras evaluate``): the meta-trained model, or the
    pretrained baselines (``pretrained=True``).

    For each K: builds the model (`build_meta_model`), loads ``mtl_{K}shot.weights.h5`` (or
    ``weights_path``; with ``pretrained`` the backbone weights ``pretrained_backbone.weights.h5``
    or ``weights_path``, no meta-training), runs `evaluate_episodes` on ``episodes`` (default
    ``config.test_episodes``) test episodes of seed ``config.seed + 100`` — the same episodes
    for every row — and writes the result into ``metrics.json`` (``results`` → `MTL_ROW` or
    `BASELINE_ROW`). With ``pretrained`` also nearest centroid on the same features and
    episodes (SimpleShot, `evaluate_nearest_centroid`, L2N and CL2N centred on the training
    classes' mean feature: `CENTROID_ROWS`). For the meta-trained model also the per-class
    accuracy, failure-class counts and a sample episode (and that episode into TensorBoard,
    ``logs/test_{K}shot``).

    Returns:
        ``{K: EvaluationResult}``.

    Raises:
        FileNotFoundError: no weights to evaluate.
    """
    say = _say(verbose)
    os.makedirs(run_dir, exist_ok=True)
    writable = os.access(run_dir, os.W_OK)
    if not writable:
        warnings.warn(
            f"'{run_dir}' is read-only: evaluating it, but its results are only printed (metrics.json, "
            "the evaluation files, TensorBoard logs and plots are not written). Copy the folder somewhere "
            "writable to keep them.",
            stacklevel=2,
        )

    def record(updates: dict) -> None:  # into metrics.json, where the folder can be written
        if writable:
            update_metrics(run_dir, updates)

    splits = splits or load_config_benchmark(config)
    record(run_info(config, splits))
    row = BASELINE_ROW if pretrained else MTL_ROW
    results = {}
    for k in _shots(config, shots):
        path = weights_path or (
            os.path.join(run_dir, PRETRAINED_WEIGHTS) if pretrained else checkpoint_path(run_dir, k)
        )
        if not os.path.exists(path):
            stage = "pretrain" if pretrained else "meta-train"
            raise FileNotFoundError(
                f"No {'pretrained' if pretrained else 'meta-trained'} weights at {path}: run "
                f"`mtl-keras {stage} --run-dir {run_dir}` first or pass --weights."
            )
        if pretrained:
            model = build_meta_model(config, splits.test.channels, path)
        else:
            model = build_meta_model(config, splits.test.channels)
            model.load_weights(path)
        episode_setting = dict(
            ways=config.ways,
            shots=k,
            queries=config.test_queries,
            episodes=episodes or config.test_episodes,
            seed=config.seed + 100,
        )
        # One embedding pass for the inner loop and the nearest centroid (batch norm frozen; the
        # transductive modes embed each episode on its own, nearest centroid the split).
        features = embed_split(model, splits.test) if pretrained or model.batch_norm == "frozen" else None
        result, details = evaluate_episodes(
            model,
            splits.test,
            **episode_setting,
            verbose=verbose,
            return_details=True,
            features=features if model.batch_norm == "frozen" else None,
        )
        record({"results": {row: {f"{k}-shot": result.to_dict()}}})
        if pretrained:
            mean = base_feature_mean(model, splits.train, seed=config.seed)
            for normalization, name in CENTROID_ROWS.items():
                centroid = evaluate_nearest_centroid(
                    model,
                    splits.test,
                    **episode_setting,
                    normalization=normalization,
                    mean_feature=mean,
                    features=features,
                )
                record({"results": {name: {f"{k}-shot": centroid.to_dict()}}})
                say(f"    {name}: {centroid}")
        if not pretrained and writable:
            _save_evaluation(run_dir, k, details, config.benchmark, tensorboard)
        say(f"    {'pretrained + inner loop' if pretrained else 'MTL'}: {result}")
        results[k] = result
    if plots and writable:
        plot_run(run_dir)
    return results


@writes_run_folder
def export_stage(
    config: ExperimentConfig,
    run_dir: str,
    output_dir: str | None = None,
    verbose: bool = True,
    *,
    shots: tuple[int, ...] | None = None,
) -> dict[int, str]:
    """Export each meta-trained model as an ``adapt_and_classify`` SavedModel (``mtl-keras export``).

    Writes ``{output_dir or run_dir/export}/{N}way{K}shot`` from ``mtl_{K}shot.weights.h5``.

    Returns:
        ``{K: SavedModel folder}``.
    """
    channels = (
        read_metrics(run_dir).get("channels")
        or load_config_benchmark(config, small_classes="skip").train.channels
    )
    written = {}
    for k in _shots(config, shots):
        path = checkpoint_path(run_dir, k)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No meta-trained weights at {path}: run `mtl-keras meta-train --run-dir {run_dir}` first."
            )
        model = build_meta_model(config, channels)
        model.load_weights(path)
        folder = os.path.join(output_dir or os.path.join(run_dir, "export"), f"{config.ways}way{k}shot")
        written[k] = model.export(folder, verbose=verbose)
    return written
