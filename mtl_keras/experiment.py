"""The main job: pretrain → meta-train (MTL) → evaluate → export, in one run folder.

Everything the CLI's ``demo`` and ``run`` do lives here, so notebooks and scripts
can call the same steps one at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.backbones import get_backbone
from mtl_keras.callbacks import (
    BestCheckpoint,
    HardTaskMining,
    ResumableCheckpoint,
    StopOnNonFiniteLoss,
    TimeEstimate,
    _atomic_write_text,
    format_duration,
    save_weights_atomic,
)
from mtl_keras.config import ExperimentConfig
from mtl_keras.data.augment import pretrain_augmentation
from mtl_keras.data.episodes import make_episodes, pretrain_dataset
from mtl_keras.data.hard_tasks import HardTaskPool
from mtl_keras.data.registry import load_benchmark
from mtl_keras.distribute import worker_index
from mtl_keras.evaluation import EpisodeAccuracy, EvaluationResult, evaluate_episodes, paired_difference
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.models.pretrain import PretrainModel
from mtl_keras.plots import plot_accuracy_vs_inner_steps, plot_episode_grid, plot_learning_curves, plot_run
from mtl_keras.run_lock import locks_run_folder

BASELINE_ROW = "pretrained + inner loop (no meta-training)"
MTL_ROW = "MTL (SS, meta-trained)"
PRETRAINED_WEIGHTS = "pretrained_backbone.weights.h5"


def _verbose_mode(verbose: bool) -> int:
    return 0 if not verbose else (1 if sys.stdout.isatty() else 2)


def build_backbone(config: ExperimentConfig, channels: int) -> keras.Model:
    """The configured backbone for ``(image_size, image_size, channels)`` images."""
    kwargs = {"widths": tuple(config.widths)} if config.backbone != "conv4" else {"filters": config.widths[0]}
    return get_backbone(config.backbone, (config.image_size, config.image_size, channels), **kwargs)


def pretrain(
    config: ExperimentConfig,
    train_split,
    verbose: bool = True,
    callbacks: list | None = None,
    strategy: tf.distribute.Strategy | None = None,
    backup_dir: str | None = None,
):
    """Train the backbone as a classifier over the base classes.

    Args:
        config: the experiment settings (``pretrain_*``, backbone, seed).
        train_split: the base classes.
        verbose: progress output, with the stage's time estimate (`TimeEstimate`).
        callbacks: passed to ``fit`` (e.g. `tensorboard_callbacks`).
        strategy: a `tf.distribute` strategy to build and train the model under.
        backup_dir: back up the training state there at every epoch end
            (`ResumableCheckpoint`) and resume from it if a backup is there: a crash
            costs at most one epoch. (The resumed run reshuffles the images from
            the start, so it is not bit-identical to an uninterrupted one.)

    Returns:
        ``(PretrainModel, history dict)``. 10% of each class is held out and
        reported as ``val_accuracy``.
    """
    keras.utils.set_random_seed(config.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        backbone = build_backbone(config, train_split.channels)
        model = PretrainModel(
            backbone,
            train_split.num_classes,
            augmentation=pretrain_augmentation(seed=config.seed) if config.pretrain_augment else None,
            dropout=config.pretrain_dropout,
        )
        train_ds, held_ds = pretrain_dataset(
            train_split, batch_size=config.pretrain_batch_size, seed=config.seed, holdout=0.1
        )
        per_epoch = int(train_ds.cardinality())
        per_epoch = per_epoch if per_epoch > 0 else sum(1 for _ in train_ds)
        steps = per_epoch * max(1, config.pretrain_epochs)
        schedule = keras.optimizers.schedules.CosineDecay(config.pretrain_lr, decay_steps=steps)
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    backup = ResumableCheckpoint(backup_dir, verbose=int(verbose), chief_only=False) if backup_dir else None
    # No held-out images when classes are tiny (10% of 2 rounds to 0): then no validation.
    held = held_ds if int(held_ds.cardinality()) != 0 else None
    stop = []
    if config.pretrain_patience and held is not None:
        stop = [
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                mode="max",
                patience=config.pretrain_patience,
                restore_best_weights=True,
                verbose=int(verbose),
            )
        ]
        if verbose:
            print(
                f"Pretraining: at most {config.pretrain_epochs} epochs, stopping when the held-out accuracy "
                f"has not improved for {config.pretrain_patience} (the estimate below is for all of them)",
                flush=True,
            )
    history = model.fit(
        train_ds,
        shuffle=False,  # a tf.data pipeline: it shuffles itself (Keras warns otherwise)
        validation_data=held,
        epochs=config.pretrain_epochs,
        verbose=_verbose_mode(verbose),
        callbacks=[
            *([TimeEstimate("pretraining")] if verbose else []),
            *stop,
            *([backup] if backup else []),
            *(callbacks or []),
        ],
    )
    return model, _full_history(history.history, backup)


#: Below this accuracy on the base classes a pretrained backbone is reported as weak.
WEAK_PRETRAINING_ACCURACY = 0.5


def weak_pretraining(history: dict, num_classes: int) -> str | None:
    """A warning when pretraining ended with a backbone that barely separates the base classes.

    Judged on the best held-out accuracy (``val_accuracy``) when there is one, else the
    training accuracy of the last epoch, against `WEAK_PRETRAINING_ACCURACY`.

    Returns:
        The warning (what was reached, chance, what to do), or None for a usable backbone.
    """
    held = [v for v in history.get("val_accuracy", []) if v == v]
    accuracy, what = (
        (max(held), "held-out") if held else (history.get("accuracy", [float("nan")])[-1], "training")
    )
    if not accuracy < WEAK_PRETRAINING_ACCURACY:
        return None
    epochs = len(history.get("loss", []))
    return (
        f"Warning: pretraining ended after {epochs} epoch(s) with {100 * accuracy:.1f}% {what} accuracy over "
        f"{num_classes} base classes (chance {100 / num_classes:.1f}%): the backbone barely separates them, "
        "and meta-training and the few-shot results start from weak features. Pretrain longer "
        "(--set pretrain_epochs=N with --set pretrain_patience=5 stops when the held-out accuracy stops "
        "improving), or use a smaller backbone (--set widths=...) for few images."
    )


def _full_history(history: dict, backup: ResumableCheckpoint | None) -> dict:
    """A fit's history, with the epochs of earlier (interrupted) runs when resumed from ``backup``."""
    if backup is None or not backup.history:
        return dict(history)
    keys = sorted({k for epoch in backup.history for k in epoch})
    return {k: [epoch.get(k, float("nan")) for epoch in backup.history] for k in keys}


