"""The two trainings of the workflow: `pretrain` (the backbone as a classifier of the base
classes) and `meta_train` (MTL on episodes, keeping the best validation epoch), each resumable
from a backup folder."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

import keras
import numpy as np

from mtl_keras.callbacks import (
    BestCheckpoint,
    EpochSeeds,
    HardTaskMining,
    ReestimateBatchNorm,
    ResumableCheckpoint,
    ResumableEarlyStopping,
    StopOnNonFiniteLoss,
    TimeEstimate,
    save_weights_atomic,
)
from mtl_keras.data.augment import pretrain_augmentation
from mtl_keras.data.episodes import pretrain_dataset
from mtl_keras.data.numpy_batches import EpochNumber, pretrain_source
from mtl_keras.evaluation import EpisodeAccuracy, kept_epoch
from mtl_keras.hardware import slow_cpu_backend_note
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.models.pretrain import PretrainModel
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.workflow.builders import (
    build_backbone,
    meta_training_callbacks,
    tf_data_pipelines,
    training_episodes,
)

if TYPE_CHECKING:
    import tensorflow as tf


#: The notes this process has printed (`say_backend_note`: once each).
_said: set[str] = set()


def say_backend_note(verbose: bool) -> None:
    """Print `slow_cpu_backend_note` once per process, before the first training, when ``verbose``."""
    note = slow_cpu_backend_note() if verbose else None
    if note and note not in _said:
        _said.add(note)
        print(note, flush=True)


def verbose_mode(verbose: bool) -> int:
    """Keras' ``fit`` verbosity for ``verbose``: a progress bar on a terminal, a line per epoch otherwise."""
    return 0 if not verbose else (1 if sys.stdout.isatty() else 2)


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
            costs at most one epoch. Each epoch's order and augmentation are drawn from
            ``(seed, epoch)`` (`EpochSeeds`), so a resumed pretraining without early
            stopping ends with the weights of an uninterrupted one (CPU float tolerance);
            with ``pretrain_patience`` the early stop's count and best weights are rebuilt
            from the backup (`ResumableEarlyStopping`).

    Returns:
        ``(PretrainModel, history dict)``. 10% of each class is held out and
        reported as ``val_accuracy``.
    """
    say_backend_note(verbose)
    keras.utils.set_random_seed(config.seed)
    # The epoch's order and augmentation seeds come from the epoch (`EpochSeeds`): a resumed
    # pretraining replays the epochs an uninterrupted one would have run. (Outside the strategy:
    # the input pipeline reads it, not the replicas.)
    if tf_data_pipelines():
        from mtl_keras._tensorflow import import_tensorflow

        tf = import_tensorflow("pretraining's tf.data pipeline")
        epoch, batches = tf.Variable(0, dtype=tf.int64, trainable=False), pretrain_dataset
    else:  # numpy batches (`pretrain_source`): no TensorFlow needed
        epoch, batches = EpochNumber(), pretrain_source
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        backbone = build_backbone(config, train_split.channels)
        model = PretrainModel(
            backbone,
            train_split.num_classes,
            augmentation=pretrain_augmentation(seed=config.seed) if config.pretrain_augment else None,
            dropout=config.pretrain_dropout,
        )
        train_ds, held_ds = batches(
            train_split, batch_size=config.pretrain_batch_size, seed=config.seed, holdout=0.1, epoch=epoch
        )
        per_epoch = int(train_ds.cardinality())
        per_epoch = per_epoch if per_epoch > 0 else sum(1 for _ in train_ds)
        steps = per_epoch * max(1, config.pretrain_epochs)
        schedule = keras.optimizers.schedules.CosineDecay(config.pretrain_lr, decay_steps=steps)
        optimizer = (
            keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-4)  # the official code's
            if config.pretrain_optimizer == "sgd"
            else keras.optimizers.Adam(schedule)
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        # Built before `fit`, so that a backup can be loaded into it (Keras builds a subclassed model
        # only when it traces the first step, after the callbacks' on_train_begin).
        model(np.zeros((1, *model.backbone.input_shape[1:]), "float32"), training=False)
    backup = ResumableCheckpoint(backup_dir, verbose=int(verbose), chief_only=False) if backup_dir else None
    # Batch norm's moving statistics recomputed from the un-augmented training images before every
    # held-out evaluation and at the end: on a small set (a few steps per epoch) they lag the
    # weights, and the held-out accuracy — early stopping's signal — would measure the lag.
    refresh = ReestimateBatchNorm(model.backbone, train_ds, max_batches=PRECISE_BN_BATCHES)
    # No held-out images when classes are tiny (10% of 2 rounds to 0): then no validation.
    held = held_ds if int(held_ds.cardinality()) != 0 else None
    stop = []
    if config.pretrain_patience and held is not None:
        early = dict(backup=backup) if backup is not None else {}
        stop = [
            (ResumableEarlyStopping if backup is not None else keras.callbacks.EarlyStopping)(
                **early,
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
        shuffle=False,  # the pipeline shuffles itself (Keras warns otherwise)
        validation_data=held,
        epochs=config.pretrain_epochs,
        verbose=verbose_mode(verbose),
        callbacks=[
            EpochSeeds(epoch),
            *([TimeEstimate("pretraining")] if verbose else []),
            refresh,  # before early stopping: its on_train_end may restore the best epoch's weights
            StopOnNonFiniteLoss(),  # a diverged pretraining stops (the backup keeps the last good epoch)
            *stop,
            *([backup] if backup else []),
            *(callbacks or []),
        ],
    )
    return model, _full_history(history.history, backup)


#: Batches of training images batch norm's statistics are recomputed from (`ReestimateBatchNorm`).
PRECISE_BN_BATCHES = 20

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
        model: a compiled `MetaTransferModel` (e.g. from `build_meta_model`).
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
    say_backend_note(verbose)
    keras.utils.set_random_seed(config.seed)
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's trainer only
    train_eps, pool = training_episodes(
        config, train_split, shots, replicas=1 if strategy is None else strategy.num_replicas_in_sync
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
    # The rates' step decay and the divergence guard: after `best` (an epoch is judged and saved as
    # trained), before `backup` (which must hold a restored state). Resumed: the first epoch's logs
    # are the guard's reference.
    first = state["history"][0] if state is not None and state.get("history") else None
    steering = meta_training_callbacks(config, reference=first, verbose=verbose)
    try:
        history = model.fit(
            train_eps,
            shuffle=False,  # the pipeline shuffles itself (Keras warns otherwise)
            steps_per_epoch=config.steps_per_epoch,
            epochs=config.meta_epochs,
            callbacks=[
                validation,  # first: the callbacks after it read its val_accuracy
                *([TimeEstimate(f"meta-training {shots}-shot")] if verbose else []),
                best,
                *logger,
                *steering,
                *([backup] if backup else []),
                StopOnNonFiniteLoss(),
                *(callbacks or []),
            ],
            verbose=verbose_mode(verbose),
        )
    finally:
        if pool is not None:
            model.task_feedback = None
    model.load_weights(checkpoint_path)
    hist = _full_history(history.history, backup)
    hist["initial_val_accuracy"] = [initial]
    # Epoch kept: 0 (the pretrained model) unless a meta-training epoch beat it on validation.
    val = [initial, *hist.get("val_accuracy", [])]
    hist["kept_epoch"] = [kept_epoch(val)]
    return hist
