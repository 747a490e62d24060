"""Builders of the workflow: the configured backbone, the one `MetaTransferModel` builder,
the outer optimizers, the meta-training episodes, and the configured benchmark checked against
every episode it will give."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import keras
import numpy as np

from mtl_keras.backbones import get_backbone
from mtl_keras.data.episodes import make_episodes, tf_data_pipelines
from mtl_keras.data.hard_tasks import HardTaskPool
from mtl_keras.data.numpy_episodes import episode_source
from mtl_keras.data.registry import load_benchmark
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras_app.config import ExperimentConfig

if TYPE_CHECKING:
    import tensorflow as tf


def build_backbone(config: ExperimentConfig, channels: int) -> keras.Model:
    """The configured backbone for ``(image_size, image_size, channels)`` images."""
    kwargs = {"widths": tuple(config.widths)} if config.backbone != "conv4" else {"filters": config.widths[0]}
    return get_backbone(config.backbone, (config.image_size, config.image_size, channels), **kwargs)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Build layers under the Keras dtype policy ``name`` (e.g. ``"mixed_bfloat16"``), then restore it."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def outer_optimizers(
    config: ExperimentConfig, backbone_lr: float | None = None, head_lr: float | None = None
):
    """The two outer-loop Adams of a config: ``(backbone's (Φ), head init's)``.

    Rates ``backbone_lr`` / ``head_lr`` (default ``config.phi_lr`` / ``config.head_lr``), ε
    ``config.adam_epsilon``, each gradient clipped to the global norm ``config.outer_clipnorm``
    (0: not clipped). The rates are plain values: their step decay (``config.meta_lr_decay_every``)
    and `DivergenceGuard`'s lowering are callbacks (`meta_training_callbacks`).
    """
    clip = {"global_clipnorm": float(config.outer_clipnorm)} if config.outer_clipnorm else {}
    eps = config.adam_epsilon
    return (
        keras.optimizers.Adam(
            float(config.phi_lr if backbone_lr is None else backbone_lr), epsilon=eps, name="phi_adam", **clip
        ),
        keras.optimizers.Adam(
            float(config.head_lr if head_lr is None else head_lr), epsilon=eps, name="head_adam", **clip
        ),
    )


def meta_training_callbacks(
    config: ExperimentConfig, reference: dict | None = None, verbose: bool = True
) -> list:
    """The callbacks that steer the outer loop's rates during a config's meta-training ``fit``.

    ``OuterRateDecay`` (both rates × ``config.meta_lr_decay_rate`` every
    ``config.meta_lr_decay_every`` epochs: the official code's ``StepLR``) when the decay is on, then
    ``DivergenceGuard`` when ``config.divergence_guard`` (``reference``: the first epoch's logs of a
    resumed meta-training). Put them after validation and `BestCheckpoint`, before
    `ResumableCheckpoint` (see `DivergenceGuard`).
    """
    from mtl_keras.callbacks import DivergenceGuard, OuterRateDecay

    callbacks = []
    if config.meta_lr_decay_every:
        callbacks.append(OuterRateDecay(config.meta_lr_decay_every, config.meta_lr_decay_rate))
    if config.divergence_guard:
        callbacks.append(DivergenceGuard(reference=reference, verbose=int(verbose)))
    return callbacks


def build_meta_model(
    config: ExperimentConfig,
    channels: int,
    weights_path: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    *,
    backbone: keras.Model | None = None,
    backbone_lr: float | None = None,
    head_lr: float | None = None,
    **model_kwargs,
) -> MetaTransferModel:
    """A compiled `MetaTransferModel` of a config: the one builder of the workflow, the ablation,
    the tuner, the benchmarks and the notebooks.

    The backbone is the configured one (`build_backbone`, for ``(image_size, image_size,
    channels)`` images) carrying the pretrained ``weights_path`` (a ``.weights.h5`` of the same
    architecture; a mismatch names both), or ``backbone`` as given (e.g. the ablation's scratch
    Conv-4). It is built under the dtype policy ``config.precision`` (``"mixed_bfloat16"``: 16-bit
    backbone, float32 variables, inner loop and updates), whatever the global Keras policy is —
    float32 on a CPU without native bfloat16 (`mtl_keras.hardware.resolve_precision`). The model
    takes the config's ways, inner loop, batch-norm mode and head initialisation; both outer
    optimizers are `outer_optimizers` (rates ``backbone_lr`` / ``head_lr``, default the config's).

    With a ``strategy`` (e.g. ``tf.distribute.MirroredStrategy()``) the model and both optimizers
    are created in its scope, so ``fit`` splits every meta-batch across its replicas (see
    ``docs/distributed.md``).

    Args:
        config: the experiment settings.
        channels: image channels (1 or 3).
        weights_path: pretrained backbone weights, or None (random initialisation).
        strategy: a `tf.distribute` strategy, or None.
        backbone: a backbone to use instead of building the configured one (``weights_path``
            is then loaded into it when given).
        backbone_lr, head_lr: the outer-loop rates (default ``config.phi_lr`` / ``config.head_lr``).
        **model_kwargs: passed to `MetaTransferModel` (e.g. ``set_meta_phase=False`` for the
            ablation's fine-tuning row, ``unroll_training=False``).

    Returns:
        The compiled model; its backbone maps ``(B, H, W, C)`` images to ``(B, D)`` embeddings.
    """
    if strategy is not None:
        with strategy.scope():
            return build_meta_model(
                config,
                channels,
                weights_path,
                backbone=backbone,
                backbone_lr=backbone_lr,
                head_lr=head_lr,
                **model_kwargs,
            )
    from mtl_keras.hardware import resolve_precision
    from mtl_keras.models.weights import load_backbone_weights

    # float32 where the CPU would emulate bfloat16 (one line says so).
    with dtype_policy(resolve_precision(config.precision)):
        if backbone is None:
            backbone = build_backbone(config, channels)
        if weights_path:
            load_backbone_weights(backbone, weights_path)  # names both architectures on a mismatch
        model_kwargs.setdefault("train_batch_norm", config.train_batch_norm)
        model_kwargs.setdefault("head_initializer", config.head_init)
        model_kwargs.setdefault("batch_norm", config.batch_norm)
        model_kwargs.setdefault("logits", config.logits)
        model_kwargs.setdefault("normalize_inner_step", config.normalize_inner_step)
        model = MetaTransferModel(
            backbone,
            ways=config.ways,
            inner_steps=config.inner_steps,
            eval_inner_steps=config.eval_inner_steps,
            inner_lr=config.inner_lr,
            first_order=config.first_order,
            **model_kwargs,
        )
    optimizer, head_optimizer = outer_optimizers(config, backbone_lr, head_lr)
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
        ``(dataset, pool or None)``; the dataset's elements hold ``meta_batch_size`` tasks: a
        `tf.data.Dataset` on the TensorFlow backend, an `EpisodeSource` on another (`tf_data_pipelines`).
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
    episodes = (make_episodes if tf_data_pipelines() else episode_source)(
        train_split,
        config.ways,
        shots,
        config.queries,
        meta_batch_size=config.meta_batch_size,
        seed=config.seed,
        hard_tasks=pool,
    )
    return episodes, pool


def _image_check_options(config: ExperimentConfig) -> dict:
    """``verify`` / ``unreadable`` for `load_benchmark`: set only when they differ from the
    defaults, so a benchmark without image files (glyphs, the pickled ones) refuses them by name."""
    options = {}
    if config.verify != "auto":
        options["verify"] = config.verify
    if config.skip_unreadable:
        options["unreadable"] = "skip"
    return options


def load_config_benchmark(config: ExperimentConfig, verbose: bool = True, small_classes: str = "raise"):
    """`load_benchmark` with the config's benchmark, root, image size and ``allow_pickle``, checked
    against every episode the config will draw (`check_episode_settings`) before any training.

    ``small_classes``: ``"raise"`` (stages that draw episodes), ``"warn"`` (pretraining alone:
    it draws no episode, so it runs and prints what the meta-training stage will refuse) or
    ``"skip"``.
    """
    splits = load_benchmark(
        config.benchmark,
        root=config.root,
        image_size=config.image_size,
        allow_pickle=config.allow_pickle,
        **_image_check_options(config),
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