@contextlib.contextmanager
def dtype_policy(name: str):
    """Build layers under the Keras dtype policy ``name`` (e.g. ``"mixed_bfloat16"``), then restore it."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def meta_transfer_model(config: ExperimentConfig, backbone: keras.Model, **kwargs) -> MetaTransferModel:
    """An uncompiled `MetaTransferModel` over ``backbone`` with the config's ways and inner loop.

    ``kwargs`` go to `MetaTransferModel` (e.g. ``set_meta_phase=False`` for fine-tuning).
    """
    kwargs.setdefault("train_batch_norm", config.train_batch_norm)
    kwargs.setdefault("head_initializer", config.head_init)
    kwargs.setdefault("batch_norm", config.batch_norm)
    return MetaTransferModel(
        backbone,
        ways=config.ways,
        inner_steps=config.inner_steps,
        eval_inner_steps=config.eval_inner_steps,
        inner_lr=config.inner_lr,
        first_order=config.first_order,
        **kwargs,
    )


def outer_optimizers(
    config: ExperimentConfig, backbone_lr: float | None = None, head_lr: float | None = None
):
    """The two outer-loop Adams of a config: ``(backbone's (Φ), head init's)``.

    Rates ``backbone_lr`` / ``head_lr`` (default ``config.phi_lr`` / ``config.head_lr``), ε
    ``config.adam_epsilon``; with ``config.meta_lr_decay_every`` = E > 0 both rates are
    multiplied by ``config.meta_lr_decay_rate`` every E epochs of ``config.steps_per_epoch``
    steps (a staircase `keras.optimizers.schedules.ExponentialDecay`: the official code's
    ``StepLR(step_size=10, gamma=0.5)``).
    """

    def rate(value):
        if not config.meta_lr_decay_every:
            return value
        return keras.optimizers.schedules.ExponentialDecay(
            value,
            decay_steps=config.meta_lr_decay_every * config.steps_per_epoch,
            decay_rate=config.meta_lr_decay_rate,
            staircase=True,
        )

    eps = config.adam_epsilon
    return (
        keras.optimizers.Adam(
            rate(config.phi_lr if backbone_lr is None else backbone_lr), epsilon=eps, name="phi_adam"
        ),
        keras.optimizers.Adam(
            rate(config.head_lr if head_lr is None else head_lr), epsilon=eps, name="head_adam"
        ),
    )


def meta_model(
    config: ExperimentConfig,
    channels: int,
    weights_path: str | None,
    strategy: tf.distribute.Strategy | None = None,
) -> MetaTransferModel:
    """A fresh `MetaTransferModel` whose backbone carries the pretrained weights.

    With a ``strategy`` (e.g. ``tf.distribute.MirroredStrategy()``) the model and
    both optimizers are created in its scope, so ``fit`` splits every meta-batch
    across its replicas (see ``docs/distributed.md``). The backbone is built under
    the dtype policy ``config.precision`` (``"mixed_bfloat16"``: 16-bit backbone,
    float32 variables, inner loop and updates), whatever the global Keras policy is —
    float32 on a CPU-only machine without native bfloat16 (`mtl_keras.hardware.resolve_precision`).
    """
    if strategy is not None:
        with strategy.scope():
            return meta_model(config, channels, weights_path)
    from mtl_keras.hardware import resolve_precision
    from mtl_keras.models.weights import load_backbone_weights

    # float32 where the CPU would emulate bfloat16 (one line says so).
    with dtype_policy(resolve_precision(config.precision)):
        backbone = build_backbone(config, channels)
        if weights_path:
            load_backbone_weights(backbone, weights_path)  # names both architectures on a mismatch
        model = meta_transfer_model(config, backbone)
    optimizer, head_optimizer = outer_optimizers(config)
    model.compile(optimizer=optimizer, head_optimizer=head_optimizer)
    return model


def training_episodes(config: ExperimentConfig, train_split, shots: int, replicas: int = 1):
    """The meta-training episode stream of a config, with its `HardTaskPool` when ``config.hard_tasks``.

    The pool (periodic schedule: ``ht_hard_batches`` hard meta-batches after every
    ``ht_every`` normal ones, as the paper) receives the model's failure reports through
    ``HardTaskMining(episodes)`` in ``fit``'s callbacks. Under a strategy (``replicas`` > 1) the pipeline runs further
    ahead of training, so the pool waits longer for reports (``delay=10``, see
    ``docs/distributed.md``).

    Returns:
        ``(dataset, pool or None)``; the dataset's elements hold ``meta_batch_size`` tasks.
    """
    pool = None
    if config.hard_tasks:
        pool = HardTaskPool(
            schedule="periodic",
            every=config.ht_every,
            hard_batches=config.ht_hard_batches,
            seed=config.seed,
            **({"delay": 10} if replicas > 1 else {}),
        )
    episodes = make_episodes(
        train_split,
        config.ways,
        shots,
        config.queries,
        meta_batch_size=config.meta_batch_size,
        seed=config.seed,
        hard_tasks=pool,
    )
    return episodes, pool


def meta_train(
    config: ExperimentConfig,
    model: MetaTransferModel,
    train_split,
    val_split,
    shots: int,
    checkpoint_path: str,
    verbose: bool = True,
    callbacks: list | None = None,
    backup_dir: str | None = None,
) -> dict:
    """Meta-train ``model`` on ``shots``-shot episodes; keep the best validation epoch.

    The weights with the highest mean validation-episode accuracy — the pretrained
    model before any meta-training (epoch 0) competes too — are written atomically
    to ``checkpoint_path`` and restored into ``model`` at the end.

    Args:
        config: the experiment settings.
        model: a compiled `MetaTransferModel` (e.g. from `meta_model`).
        train_split, val_split: base and validation classes.
        shots: ``K``.
        checkpoint_path: the best weights (``.weights.h5``).
        verbose: progress output, with the stage's time estimate (`TimeEstimate`).
        callbacks: passed to ``fit`` after the checkpoint callbacks.
        backup_dir: back up the whole training state (weights, both optimizers,
            episode stream, hard-task pool) there at every epoch end and, if a backup is there,
            resume from it: the resumed run trains the same meta-batches as an
            uninterrupted one (`ResumableCheckpoint`).

    With ``config.hard_tasks`` the meta-batches include hard tasks (`HardTaskPool`,
    periodic: ``ht_hard_batches`` hard meta-batches after every ``ht_every`` normal
    ones, as the paper) and the history holds ``hard_tasks`` per epoch.

    Returns:
        The history (every epoch, including those of an interrupted earlier run),
        with ``initial_val_accuracy`` and ``kept_epoch`` (0 = the pretrained model).
    """
    keras.utils.set_random_seed(config.seed)
    train_eps, pool = training_episodes(
        config, train_split, shots, replicas=model.distribute_strategy.num_replicas_in_sync
    )
    validation = EpisodeAccuracy(
        val_split, config.ways, shots, config.queries, config.val_episodes, config.seed + 1
    )
    # Every worker of a multi-worker strategy writes its own backup (see `output_dir`).
    backup = (
        ResumableCheckpoint(backup_dir, train_eps, verbose=int(verbose), chief_only=False)
        if backup_dir
        else None
    )
    state = backup.read_state() if backup is not None else None
    # Epoch 0: the pretrained model before any meta-training competes too.
    initial = validation.evaluate(model).mean
    best = BestCheckpoint(checkpoint_path, monitor="val_accuracy", mode="max", best=initial)
    if state is not None and os.path.exists(checkpoint_path):
        # Resuming: the best of the epochs already trained is on disk (saved before the backup).
        best.best = max([initial, *(e["val_accuracy"] for e in state["history"] if "val_accuracy" in e)])
    else:
        save_weights_atomic(model, checkpoint_path)
    # `best` before `backup`: a backed-up epoch's best weights are always on disk already; the
    # hard-task logger too: it closes the pool's epoch, which the backup then saves.
    logger = [HardTaskMining(train_eps, top_k=3, verbose=int(verbose))] if pool is not None else []
    try:
        history = model.fit(
            train_eps,
            shuffle=False,  # a tf.data pipeline: it shuffles itself (Keras warns otherwise)
            steps_per_epoch=config.steps_per_epoch,
            epochs=config.meta_epochs,
            callbacks=[
                validation,  # first: the callbacks after it read its val_accuracy
                *([TimeEstimate(f"meta-training {shots}-shot")] if verbose else []),
                best,
                *logger,
                *([backup] if backup else []),
                StopOnNonFiniteLoss(),
                *(callbacks or []),
            ],
            verbose=_verbose_mode(verbose),
        )
    finally:
        if pool is not None:
            model.task_feedback = None
    model.load_weights(checkpoint_path)
    hist = _full_history(history.history, backup)
    hist["initial_val_accuracy"] = [initial]
    # Epoch kept: 0 (the pretrained model) unless a meta-training epoch beat it on validation.
    val = [initial, *hist.get("val_accuracy", [])]
    hist["kept_epoch"] = [int(max(range(len(val)), key=lambda i: (val[i], -i)))]
    return hist


def format_table(
    rows: dict[str, dict[int, EvaluationResult]], ways: int, baseline: str | None = BASELINE_ROW
) -> str:
    """A Markdown table: one row per method; per shot setting the accuracy (mean ± 95% CI) and,
    when a ``baseline`` row is given, the paired difference against it.

    The paired column is the mean ± 95% CI of the per-episode accuracy differences (every row
    is evaluated on the same episodes): a CI that excludes 0 is a difference the episodes
    support, however much the two rows' own CIs overlap.
    """
    shots = sorted({s for r in rows.values() for s in r})
    paired = baseline is not None and baseline in rows
    header = ["method"]
    for s in shots:
        header.append(f"{ways}-way {s}-shot")
        if paired:
            header.append(f"{s}-shot − pretrained (paired)")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    for name, by_shot in rows.items():
        cells = []
        for s in shots:
            result = by_shot.get(s)
            cells.append(f"{100 * result.mean:.2f} ± {100 * result.ci95:.2f}" if result else "–")
            if paired:
                base = rows[baseline].get(s)
                if name == baseline or result is None or base is None:
                    cells.append("–")
                else:
                    mean, ci = paired_difference(result, base)
                    cells.append(f"{100 * mean:+.2f} ± {100 * ci:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class RunProgress:
    """Which training stages of a run folder are complete, so that a rerun resumes.

    Kept in ``RUN_DIR/backup/progress.json`` (written atomically) with the config it
    was made with; each unfinished stage backs up its state in
    ``RUN_DIR/backup/<stage>`` (`ResumableCheckpoint`). A rerun with the same run
    folder skips the completed stages and resumes the interrupted one after its last
    completed epoch. Settings that do not change training (``shots``,
    ``test_episodes``, ``test_queries``, ``eval_inner_steps``, ``root``) may change
    between runs; any other difference is an error naming the keys.

    Args:
        run_dir: the run folder (outputs of this process).
        config: this run's settings.
        restart: forget earlier progress (delete ``RUN_DIR/backup``).
    """

    FILE = "progress.json"
    FREE_KEYS = ("shots", "test_episodes", "test_queries", "eval_inner_steps", "root", "allow_pickle")

    def __init__(self, run_dir: str, config: ExperimentConfig, restart: bool = False):
        self.folder = os.path.join(run_dir, "backup")
        if restart and os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
        self.path = os.path.join(self.folder, self.FILE)
        current = json.loads(json.dumps(config.to_dict()))
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.state = json.load(f)
            stored = self.state["config"]
            differ = sorted(
                k
                for k in set(stored) | set(current)
                if k not in self.FREE_KEYS and stored.get(k) != current.get(k)
            )
            if differ:
                changes = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in differ)
                raise ValueError(
                    f"'{run_dir}' holds a run made with other settings ({changes}); resuming it would mix "
                    "the two. Use another --run-dir, the same settings, or --restart to start it over."
                )
        else:
            self.state = {"config": current, "stages": {}}

    def done(self, stage: str) -> bool:
        return bool(self.state["stages"].get(stage, {}).get("done"))

    def history(self, stage: str) -> dict:
        return self.state["stages"][stage]["history"]

    def backup_dir(self, stage: str) -> str:
        return os.path.join(self.folder, stage)

    def started(self, stage: str) -> bool:
        return os.path.exists(os.path.join(self.backup_dir(stage), ResumableCheckpoint.STATE_FILE))

    def complete(self, stage: str, history: dict) -> None:
        """Record ``stage`` as done (its backup is no longer needed)."""
        os.makedirs(self.folder, exist_ok=True)
        self.state["stages"][stage] = {
            "done": True,
            "history": json.loads(json.dumps(history, default=_jsonable)),
        }
        _atomic_write_text(self.path, json.dumps(self.state, indent=1))
        shutil.rmtree(self.backup_dir(stage), ignore_errors=True)


def check_strategy(config: ExperimentConfig, strategy: tf.distribute.Strategy | None) -> None:
    """Fail fast when ``config.meta_batch_size`` does not split over the strategy's replicas."""
    replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
    if config.meta_batch_size % replicas:
        fit = replicas * -(-config.meta_batch_size // replicas)
        raise ValueError(
            f"Config key 'meta_batch_size' ({config.meta_batch_size}) must be a multiple of the {replicas} "
            f"replicas of the strategy: each replica trains meta_batch_size / {replicas} tasks. "
            f"Use --set meta_batch_size={fit}."
        )


def output_dir(run_dir: str, strategy: tf.distribute.Strategy | None) -> str:
    """Where this process writes: ``run_dir``, or ``run_dir/worker-{i}`` on a non-chief worker.

    Under `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the same
    program; only the chief (worker 0) writes the run folder itself, the others
    write their (identical) copies beside it so that no two processes write one file.
    """
    index = worker_index(strategy)
    return run_dir if index == 0 else os.path.join(run_dir, f"worker-{index}")


#: Decorates every function that writes a run folder: it runs holding the lock of the folder this
#: process writes (`output_dir`: each worker of a multi-worker strategy its own), see `mtl_keras.run_lock`.
_writes_run_folder = locks_run_folder(folder=lambda args: output_dir(args["run_dir"], args.get("strategy")))


def _open_run(config: ExperimentConfig, run_dir: str, strategy, restart: bool) -> tuple[str, RunProgress]:
    """This process' output folder (`output_dir`) with its `RunProgress`; writes ``config.json`` there.

    The progress is read (and checked against ``config``) before ``config.json`` is
    overwritten, so a refused resume leaves the folder as it was.
    """
    run_dir = output_dir(run_dir, strategy)
    os.makedirs(run_dir, exist_ok=True)
    progress = RunProgress(run_dir, config, restart=restart)
    config.to_json(os.path.join(run_dir, "config.json"))
    return run_dir, progress


@_writes_run_folder
def run_experiment(
    config: ExperimentConfig,
    run_dir: str,
    verbose: bool = True,
    callbacks: Callable[[str], list] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    restart: bool = False,
    details: Callable[[int, EvaluationResult, dict], None] | None = None,
) -> dict:
    """Pretrain, evaluate the pretrained baseline, meta-train with MTL, evaluate, export.

    Writes into ``run_dir``: ``config.json``, ``pretrained_backbone.weights.h5``,
    ``mtl_{K}shot.weights.h5``, ``metrics.json``, ``results.md``,
    ``learning_curves.png``, ``accuracy_vs_inner_steps.png`` and
    ``export/{N}way{K}shot`` SavedModels.

    Resumable: run it again with the same ``run_dir`` after a crash and it skips
    the completed training stages and resumes the interrupted one after its last
    completed epoch (see `RunProgress`); ``restart=True`` starts over.

    Args:
        config: the experiment settings.
        run_dir: the run folder.
        verbose: progress output.
        callbacks: a function ``stage → list of Keras callbacks`` for the ``fit`` of
            each stage, ``"pretrain"`` and ``"mtl_{K}shot"`` (`run_workflow` passes
            TensorBoard callbacks this way).
        strategy: a `tf.distribute` strategy for pretraining and meta-training
            (evaluation and export run on one device). Under a multi-worker
            strategy non-chief workers write to `output_dir`.
        restart: ignore (delete) the progress of an earlier run in ``run_dir``.
        details: called as ``details(K, result, per_class_details)`` after the MTL test
            evaluation (see `evaluate_episodes` ``return_details``).

    Returns:
        The metrics dict that is also written to ``metrics.json``; ``stage_seconds`` holds
        the seconds this call spent on each stage (loading, pretraining, each baseline
        evaluation, meta-training, test evaluation and export; None: done in an earlier run),
        printed at the end as a table when ``verbose``.
    """
    start = time.time()
    check_strategy(config, strategy)
    run_dir, progress = _open_run(config, run_dir, strategy, restart)
    if not progress.state["stages"] and os.path.exists(os.path.join(run_dir, "metrics.json")):
        os.remove(os.path.join(run_dir, "metrics.json"))  # a new run: no numbers of an earlier one
    say = print if verbose else (lambda *a, **k: None)
    # Seconds this process spent on each stage; None: done in an earlier run.
    stage_seconds: dict[str, float | None] = {}

    @contextlib.contextmanager
    def timed(stage: str):
        began = time.perf_counter()
        yield
        stage_seconds[stage] = round(time.perf_counter() - began, 1)

    say(f"[1/4] Loading benchmark '{config.benchmark}'")
    with timed("loading the benchmark"):
        train, val, test = load_config_benchmark(config)

    weights_path = os.path.join(run_dir, PRETRAINED_WEIGHTS)
    if progress.done("pretrain") and os.path.exists(weights_path):
        say(f"[2/4] Pretraining: done in an earlier run ({weights_path})")
        pre_hist = progress.history("pretrain")
        stage_seconds["pretraining"] = None
    else:
        say(
            f"[2/4] Pretraining {config.backbone} {tuple(config.widths)} on {train.num_classes} base classes"
            + (" (resuming)" if progress.started("pretrain") else "")
        )
        with timed("pretraining"):
            pre_model, pre_hist = pretrain(
                config,
                train,
                verbose=verbose,
                callbacks=callbacks("pretrain") if callbacks else None,
                strategy=strategy,
                backup_dir=progress.backup_dir("pretrain"),
            )
            save_weights_atomic(pre_model.backbone, weights_path)
        progress.complete("pretrain", pre_hist)
    histories = {"pretrain": pre_hist}
    weak = weak_pretraining(pre_hist, train.num_classes)
    if weak:
        print(weak, flush=True)  # before meta-training, even with verbose=False

    def evaluate_test(model, shots, **kwargs):  # the same test episodes for every row
        return evaluate_episodes(
            model,
            test,
            config.ways,
            shots,
            config.test_queries,
            episodes=config.test_episodes,
            seed=config.seed + 100,
            verbose=verbose,
            **kwargs,
        )

    rows: dict[str, dict[int, EvaluationResult]] = {BASELINE_ROW: {}, MTL_ROW: {}}
    curves = {}
    for shots in config.shots:
        stage = f"mtl_{shots}shot"
        say(f"[3/4] {config.ways}-way {shots}-shot: baseline evaluation, then meta-training")
        with timed(f"baseline evaluation {shots}-shot"):
            single = meta_model(config, train.channels, weights_path)  # evaluation and export: one device
            baseline = evaluate_test(single, shots)
        say(f"    pretrained + inner loop: {baseline}")
        rows[BASELINE_ROW][shots] = baseline
        path = checkpoint_path(run_dir, shots)
        if progress.done(stage) and os.path.exists(path):
            say(f"    meta-training: done in an earlier run ({path})")
            hist = progress.history(stage)
            stage_seconds[f"meta-training {shots}-shot"] = None
        else:
            if progress.started(stage):
                say("    meta-training: resuming")
            with timed(f"meta-training {shots}-shot"):
                model = (
                    single if strategy is None else meta_model(config, train.channels, weights_path, strategy)
                )
                hist = meta_train(
                    config,
                    model,
                    train,
                    val,
                    shots,
                    path,
                    verbose=verbose,
                    callbacks=callbacks(stage) if callbacks else None,
                    backup_dir=progress.backup_dir(stage),
                )
            progress.complete(stage, hist)
        single.load_weights(path)
        histories[f"MTL {shots}-shot"] = hist
        say(f"[4/4] {config.ways}-way {shots}-shot: test evaluation ({config.test_episodes} episodes)")
        with timed(f"test evaluation {shots}-shot"):
            result, per_class = evaluate_test(single, shots, return_details=True)
        kept = hist["kept_epoch"][0]
        say(
            f"    MTL: {result}; kept meta-training epoch {kept} of {config.meta_epochs} by validation accuracy"
            + (" (0 = the pretrained model: no epoch beat it)" if kept == 0 else "")
        )
        rows[MTL_ROW][shots] = result
        if details is not None:
            details(shots, result, per_class)
        curves[f"pretrained, {shots}-shot"] = baseline
        curves[f"MTL, {shots}-shot"] = result
        with timed(f"export {shots}-shot"):
            single.export(os.path.join(run_dir, "export", f"{config.ways}way{shots}shot"), verbose=verbose)

    table = format_table(rows, config.ways)
    plot_learning_curves(
        histories,
        os.path.join(run_dir, "learning_curves.png"),
        title=f"{config.benchmark}: pretraining and meta-training",
    )
    plot_accuracy_vs_inner_steps(curves, os.path.join(run_dir, "accuracy_vs_inner_steps.png"))
    metrics = update_metrics(
        run_dir,
        {
            "source_commit": source_commit(),
            "benchmark": config.benchmark,
            "splits": _split_summary((train, val, test)),
            "channels": train.channels,
            "results": {name: {f"{k}-shot": r.to_dict() for k, r in by.items()} for name, by in rows.items()},
            "paired_difference": {
                f"{k}-shot": dict(zip(("mean", "ci95"), paired_difference(r, rows[BASELINE_ROW][k])))
                for k, r in rows[MTL_ROW].items()
            },
            "histories": histories,
            "seconds": round(time.time() - start, 1),
            "stage_seconds": stage_seconds,
            "warnings": [weak] if weak else [],
        },
    )
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    say("")
    say(
        f"Test accuracy (%) on {test.num_classes} unseen {config.benchmark} classes, "
        f"{config.test_episodes} episodes (the same for both rows), mean ± 95% CI; the paired columns: "
        "mean ± 95% CI of the per-episode difference against the pretrained row:"
    )
    say(table)
    say("\n" + format_stage_times(stage_seconds, metrics["seconds"]))
    say(f"\nRun folder: {run_dir} ({metrics['seconds']:.0f} s)")
    return metrics


def format_stage_times(stage_seconds: dict[str, float | None], total: float) -> str:
    """The time-per-stage table `run_experiment` prints (None: done in an earlier run)."""
    width = max(map(len, [*stage_seconds, "total"]))
    lines = ["Time per stage:"]
    for stage, seconds in stage_seconds.items():
        lines.append(
            f"  {stage:<{width}}  {'done in an earlier run' if seconds is None else format_duration(seconds)}"
        )
    lines.append(f"  {'total':<{width}}  {format_duration(total)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- workflow stages
# The `mtl-keras` subcommands, one function each: every stage reads and writes the
# same run folder, so `pretrain` → `meta-train` → `evaluate` → `export` → `plot`
# run one after the other (possibly days apart) give what `run` gives in one go.


def checkpoint_path(run_dir: str, shots: int) -> str:
    """Where the meta-trained ``shots``-shot weights of a run live."""
    return os.path.join(run_dir, f"mtl_{shots}shot.weights.h5")


def load_config_benchmark(config: ExperimentConfig, verbose: bool = True, small_classes: str = "raise"):
    """`load_benchmark` with the config's benchmark, root, image size and ``allow_pickle``, checked
    against every episode the config will draw (`check_episode_settings`) before any training.

    ``small_classes``: ``"raise"`` (stages that draw episodes), ``"warn"`` (pretraining alone:
    it draws no episode, so it runs and prints what the meta-training stage will refuse) or
    ``"skip"``.
    """
    splits = load_benchmark(
        config.benchmark, root=config.root, image_size=config.image_size, allow_pickle=config.allow_pickle
    )
    if small_classes == "skip":
        return splits
    try:
        return check_episode_settings(config, splits, verbose=verbose)
    except ValueError as err:
        if small_classes != "warn":
            raise
        print(f"Note (pretraining goes on; meta-training will stop here): {err}", flush=True)
        return splits


def check_episode_settings(config: ExperimentConfig, splits, verbose: bool = True):
    """Check every shot setting of ``config`` against every split, before the first training step.

    Train and validation episodes take ``shots + queries`` images of a class, test episodes
    ``shots + test_queries``, for each K in ``config.shots``. Every class too small for one of
    them is named at once (a run used to stop with the first one, after finishing the
    smaller shot settings). With ``config.drop_small_classes`` those classes are dropped
    (and named) instead.

    Args:
        config: the settings (``ways``, ``shots``, ``queries``, ``test_queries``).
        splits: ``(train, val, test)``.
        verbose: print the dropped classes.

    Returns:
        ``Benchmark(train, val, test)``, without the dropped classes.

    Raises:
        ValueError: a class too small (without ``drop_small_classes``), naming every such class
            and the fix; a split with fewer than ``ways`` classes (left).
    """
    from mtl_keras.data.registry import Benchmark

    need_of = {
        "train": max(config.shots) + config.queries,
        "val": max(config.shots) + config.queries,
        "test": max(config.shots) + config.test_queries,
    }
    checked, small_classes, few_classes = [], [], []
    for split in splits:
        need = need_of.get(split.name, max(config.shots) + config.queries)
        counts = split.class_counts()
        small = np.flatnonzero(counts < need)
        keep = np.flatnonzero(counts >= need)
        if len(small) and config.drop_small_classes and len(keep):
            if verbose:
                names = ", ".join(f"'{split.class_names[c]}' ({counts[c]})" for c in small)
                print(
                    f"Dropping {len(small)} of {split.num_classes} '{split.name}' classes with fewer than {need} "
                    f"images (drop_small_classes): {names}",
                    flush=True,
                )
            split, small = split.subset(keep), small[:0]
        if len(small):
            listed = ", ".join(f"'{split.class_names[c]}' has {counts[c]}" for c in small[:10])
            more = f" and {len(small) - 10} more" if len(small) > 10 else ""
            small_classes.append(f"split '{split.name}': {listed}{more} (of {split.num_classes} classes)")
        elif split.num_classes < config.ways:
            few_classes.append(f"split '{split.name}' has {split.num_classes}")
        checked.append(split)
    if small_classes:
        shots = max(config.shots)
        raise ValueError(
            f"Some classes are too small for the configured episodes: {config.ways}-way {shots}-shot needs "
            f"{need_of['train']} images per class in train and val ({shots} support + {config.queries} queries) "
            f"and {need_of['test']} in test ({config.test_queries} test queries): "
            + "; ".join(small_classes)
            + ". Checked before any training. Drop them with --set drop_small_classes=true (they are named), "
            "or lower shots / queries / test_queries."
        )
    if few_classes:
        raise ValueError(
            f"{config.ways}-way episodes need {config.ways} classes per split, but "
            + ", ".join(few_classes)
            + (" (after dropping the small ones)" if config.drop_small_classes else "")
            + ". Lower ways (--set ways=N) or add classes."
        )
    return Benchmark(*checked)


class TrainingScalarsLogger(keras.callbacks.Callback):
    """TensorBoard scalars Keras' own callback does not write, once per epoch.

    ``learning_rate/phi`` and ``learning_rate/head`` (the two outer-loop optimizers of a
    `MetaTransferModel`; ``learning_rate/optimizer`` for a plain model), and, when the
    model has a hard-task pool as ``task_feedback`` (anything with a ``stats()`` dict),
    its numeric counters as ``hard_tasks/<name>``. Written to ``log_dir/train``
    next to the `keras.callbacks.TensorBoard` event files.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        head = getattr(self.model, "head_optimizer", None)
        optimizers = (
            (("phi", self.model.optimizer), ("head", head))
            if head is not None
            else (("optimizer", getattr(self.model, "optimizer", None)),)
        )
        with self._writer.as_default(step=epoch):
            for name, optimizer in optimizers:
                if optimizer is not None:
                    tf.summary.scalar(f"learning_rate/{name}", float(np.asarray(optimizer.learning_rate)))
            pool = getattr(self.model, "task_feedback", None)
            stats = pool.stats() if pool is not None and callable(getattr(pool, "stats", None)) else {}
            for key, value in stats.items():
                if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                    tf.summary.scalar(f"hard_tasks/{key}", float(value))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __deepcopy__(self, memo):  # Keras Tuner deep-copies callbacks; a writer cannot be copied
        return TrainingScalarsLogger(self.log_dir)


def tensorboard_callbacks(log_dir: str) -> list:
    """TensorBoard logging for one ``fit``: loss and accuracy (train and validation,
    per epoch) through `keras.callbacks.TensorBoard`, plus `TrainingScalarsLogger`."""
    return [
        keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0),
        TrainingScalarsLogger(log_dir),
    ]


def write_episode_image(log_dir: str, png_path: str, tag: str = "episode", step: int = 0) -> None:
    """Put a PNG (e.g. `plot_episode_grid`'s) into TensorBoard's Images tab."""
    with open(png_path, "rb") as f:
        image = tf.image.decode_png(f.read(), channels=3)
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=step):
        tf.summary.image(tag, image[None], step=step)
    writer.close()


def read_metrics(run_dir: str) -> dict:
    """The run folder's ``metrics.json`` ({} when there is none yet)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def update_metrics(run_dir: str, updates: dict) -> dict:
    """Merge ``updates`` into ``run_dir/metrics.json`` (nested dicts merged key by key)."""

    def merge(into: dict, new: dict) -> dict:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    metrics = merge(read_metrics(run_dir), updates)
    path = os.path.join(run_dir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=1, default=_jsonable)
    os.replace(tmp, path)
    return metrics


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    return float(value)


def _split_summary(splits) -> dict:
    return {s.name: {"classes": s.num_classes, "images": s.num_images} for s in splits}


def _run_info(config: ExperimentConfig, splits) -> dict:
    """What later stages need to know without loading the data again."""
    return {
        "benchmark": config.benchmark,
        "splits": _split_summary(splits),
        "channels": splits.train.channels,
        "source_commit": source_commit(),
    }


def source_commit() -> str | None:
    """The git commit of the mtl_keras source that runs (``"3dec970"``; ``"3dec970+changes"``
    when tracked files differ from it), or None outside a git checkout (an installed wheel)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(
            ["git", "-C", here, *args], capture_output=True, text=True, timeout=30, check=True
        )

    try:
        commit = git("rev-parse", "--short", "HEAD").stdout.strip()
        changed = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+changes" if changed else commit


@_writes_run_folder
def pretrain_stage(
    config: ExperimentConfig,
    run_dir: str,
    verbose: bool = True,
    tensorboard: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    restart: bool = False,
) -> str:
    """Pretrain the backbone into a run folder (``mtl-keras pretrain``).

    Writes ``config.json``, ``pretrained_backbone.weights.h5``, the ``pretrain``
    history in ``metrics.json``, TensorBoard logs in ``logs/pretrain`` and the plots.
    Resumes an interrupted pretraining of the same run folder (`RunProgress`;
    ``restart=True`` starts over); under a multi-worker ``strategy`` non-chief
    workers write to `output_dir`.

    Returns:
        The path of the pretrained backbone weights.
    """
    check_strategy(config, strategy)
    run_dir, progress = _open_run(config, run_dir, strategy, restart)
    splits = load_config_benchmark(config, small_classes="warn")
    callbacks = tensorboard_callbacks(os.path.join(run_dir, "logs", "pretrain")) if tensorboard else None
    model, history = pretrain(
        config,
        splits.train,
        verbose=verbose,
        callbacks=callbacks,
        strategy=strategy,
        backup_dir=progress.backup_dir("pretrain"),
    )
    path = save_weights_atomic(model.backbone, os.path.join(run_dir, PRETRAINED_WEIGHTS))
    progress.complete("pretrain", history)
    weak = weak_pretraining(history, splits.train.num_classes)
    if weak:
        print(weak, flush=True)
    update_metrics(run_dir, {**_run_info(config, splits), "histories": {"pretrain": history}})
    plot_run(run_dir)
    if verbose:
        print(f"Pretrained backbone: {path}")
    return path


@_writes_run_folder
def meta_train_stage(
    config: ExperimentConfig,
    run_dir: str,
    weights_path: str | None = None,
    verbose: bool = True,
    tensorboard: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    restart: bool = False,
) -> dict[int, str]:
    """Meta-train one MTL model per ``config.shots`` from pretrained weights (``mtl-keras meta-train``).

    Args:
        config: the experiment settings.
        run_dir: the run folder; its ``pretrained_backbone.weights.h5`` is used
            unless ``weights_path`` is given.
        weights_path: a pretrained backbone weights file (``.weights.h5``) of the
            configured backbone.
        verbose: progress output.
        tensorboard: log to ``logs/mtl_{K}shot``.
        strategy: a `tf.distribute` strategy to train under (see ``docs/distributed.md``);
            non-chief workers of a multi-worker strategy write to `output_dir`.
        restart: start over instead of resuming an interrupted meta-training of this
            run folder (`RunProgress`).

    Returns:
        ``{K: checkpoint path}`` (``mtl_{K}shot.weights.h5``, the best validation epoch).

    Raises:
        FileNotFoundError: no pretrained weights.
    """
    check_strategy(config, strategy)
    weights_path = weights_path or os.path.join(run_dir, PRETRAINED_WEIGHTS)
    if not os.path.exists(weights_path):
        raise FileNotFoundError(
            f"No pretrained weights at {weights_path}: run `mtl-keras pretrain --run-dir {run_dir}` "
            "first or pass --weights."
        )
    run_dir, progress = _open_run(config, run_dir, strategy, restart)
    splits = load_config_benchmark(config)
    written = {}
    for shots in config.shots:
        stage = f"mtl_{shots}shot"
        model = meta_model(config, splits.train.channels, weights_path, strategy)
        callbacks = tensorboard_callbacks(os.path.join(run_dir, "logs", stage)) if tensorboard else None
        history = meta_train(
            config,
            model,
            splits.train,
            splits.val,
            shots,
            checkpoint_path(run_dir, shots),
            verbose=verbose,
            callbacks=callbacks,
            backup_dir=progress.backup_dir(stage),
        )
        progress.complete(stage, history)
        update_metrics(run_dir, {**_run_info(config, splits), "histories": {f"MTL {shots}-shot": history}})
        written[shots] = checkpoint_path(run_dir, shots)
        if verbose:
            print(f"{config.ways}-way {shots}-shot MTL weights: {written[shots]}")
    plot_run(run_dir)
    return written


def _save_evaluation(
    run_dir: str,
    shots: int,
    result: EvaluationResult | None,
    details: dict,
    benchmark: str,
    tensorboard: bool,
) -> None:
    """Write an evaluation's per-class statistics, sample episode (and result) into the run folder."""
    key = f"{shots}-shot"
    updates = {
        "per_class": {
            key: {k: details[k] for k in ("class_ids", "class_names", "accuracy", "episodes", "worst")}
        },
        "hard_classes": {key: {n: w for n, w in zip(details["class_names"], details["worst"]) if w}},
        "episodes": {key: os.path.join("episodes", f"sample_{shots}shot.npz")},
    }
    if result is not None:
        updates["results"] = {MTL_ROW: {key: result.to_dict()}}
    update_metrics(run_dir, updates)
    os.makedirs(os.path.join(run_dir, "episodes"), exist_ok=True)
    np.savez_compressed(os.path.join(run_dir, "episodes", f"sample_{shots}shot.npz"), **details["sample"])
    if tensorboard:
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


@_writes_run_folder
def evaluate_stage(
    config: ExperimentConfig,
    run_dir: str,
    weights_path: str | None = None,
    episodes: int | None = None,
    verbose: bool = True,
    tensorboard: bool = True,
) -> dict[int, EvaluationResult]:
    """Evaluate meta-trained weights on test episodes (``mtl-keras evaluate``).

    For each K of ``config.shots``: loads ``mtl_{K}shot.weights.h5`` (or
    ``weights_path``), runs `evaluate_episodes` (``return_details=True``) on ``episodes`` (default
    ``config.test_episodes``) test episodes and writes the result, per-class accuracy,
    failure-class counts and a sample episode into the run folder, the episode also
    into TensorBoard (``logs/test_{K}shot``), then the plots.

    Returns:
        ``{K: EvaluationResult}``.
    """
    os.makedirs(run_dir, exist_ok=True)
    splits = load_config_benchmark(config)
    test = splits.test
    update_metrics(run_dir, _run_info(config, splits))
    results = {}
    for shots in config.shots:
        path = weights_path or checkpoint_path(run_dir, shots)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No meta-trained weights at {path}: run `mtl-keras meta-train --run-dir {run_dir}` first "
                "or pass --weights."
            )
        model = meta_model(config, test.channels, None)
        model.load_weights(path)
        result, details = evaluate_episodes(
            model,
            test,
            config.ways,
            shots,
            config.test_queries,
            episodes=episodes or config.test_episodes,
            seed=config.seed + 100,
            verbose=verbose,
            return_details=True,
        )
        _save_evaluation(run_dir, shots, result, details, config.benchmark, tensorboard)
        results[shots] = result
        if verbose:
            print(f"MTL {result}")
    plot_run(run_dir)
    return results


@_writes_run_folder
def export_stage(
    config: ExperimentConfig, run_dir: str, output_dir: str | None = None, verbose: bool = True
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
    for shots in config.shots:
        path = checkpoint_path(run_dir, shots)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No meta-trained weights at {path}: run `mtl-keras meta-train --run-dir {run_dir}` first."
            )
        model = meta_model(config, channels, None)
        model.load_weights(path)
        folder = os.path.join(output_dir or os.path.join(run_dir, "export"), f"{config.ways}way{shots}shot")
        written[shots] = model.export(folder, verbose=verbose)
    return written


@_writes_run_folder
def run_workflow(
    config: ExperimentConfig,
    run_dir: str,
    verbose: bool = True,
    tensorboard: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    restart: bool = False,
) -> dict:
    """`run_experiment` plus what the ``mtl-keras run`` folder promises on top.

    Runs `run_experiment` (pretrain → baseline → meta-train → evaluate → export;
    resumable, see `RunProgress`) with TensorBoard callbacks (``logs/pretrain``,
    ``logs/mtl_{K}shot``), keeps the per-class accuracy, failure-class counts and a
    sample episode of its test evaluation (also shown in TensorBoard), and writes
    every plot into ``run_dir/plots``.

    Returns:
        The final ``metrics.json`` content.
    """
    out = output_dir(run_dir, strategy)
    factory = (lambda stage: tensorboard_callbacks(os.path.join(out, "logs", stage))) if tensorboard else None

    def keep(shots, result, details):
        _save_evaluation(out, shots, None, details, config.benchmark, tensorboard)

    run_experiment(
        config, run_dir, verbose=verbose, callbacks=factory, strategy=strategy, restart=restart, details=keep
    )
    written = plot_run(out)
    if verbose:
        print(f"Plots: {', '.join(os.path.basename(p) for p in written)} in {os.path.join(out, 'plots')}")
    return read_metrics(out)
