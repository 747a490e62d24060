"""The rows' models (`build_row_model`) and their meta-training (`meta_train_row`)."""

from __future__ import annotations

import sys
import time

import keras

from mtl_keras.backbones import get_backbone
from mtl_keras.callbacks import HardTaskMining
from mtl_keras.evaluation import EpisodeSet
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras_app.ablation.features import EpisodeValidation
from mtl_keras_app.ablation.settings import ROWS, ReproduceSettings
from mtl_keras_app.workflow import build_meta_model, meta_training_callbacks, training_episodes


def build_row_model(
    kind: str,
    settings: ReproduceSettings,
    channels: int,
    weights_path: str | None,
    ft_lr: float | None = None,
) -> MetaTransferModel:
    """The `MetaTransferModel` of one row, compiled, before meta-training.

    * ``scratch``: Conv-4 (``scratch_filters``) from random initialisation, phase
      ``pretrain`` (every ordinary weight trains; Φ stays at 1/0, redundant with Θ),
      Adam ``scratch_lr`` for the backbone and the head init.
    * ``pretrained`` / ``ss`` / ``ss_ht``: the configured backbone with the pretrained
      weights, phase ``meta`` (only Φ trains), Adam ``phi_lr`` / ``head_lr``.
    * ``ft``: the same pretrained backbone left in phase ``pretrain``
      (``set_meta_phase=False``): every convolution kernel, the residual 1×1
      convolutions and the batch-norm γ/β train with Adam ``ft_lr``.

    Batch norm: every row uses ``batch_norm="frozen"``, so the backbone is called with
    ``training=False`` and batch norm normalises with its moving statistics, which never
    change during meta-training (for FT the pretrained ones; for scratch their initial
    values, mean 0 and variance 1, so its batch norms are learned per-channel affine
    maps). γ and β are trainable in the scratch and FT rows and receive gradients.
    """
    config = settings.config
    keras.utils.set_random_seed(config.seed)
    shape = (config.image_size, config.image_size, channels)
    if kind == "scratch":
        backbone = get_backbone("conv4", shape, filters=settings.scratch_filters)
        return build_meta_model(
            config,
            channels,
            backbone=backbone,
            backbone_lr=settings.scratch_lr,
            head_lr=settings.scratch_lr,
            set_meta_phase=False,
        )
    if kind not in ("pretrained", "ss", "ss_ht", "ft"):
        raise ValueError(f"Unknown row '{kind}'. Known: {', '.join(ROWS)}.")
    model = build_meta_model(
        config,
        channels,
        weights_path,
        backbone_lr=(ft_lr or settings.ft_lrs[0]) if kind == "ft" else config.phi_lr,
        set_meta_phase=kind != "ft",
    )
    return model


def meta_train_row(
    model: MetaTransferModel,
    settings: ReproduceSettings,
    train,
    val,
    val_episodes: EpisodeSet,
    shots: int,
    epochs: int,
    steps_per_epoch: int,
    hard_tasks: bool = False,
    initial_val: float | None = None,
    verbose: bool = True,
) -> dict:
    """Meta-train one row; restore the epoch `kept_epoch` keeps (0..epochs; 0: the model before meta-training).

    Returns:
        ``{"loss": [...], "accuracy": [...] (training, per epoch), "val_accuracy":
        [epoch 0, 1, ...], "best_epoch", "seconds", "hard_tasks" (HT: pool counters)}``.
    """
    config = settings.config
    keras.utils.set_random_seed(config.seed)
    episodes, pool = training_episodes(config.replace(hard_tasks=hard_tasks), train, shots)
    validation = EpisodeValidation(model, val, val_episodes, initial=initial_val, chunk=settings.eval_chunk)
    callbacks = [validation]
    if pool is not None:
        callbacks.append(HardTaskMining(episodes, top_k=3, verbose=1 if verbose else 0))
    callbacks += meta_training_callbacks(config, verbose=verbose)
    start = time.time()
    history = model.fit(
        episodes,
        shuffle=False,  # a tf.data pipeline: it shuffles itself (Keras warns otherwise)
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        callbacks=callbacks,
        verbose=(1 if sys.stdout.isatty() else 2) if verbose else 0,
    )
    validation.restore_best()
    record = {
        "loss": [float(v) for v in history.history.get("loss", [])],
        "accuracy": [float(v) for v in history.history.get("accuracy", [])],
        "phi_grad_norm": [float(v) for v in history.history.get("phi_grad_norm", [])],
        "head_grad_norm": [float(v) for v in history.history.get("head_grad_norm", [])],
        "val_accuracy": validation.history,
        "best_epoch": validation.best_epoch,
        "seconds": round(time.time() - start, 1),
    }
    if pool is not None:
        stats = pool.stats()
        record["hard_tasks"] = {
            "per_epoch": list(pool.hard_tasks_per_epoch),
            **{
                k: int(stats[k])
                for k in (
                    "hard_rounds",
                    "hard_tasks_drawn",
                    "hard_tasks_reported",
                    "failures_pooled",
                    "tasks_reported",
                    "late_reports",
                )
                if k in stats
            },
        }
    return record
