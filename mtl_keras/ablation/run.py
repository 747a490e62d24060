"""The paper's ablation on one benchmark: scratch, pretrained, FT, SS and SS + HT.

`reproduce` runs five rows on one benchmark (default: the embedded glyphs) and writes
``RESULTS.md``, ``results.json`` and plots into an output folder::

    (1) scratch     Conv-4 from random initialisation, *all* weights meta-trained
                    (MAML-style: the inner loop adapts the linear head only)
    (2) pretrained  the pretrained backbone + the inner loop, no meta-training
    (3) FT          the pretrained backbone, all its weights meta-trained
    (4) SS          MTL: only the scaling-and-shifting weights Φ (and the head init)
    (5) SS + HT     MTL with the hard-task meta-batch (`HardTaskPool`, periodic)

Every row is evaluated N-way 1-shot and 5-shot (the config's ``ways`` and ``shots``) on
the *same* test episodes (one sampler seed), mean ± 95% CI, plus a harder setting
(``hard_ways``-way, default 20) from the same models, paired differences between the
rows (same episodes, so the per-episode differences give a much tighter CI than two
overlapping CIs) and the accuracy after every inner step. One pretraining is shared by
rows 2-5: its backbone weights are saved once and loaded afresh for each row.

What is chosen, and where (never on the test split):

* the training epoch of each meta-trained row: the epoch (1..E, after meta-training
  started) with the best mean accuracy over ``val_episodes`` validation episodes;
* the FT learning rate: a short probe (``ft_probe_steps`` meta-training steps of the
  first shot setting) per candidate in ``ft_lrs``, scored on the same validation
  episodes;
* the rest comes from the config preset (``cpu-glyphs``: its inner-loop and head rates
  were chosen on the validation split, see ``benchmarks/probes/select_cpu_glyphs.py``), and the
  scratch row uses MAML's meta learning rate (Adam 1e-3) for all weights.

Evaluation runs on *cached embeddings*: with batch norm frozen (inference statistics,
the default of `MetaTransferModel`) an image's embedding does not depend on the other
images of its episode, so each split is embedded once per model and every episode's
inner loop runs on gathered features. The episodes are exactly those of
`evaluate_episodes` with the same seed (`draw_episodes`; tested).

Example:
    >>> settings = ReproduceSettings()                    # glyphs, cpu-glyphs preset
    >>> summary = reproduce(settings, "runs/reproduce-glyphs")
    >>> print(summary["tables"]["main"])

Reference:
    Sun et al., "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019, §5.2 (ablation);
    Sun et al., "Meta-Transfer Learning through Hard Tasks", TPAMI 2020.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.backbones import get_backbone
from mtl_keras.callbacks import HardTaskMining
from mtl_keras.config import ExperimentConfig, get_config
from mtl_keras.evaluation import (
    EpisodeSet,
    EvaluationResult,
    confidence_interval,
    draw_episodes,
    embed_split,
    paired_difference,
)
from mtl_keras.models.base_learner import inner_loop
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.plots import plot_accuracy_bars, plot_accuracy_vs_inner_steps, plot_learning_curves
from mtl_keras.run_lock import locks_run_folder
from mtl_keras.workflow import build_meta_model, load_config_benchmark, pretrain, training_episodes

#: The five rows, in the order of the table.
ROWS = ("scratch", "pretrained", "ft", "ss", "ss_ht")
#: Short names for plots and the paired comparisons.
SHORT = {"scratch": "scratch Conv-4", "pretrained": "pretrained", "ft": "FT", "ss": "SS", "ss_ht": "SS+HT"}
#: The paper's ordering, as pairs (better, worse), with what each pair tests.
CLAIMS = (
    ("ss_ht", "ss", "HT adds on top of SS"),
    ("ss", "ft", "SS beats FT (meta-training all weights)"),
    ("ss", "scratch", "SS beats shallow meta-learning from scratch"),
    ("ft", "scratch", "FT (deep, pretrained) beats shallow from scratch"),
    ("ss", "pretrained", "meta-training SS improves on the pretrained backbone"),
    ("ft", "pretrained", "meta-training FT improves on the pretrained backbone"),
)
#: Paper numbers (miniImageNet 5-way 1-shot, mean ± 95% CI, as quoted in issue 7; not
#: re-checked against the PDF here).
PAPER_MINI_IMAGENET_1SHOT = {
    "SS + HT (MTL, ResNet-12)": "61.2 ± 1.8",
    "SS (MTL, ResNet-12)": "60.2 ± 1.8",
    "FT + HT (ResNet-12)": "59.1 ± 1.9",
    "MAML + HT (4 conv layers)": "49.1 ± 1.9",
}

#: The default reproduction config: `cpu-glyphs` with 600 validation episodes (cheap on
#: cached embeddings; 100 gave a ±1-point CI, too coarse to pick an epoch at ~98%).
DEFAULT_CONFIG_CHANGES = {"val_episodes": 600}
#: ``--quick`` (≤ 5 minutes on 2 CPU cores): small images and backbone, short runs.
QUICK_CONFIG_CHANGES = {
    "image_size": 16,
    "widths": (8, 16, 32, 64),
    "pretrain_epochs": 4,
    "pretrain_batch_size": 128,
    "meta_epochs": 2,
    "steps_per_epoch": 10,
    "inner_steps": 10,
    "eval_inner_steps": 50,
    "val_episodes": 200,
    "test_episodes": 200,
}
QUICK_SETTINGS_CHANGES = {
    "scratch_filters": 16,
    "scratch_epochs": 2,
    "scratch_steps_per_epoch": 20,
    "ft_lrs": (3e-4, 3e-5),
    "ft_probe_steps": 10,
}


def default_config() -> ExperimentConfig:
    """`cpu-glyphs` with `DEFAULT_CONFIG_CHANGES`."""
    return get_config("cpu-glyphs").replace(**DEFAULT_CONFIG_CHANGES)


@dataclasses.dataclass
class ReproduceSettings:
    """What `reproduce` runs: an `ExperimentConfig` plus the rows' own settings.

    Attributes:
        config: benchmark, backbone, pretraining, meta-training (``meta_epochs`` ×
            ``steps_per_epoch`` for rows 3-5), ``ways``, ``shots``, inner loop,
            ``val_episodes``, ``test_episodes``, ``seed``; ``ht_every``, ``ht_hard_batches``:
            the periodic hard-task schedule of row 5 (paper: after every 10 meta-batches,
            5 meta-batches of hard tasks).
        scratch_filters: channels of the scratch Conv-4 (MAML on miniImageNet: 32).
        scratch_epochs, scratch_steps_per_epoch: meta-training of the scratch row
            (it has no pretraining, so it gets more steps than rows 3-5).
        scratch_lr: Adam rate of all scratch weights and its head init (MAML: 1e-3).
        ft_lrs: candidate Adam rates of the FT row's weights, chosen on validation.
        ft_probe_steps: meta-training steps of each FT candidate (0: take the first).
        hard_ways: ways of the harder extra setting (0: none); evaluated with the
            models meta-trained at ``config.ways``.
        eval_chunk: episodes adapted per call on cached embeddings (speed only).
        rows: the meta-trained rows to run, of ``scratch``, ``ft``, ``ss``, ``ss_ht``
            (``pretrained`` always runs: it is every comparison's baseline).
        episode_seed: seed of the validation (``episode_seed + 1``) and test
            (``episode_seed + 100``) episodes; -1: the config's ``seed``. `reproduce_seeds`
            fixes it, so that every training seed is tested on the same episodes.
    """

    config: ExperimentConfig = dataclasses.field(default_factory=default_config)
    scratch_filters: int = 32
    scratch_epochs: int = 5
    scratch_steps_per_epoch: int = 100
    scratch_lr: float = 1e-3
    ft_lrs: tuple[float, ...] = (3e-4, 1e-4, 3e-5)
    ft_probe_steps: int = 30
    hard_ways: int = 20
    eval_chunk: int = 50
    rows: tuple[str, ...] = ("scratch", "ft", "ss", "ss_ht")
    episode_seed: int = -1

    def replace(self, **changes) -> ReproduceSettings:
        """A copy with ``changes``: settings fields, or `ExperimentConfig` fields (go to ``config``)."""
        own = {f.name for f in dataclasses.fields(self)} - {"config"}
        config_changes = {k: v for k, v in changes.items() if k not in own}
        settings = dataclasses.replace(self, **{k: v for k, v in changes.items() if k in own})
        if config_changes:
            settings = dataclasses.replace(settings, config=settings.config.replace(**config_changes))
        return settings

    def quick(self) -> ReproduceSettings:
        """The ``--quick`` version (`QUICK_CONFIG_CHANGES`, `QUICK_SETTINGS_CHANGES`)."""
        return self.replace(**QUICK_CONFIG_CHANGES, **QUICK_SETTINGS_CHANGES)

    def with_overrides(self, assignments: Sequence[str]) -> ReproduceSettings:
        """Apply ``["key=value", ...]`` to settings fields or config fields (the CLI's ``--set``)."""
        own = {f.name: str(f.type) for f in dataclasses.fields(self) if f.name != "config"}
        changes, config_assignments = {}, []
        for item in assignments:
            key, sep, text = item.partition("=")
            key = key.strip()
            if key not in own:
                config_assignments.append(item)
                continue
            try:
                if key == "rows":
                    changes[key] = tuple(v for v in text.replace(",", " ").split() if v)
                elif own[key].startswith("tuple"):
                    changes[key] = tuple(float(v) for v in text.strip("()[] ").replace(",", " ").split())
                elif own[key] == "int":
                    changes[key] = int(text)
                else:
                    changes[key] = float(text)
            except ValueError:
                raise ValueError(f"Setting '{key}' expects {own[key]}, got {text!r}.") from None
        settings = dataclasses.replace(self, **changes)
        return dataclasses.replace(settings, config=settings.config.with_overrides(config_assignments))

    def validate(self) -> ReproduceSettings:
        """Check the config and the row settings; return ``self``."""
        self.config.validate()
        for key in (
            "scratch_filters",
            "scratch_epochs",
            "scratch_steps_per_epoch",
            "eval_chunk",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"Setting '{key}' must be an int >= 1, got {getattr(self, key)!r}.")
        trained = [r for r in ROWS if r != "pretrained"]
        unknown = [r for r in self.rows if r not in trained]
        if unknown or not self.rows:
            raise ValueError(
                f"Setting 'rows' takes one or more of {', '.join(trained)} (pretrained always runs), "
                f"got {list(self.rows)!r}."
            )
        if self.ft_probe_steps < 0:
            raise ValueError(f"Setting 'ft_probe_steps' must be >= 0, got {self.ft_probe_steps}.")
        if not self.ft_lrs or any(not (lr > 0) for lr in self.ft_lrs):
            raise ValueError(f"Setting 'ft_lrs' must be positive rates, got {self.ft_lrs!r}.")
        if not self.scratch_lr > 0:
            raise ValueError(f"Setting 'scratch_lr' must be positive, got {self.scratch_lr!r}.")
        if self.hard_ways and self.hard_ways <= self.config.ways:
            raise ValueError(
                f"Setting 'hard_ways' must be 0 or more than ways={self.config.ways}, got {self.hard_ways}."
            )
        return self

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["config"] = self.config.to_dict()
        return values


# --------------------------------------------------------------------------- episodes on embeddings
@tf.function  # static shapes: the inner loop needs the number of ways
def _adapt_on_features(
    support, support_labels, query, query_labels, init_weights, init_bias, steps, learning_rate
):
    _, _, history = inner_loop(
        support,
        support_labels,
        init_weights,
        init_bias,
        steps=steps,
        learning_rate=learning_rate,
        query_features=query,
    )
    preds = tf.argmax(history["query_logits"], axis=-1, output_type=tf.int32)
    correct = tf.reduce_mean(tf.cast(tf.equal(preds, query_labels[None]), tf.float32), axis=-1)
    return correct, history["support_loss"]  # (T+1, B), (T+1, B)


def evaluate_features(
    features: np.ndarray,
    episodes: EpisodeSet,
    init_weights: np.ndarray,
    init_bias: np.ndarray,
    steps: int,
    inner_lr: float,
    chunk: int = 50,
) -> EvaluationResult:
    """`evaluate_episodes` on cached embeddings: same inner loop, same episodes.

    Args:
        features: ``(num_images, D)`` embeddings of the episodes' split (`embed_split`).
        episodes: the episodes (`draw_episodes`).
        init_weights: ``(D, N)`` head initialisation; init_bias: ``(N,)``.
        steps: inner steps ``T``; inner_lr: inner-loop rate.
        chunk: episodes per call (speed and memory only).

    Returns:
        An `EvaluationResult` (accuracy after ``T`` steps, per-step accuracy 0..T).
    """
    n, k, q = episodes.ways, episodes.shots, episodes.queries
    support_labels = np.repeat(np.arange(n, dtype=np.int32), k)
    query_labels = np.repeat(np.arange(n, dtype=np.int32), q)
    w0 = tf.constant(init_weights, tf.float32)
    b0 = tf.constant(init_bias, tf.float32)
    correct_all, loss_all = [], []
    for start in range(0, episodes.episodes, chunk):
        s_items = episodes.support_items[start : start + chunk]
        q_items = episodes.query_items[start : start + chunk]
        b = len(s_items)
        correct, loss = _adapt_on_features(
            tf.constant(features[s_items]),
            tf.constant(np.tile(support_labels, (b, 1))),
            tf.constant(features[q_items]),
            tf.constant(np.tile(query_labels, (b, 1))),
            w0,
            b0,
            int(steps),
            float(inner_lr),
        )
        correct_all.append(correct.numpy())
        loss_all.append(loss.numpy())
    correct = np.concatenate(correct_all, axis=1)
    losses = np.concatenate(loss_all, axis=1)
    mean, ci = confidence_interval(correct[-1])
    return EvaluationResult(
        mean=mean,
        ci95=ci,
        episode_accuracies=correct[-1],
        per_step_accuracy=correct.mean(axis=1),
        per_step_support_loss=losses.mean(axis=1),
        ways=n,
        shots=k,
        queries=q,
        inner_steps=int(steps),
    )


def head_init(model: MetaTransferModel, ways: int) -> tuple[np.ndarray, np.ndarray]:
    """The head initialisation for ``ways``-way episodes.

    ``model.ways``: the meta-learned ``(W0, b0)``. Any other ``ways``: zeros. (A head
    init meta-learned for N positions cannot be reused as is; since class positions are
    random, the natural transfer is its column mean tiled to every class, and a head
    whose columns are all equal gives equal logits — the same softmax, hence the same
    inner loop — as zeros.)
    """
    if ways == model.ways:
        return np.asarray(model.head.kernel), np.asarray(model.head.bias)
    dim = int(model.head.kernel.shape[0])
    return np.zeros((dim, ways), np.float32), np.zeros((ways,), np.float32)


def evaluate_model(
    model: MetaTransferModel, features: np.ndarray, episodes: EpisodeSet, chunk: int = 50
) -> EvaluationResult:
    """A model's accuracy on ``episodes`` from its cached embeddings ``features``."""
    weights, bias = head_init(model, episodes.ways)
    return evaluate_features(features, episodes, weights, bias, model.eval_inner_steps, model.inner_lr, chunk)


class EpisodeValidation(keras.callbacks.Callback):
    """Validation accuracy on fixed episodes after every epoch; keeps the best epoch's weights.

    Args:
        model: the `MetaTransferModel` being trained (also the model whose backbone embeds).
        split: the validation split; episodes: fixed `EpisodeSet` of it.
        initial: the accuracy before training (epoch 0) if already known, else it is
            computed by `evaluate_now`.
        chunk: see `evaluate_features`.

    After ``fit``: ``history`` (accuracy per epoch, epoch 0 first), ``best_epoch``
    (1-based, among the trained epochs; epoch 0 never wins), ``best_weights``.
    """

    def __init__(
        self,
        model: MetaTransferModel,
        split,
        episodes: EpisodeSet,
        initial: float | None = None,
        chunk: int = 50,
    ):
        super().__init__()
        self._row_model = model
        self.split = split
        self.episodes = episodes
        self.chunk = chunk
        self.history = [self.evaluate_now() if initial is None else float(initial)]
        self.best_epoch = None
        self.best_weights = None
        self.best = -1.0

    def evaluate_now(self) -> float:
        features = embed_split(self._row_model.backbone, self.split)
        return float(evaluate_model(self._row_model, features, self.episodes, self.chunk).mean)

    def on_epoch_end(self, epoch, logs=None):
        accuracy = self.evaluate_now()
        self.history.append(accuracy)
        if logs is not None:
            logs["val_accuracy"] = accuracy
        if accuracy > self.best:
            self.best, self.best_epoch = accuracy, epoch + 1
            self.best_weights = self._row_model.get_weights()

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self._row_model.set_weights(self.best_weights)


# --------------------------------------------------------------------------- rows
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
    """Meta-train one row; restore its best validation epoch (1..epochs).

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


# --------------------------------------------------------------------------- the whole run
def setting_name(ways: int, shots: int) -> str:
    return f"{ways}-way {shots}-shot"


@locks_run_folder("out_dir")
def reproduce(
    settings: ReproduceSettings,
    out_dir: str,
    weights: str | None = None,
    verbose: bool = True,
    command: str | None = None,
    earlier: dict | None = None,
) -> dict:
    """Run the five rows and write ``RESULTS.md``, ``results.json`` and plots into ``out_dir``.

    Args:
        settings: what to run (`ReproduceSettings`; ``.quick()`` for the short version).
        out_dir: output folder (created).
        weights: a pretrained backbone (``.weights.h5`` of the configured backbone) to use
            instead of pretraining (e.g. ``pretrained_backbone.weights.h5`` of an earlier run).
        verbose: progress output.
        command: the command line recorded in ``RESULTS.md`` (default: ``sys.argv``).
        earlier: the content of an earlier ``results.json`` whose settings equal ``settings``
            but for ``rows`` (e.g. to add the FT row to a run of SS): the rows it holds are read
            back instead of trained again — but only if this run's pretrained row reproduces
            the earlier one's per-episode test accuracies and validation accuracy exactly (same
            seed, same machine: pretraining is deterministic); otherwise every row runs. Its
            pretrained weights are used when ``out_dir`` still holds them.

    Returns:
        The content of ``results.json`` plus ``"tables"`` (the Markdown tables).
    """
    settings = settings.validate()
    config = settings.config
    reused: tuple[str, ...] = ()
    if earlier is not None:
        if not same_settings_but_rows(earlier["settings"], settings.to_dict()):
            raise ValueError("reproduce: `earlier` holds other settings than `settings` (beyond `rows`).")
        reused = tuple(r for r in settings.rows if r in earlier["settings"]["rows"])
    start = time.time()
    os.makedirs(out_dir, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    command = command or " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]])
    seconds = {}

    def lap(stage, since):
        seconds[stage] = round(time.time() - since, 1)
        say(f"    [{stage}: {seconds[stage]:.0f} s; total {time.time() - start:.0f} s]", flush=True)

    t = time.time()
    say(f"[data] Loading '{config.benchmark}' at {config.image_size}px", flush=True)
    train, val, test = load_config_benchmark(config)
    channels = train.channels
    lap("data", t)

    t = time.time()
    weights_path = os.path.join(out_dir, "pretrained_backbone.weights.h5")
    pretrain_history = None
    if weights:
        weights_path = weights
        say(f"[pretrain] Using the pretrained backbone {weights}")
    elif reused and os.path.exists(weights_path):
        pretrain_history = earlier.get("pretrain_history")
        say(f"[pretrain] Using the earlier run's pretrained backbone {weights_path}")
    else:
        say(
            f"[pretrain] {config.backbone} {tuple(config.widths)} on {train.num_classes} base classes, "
            f"{config.pretrain_epochs} epochs",
            flush=True,
        )
        pre_model, pretrain_history = pretrain(config, train, verbose=verbose)
        pre_model.backbone.save_weights(weights_path)
        del pre_model
    lap("pretrain", t)

    ways = config.ways
    shots_list = tuple(config.shots)
    settings_of = {}  # setting name -> (ways, shots)
    for shots in shots_list:
        settings_of[setting_name(ways, shots)] = (ways, shots)
    if settings.hard_ways:
        for shots in shots_list:
            try:
                test.check_episode_size(settings.hard_ways, shots, config.test_queries)
            except ValueError as err:
                say(f"    (skipping {setting_name(settings.hard_ways, shots)}: {err})")
                continue
            settings_of[setting_name(settings.hard_ways, shots)] = (settings.hard_ways, shots)
    episode_seed = config.seed if settings.episode_seed < 0 else settings.episode_seed
    test_episodes = {
        name: draw_episodes(test, n, k, config.test_queries, config.test_episodes, episode_seed + 100)
        for name, (n, k) in settings_of.items()
    }
    val_episodes = {
        k: draw_episodes(val, ways, k, config.queries, config.val_episodes, episode_seed + 1)
        for k in shots_list
    }
    results: dict[str, dict[str, EvaluationResult]] = {name: {} for name in settings_of}
    histories: dict[str, dict] = {}
    chunk = settings.eval_chunk

    def test_row(row: str, model: MetaTransferModel, shots: Sequence[int]) -> None:
        features = embed_split(model.backbone, test)
        for name, (_, k) in settings_of.items():
            if k in shots:
                results[name][row] = evaluate_model(model, features, test_episodes[name], chunk)
                say(f"    test {SHORT[row]:>14}: {results[name][row]}", flush=True)

    # Row 2 (no meta-training) and the epoch-0 validation of rows 3-5: one embedding each.
    t = time.time()
    base = build_row_model("pretrained", settings, channels, weights_path)
    val_features = embed_split(base.backbone, val)
    initial_val = {
        k: float(evaluate_model(base, val_features, val_episodes[k], chunk).mean) for k in shots_list
    }
    say(
        f"[row 2] pretrained + inner loop: validation {', '.join(f'{k}-shot {100 * a:.2f}%' for k, a in initial_val.items())}"
    )
    test_row("pretrained", base, shots_list)
    del base
    lap("pretrained row", t)
    earlier_results = results_from_summary(earlier) if reused else {}
    if reused:
        same = earlier.get("initial_val_accuracy") == {
            f"{k}-shot": a for k, a in initial_val.items()
        } and all(
            name in earlier_results
            and np.array_equal(
                earlier_results[name]["pretrained"].episode_accuracies,
                results[name]["pretrained"].episode_accuracies,
            )
            for name in settings_of
        )
        if same:
            say(
                f"    the pretrained row reproduces the earlier run ({earlier.get('date')}) exactly: reading back "
                + ", ".join(SHORT[r] for r in reused)
            )
        else:
            say("    the pretrained row differs from the earlier run's: every row runs again")
            reused, earlier_results = (), {}

    # FT learning rate: short probes on the first shot setting, scored on validation.
    t = time.time()
    probe_shots = shots_list[0]
    ft_probe = {}
    if "ft" in reused:
        ft_lr, ft_probe = earlier["ft_lr"], {float(lr): a for lr, a in earlier.get("ft_probe", {}).items()}
    elif "ft" in settings.rows and len(settings.ft_lrs) > 1 and settings.ft_probe_steps > 0:
        say(
            f"[FT lr] probing {list(settings.ft_lrs)} with {settings.ft_probe_steps} steps of {probe_shots}-shot "
            "meta-training each, on validation episodes",
            flush=True,
        )
        for lr in settings.ft_lrs:
            model = build_row_model("ft", settings, channels, weights_path, ft_lr=lr)
            record = meta_train_row(
                model,
                settings,
                train,
                val,
                val_episodes[probe_shots],
                probe_shots,
                epochs=1,
                steps_per_epoch=settings.ft_probe_steps,
                initial_val=initial_val[probe_shots],
                verbose=False,
            )
            ft_probe[lr] = record["val_accuracy"][-1]
            say(
                f"    FT lr {lr:g}: validation {100 * ft_probe[lr]:.2f}% (before: {100 * initial_val[probe_shots]:.2f}%)"
            )
            del model
        ft_lr = max(settings.ft_lrs, key=lambda lr: ft_probe[lr])  # ties: the first listed
    else:
        ft_lr = settings.ft_lrs[0]
    say(f"    FT lr: {ft_lr:g}")
    lap("FT lr probe", t)

    for shots in shots_list:
        for row in (r for r in ROWS if r in settings.rows):
            key = f"{SHORT[row]} {shots}-shot"
            if row in reused:
                histories[key] = earlier["histories"][key]
                for name, (_, k) in settings_of.items():
                    if k == shots:
                        results[name][row] = earlier_results[name][row]
                if key in earlier.get("seconds", {}):
                    seconds[key] = earlier["seconds"][key]
                say(f"[{key}] read back from the earlier run: {results[setting_name(ways, shots)][row]}")
                continue
            t = time.time()
            scratch = row == "scratch"
            epochs = settings.scratch_epochs if scratch else config.meta_epochs
            steps = settings.scratch_steps_per_epoch if scratch else config.steps_per_epoch
            say(f"[{SHORT[row]}, {ways}-way {shots}-shot] meta-training {epochs} x {steps} steps", flush=True)
            model = build_row_model(row, settings, channels, None if scratch else weights_path, ft_lr=ft_lr)
            record = meta_train_row(
                model,
                settings,
                train,
                val,
                val_episodes[shots],
                shots,
                epochs,
                steps,
                hard_tasks=row == "ss_ht",
                initial_val=None if scratch else initial_val[shots],
                verbose=verbose,
            )
            histories[key] = record
            say(
                f"    validation per epoch (0 = before): {' '.join(f'{100 * a:.2f}' for a in record['val_accuracy'])}"
                f"; kept epoch {record['best_epoch']}"
            )
            test_row(row, model, (shots,))
            del model
            lap(key, t)

    seconds["total"] = round(time.time() - start, 1)
    summary = {
        "benchmark": config.benchmark,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "settings": settings.to_dict(),
        "weights": weights_path,
        "splits": {s.name: {"classes": s.num_classes, "images": s.num_images} for s in (train, val, test)},
        "pretrain_history": pretrain_history,
        "initial_val_accuracy": {f"{k}-shot": a for k, a in initial_val.items()},
        "ft_lr": ft_lr,
        "ft_probe": {f"{lr:g}": a for lr, a in ft_probe.items()},
        "histories": histories,
        "results": {
            name: {
                row: {**r.to_dict(), "episode_accuracies": r.episode_accuracies.tolist()}
                for row, r in by_row.items()
            }
            for name, by_row in results.items()
        },
        "seconds": seconds,
        "rows_read_back": {"rows": list(reused), "from_run_of": earlier["date"]} if reused else None,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    plots = write_plots(results, histories, out_dir, config.benchmark)
    tables = write_results_md(summary, results, os.path.join(out_dir, "RESULTS.md"), plots)
    say("")
    say(tables["main"])
    say(f"\n{os.path.join(out_dir, 'RESULTS.md')} ({seconds['total']:.0f} s)")
    return {**summary, "tables": tables}


def same_settings_but_rows(a: dict, b: dict) -> bool:
    """Whether two ``ReproduceSettings.to_dict()`` contents (or their JSON) differ at most in ``rows``."""

    def strip(d):
        d = json.loads(json.dumps(d, default=float))
        d.pop("rows", None)
        return d

    return strip(a) == strip(b)


# --------------------------------------------------------------------------- several training seeds
#: The targets of issue 14 at N-way 1-shot, checked by `write_seeds_md`: (better, worse, minimum
#: paired difference in points, what it says).
SEED_TARGETS = (
    ("ss", "pretrained", 2.0, "SS − pretrained ≥ +2 points, paired CI above 0 in every seed"),
    ("ss_ht", "ss", 0.0, "SS + HT ≥ SS"),
    ("ss", "ft", 0.0, "SS > FT"),
)


@locks_run_folder("out_dir")
def reproduce_seeds(
    settings: ReproduceSettings,
    out_dir: str,
    seeds: Sequence[int],
    verbose: bool = True,
    command: str | None = None,
) -> dict:
    """`reproduce` once per training seed, every seed tested on the same episodes; then ``SEEDS.md``.

    Seed ``s`` reseeds everything that trains — pretraining (initialisation, batch order),
    every row's initialisation and training episode stream — and writes its own run into
    ``out_dir/seed-<s>/`` (``RESULTS.md``, ``results.json``, plots). The validation and test
    episodes are fixed by ``settings.episode_seed`` (-1: the first seed), so the rows of
    all seeds are compared on the very same 600 (``test_episodes``) test episodes. A seed whose
    ``results.json`` already holds these settings is read back instead of run again (an
    interrupted run resumes at the first unfinished seed).

    Args:
        settings: what each seed runs (`ReproduceSettings`; its ``seed`` is replaced).
        out_dir: output folder: ``SEEDS.md`` (per seed and pooled tables, paired differences
            against the pretrained row, the targets), ``seeds.json``, ``seed-<s>/``.
        seeds: the training seeds, e.g. ``(0, 1, 2)``.
        verbose: progress output.
        command: the command line recorded in ``SEEDS.md``.

    Returns:
        The content of ``seeds.json`` plus ``"table"`` (``SEEDS.md``'s text).
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"reproduce_seeds: give distinct seeds, got {seeds!r}.")
    settings = settings.validate()
    episode_seed = settings.episode_seed if settings.episode_seed >= 0 else seeds[0]
    command = command or " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]])
    say = print if verbose else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    runs = {}
    for seed in seeds:
        run_settings = settings.replace(seed=seed, episode_seed=episode_seed)
        sub = os.path.join(out_dir, f"seed-{seed}")
        path = os.path.join(sub, "results.json")
        summary = earlier = None
        if os.path.exists(path):
            with open(path) as f:
                summary = json.load(f)
            if summary.get("settings") != json.loads(json.dumps(run_settings.to_dict(), default=float)):
                have = [r for r in summary.get("settings", {}).get("rows", ()) if r in run_settings.rows]
                if have and same_settings_but_rows(summary["settings"], run_settings.to_dict()):
                    earlier = summary
                    say(f"[seed {seed}] {path} holds rows {have} of these settings: running the others")
                else:
                    say(f"[seed {seed}] {path} holds other settings: running again")
                summary = None
            else:
                say(f"[seed {seed}] already done: {path}")
        if summary is None:
            say(f"\n========== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) ==========", flush=True)
            summary = reproduce(
                run_settings, sub, verbose=verbose, command=f"{command}  # seed {seed}", earlier=earlier
            )
            summary.pop("tables", None)
        runs[seed] = summary
    combined = {
        "command": command,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "seeds": seeds,
        "episode_seed": episode_seed,
        "seconds": round(time.time() - start, 1),
        "seconds_per_seed": {str(s): r["seconds"]["total"] for s, r in runs.items()},
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "settings": settings.to_dict(),
    }
    text, numbers = seeds_report(runs, combined)
    combined["summary"] = numbers
    with open(os.path.join(out_dir, "seeds.json"), "w") as f:
        json.dump(combined, f, indent=1, default=float)
    with open(os.path.join(out_dir, "SEEDS.md"), "w") as f:
        f.write(text)
    say("\n" + text)
    say(f"\n{os.path.join(out_dir, 'SEEDS.md')}")
    return {**combined, "table": text}


def _results_of(summary: dict) -> dict[str, dict[str, np.ndarray]]:
    """``{setting: {row: per-episode accuracies}}`` of one seed's ``results.json``."""
    return {
        name: {row: np.asarray(r["episode_accuracies"], dtype=float) for row, r in by_row.items()}
        for name, by_row in summary["results"].items()
    }


def seeds_report(runs: dict[int, dict], combined: dict) -> tuple[str, dict]:
    """``SEEDS.md``'s text and its numbers from the per-seed ``results.json`` contents ``runs``.

    Pooled accuracy: the mean over seeds of each row's mean, ± the 95% CI over test episodes
    of the seed-averaged per-episode accuracy (the episodes are the same for every seed). Pooled
    paired difference: the same for the per-episode difference ``row − pretrained``. The spread
    over seeds (min … max of the per-seed means) is printed beside it: the CIs cover episode
    sampling, the spread training randomness.
    """
    seeds = list(runs)
    first = runs[seeds[0]]
    config = ExperimentConfig.from_dict(first["settings"]["config"])
    per_seed = {s: _results_of(r) for s, r in runs.items()}
    names = list(per_seed[seeds[0]])
    for s in seeds:
        if list(per_seed[s]) != names:
            raise ValueError(f"seed {s} has settings {list(per_seed[s])}, seed {seeds[0]} {names}.")
    rows = [r for r in ROWS if all(r in per_seed[s][names[0]] for s in seeds)]
    numbers: dict = {}
    out = [f"# `{config.benchmark}`: {len(seeds)} training seeds, the same test episodes\n"]
    add = out.append
    add(
        f"Date: {combined['date']}; {combined['seconds'] / 60:.0f} min for the seeds run now "
        f"(per seed, when it ran: {', '.join(f'{k}: {v / 60:.0f} min' for k, v in combined['seconds_per_seed'].items())}) "
        f"on {os.cpu_count()} CPU cores. Command (seeds already in the folder are read back, not rerun):\n"
    )
    add(f"```\n{combined['command']}\n```\n")
    add(
        f"Each seed reseeds pretraining and every row's meta-training; all seeds and rows are tested on the same "
        f"{config.test_episodes} {config.ways}-way test episodes (episode seed {combined['episode_seed']} + 100) "
        f"of {config.test_queries} queries per class, on classes never seen in training. Settings: "
        f"`seed-{seeds[0]}/RESULTS.md` (identical for every seed but the seed). Everything chosen — the kept "
        "epoch of each row, the FT rate — was chosen on validation episodes.\n"
    )
    for name in names:
        numbers[name] = {}
        add(f"## {name}: test accuracy (%), mean ± 95% CI over episodes\n")
        header = "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled | spread over seeds |"
        lines = [header, "|---|" + "---|" * (len(seeds) + 2)]
        for row in rows:
            accs = [per_seed[s][name][row] for s in seeds]
            means = [float(a.mean()) for a in accs]
            pooled_mean, pooled_ci = confidence_interval(np.mean(accs, axis=0))
            numbers[name][row] = {"per_seed": means, "pooled": [pooled_mean, pooled_ci]}
            cells = [f"{100 * m:.2f} ± {100 * confidence_interval(a)[1]:.2f}" for m, a in zip(means, accs)]
            lines.append(
                f"| {SHORT[row]} | "
                + " | ".join(cells)
                + f" | {100 * pooled_mean:.2f} ± {100 * pooled_ci:.2f} | "
                f"{100 * min(means):.2f} … {100 * max(means):.2f} |"
            )
        add("\n".join(lines) + "\n")
        add(f"### {name}: paired difference (points), mean ± 95% CI of the per-episode difference\n")
        pairs = [(r, "pretrained") for r in rows if r != "pretrained"]
        pairs += [(a, b) for a, b, *_ in CLAIMS if a in rows and b in rows and b != "pretrained" and a != b]
        lines = [
            "| difference | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled | seeds with CI > 0 |",
            "|---|" + "---|" * (len(seeds) + 2),
        ]
        numbers[name]["paired"] = {}
        for a, b in pairs:
            diffs = [per_seed[s][name][a] - per_seed[s][name][b] for s in seeds]
            stats = [confidence_interval(d) for d in diffs]
            pooled = confidence_interval(np.mean(diffs, axis=0))
            above = sum(m - c > 0 for m, c in stats)
            key = f"{SHORT[a]} − {SHORT[b]}"
            numbers[name]["paired"][key] = {"per_seed": stats, "pooled": pooled, "seeds_above_0": above}
            lines.append(
                f"| {key} | "
                + " | ".join(f"{100 * m:+.2f} ± {100 * c:.2f}" for m, c in stats)
                + f" | {100 * pooled[0]:+.2f} ± {100 * pooled[1]:.2f} | {above} of {len(seeds)} |"
            )
        add("\n".join(lines) + "\n")
    one_shot = f"{config.ways}-way 1-shot"
    if one_shot in numbers:
        add(f"## The targets (issue 14), at {one_shot}\n")
        paired = numbers[one_shot]["paired"]
        lines = []
        for better, worse, minimum, what in SEED_TARGETS:
            key = f"{SHORT[better]} − {SHORT[worse]}"
            if key not in paired:
                lines.append(f"- {what}: not run (row missing).")
                continue
            p = paired[key]
            means = [m for m, _ in p["per_seed"]]
            if minimum > 0:  # in every seed: at least `minimum` points, CI above 0
                met = all(m >= minimum / 100 and m - c > 0 for m, c in p["per_seed"])
            elif better == "ss_ht":  # "≥": pooled not below
                met = p["pooled"][0] >= 0
            else:  # ">": pooled above
                met = p["pooled"][0] > 0
            lines.append(
                f"- {what}: **{'met' if met else 'not met'}** — per seed "
                + ", ".join(f"{100 * m:+.2f}" for m in means)
                + f"; pooled {100 * p['pooled'][0]:+.2f} ± {100 * p['pooled'][1]:.2f}."
            )
        add("\n".join(lines) + "\n")
    add("## Validation (what chose each row's kept epoch) and pretraining, per seed\n")
    lines = [
        "| seed | pretraining: held-out accuracy (last epoch) | run | validation per epoch (%), 0 = before | kept |"
    ]
    lines.append("|---|---|---|---|---|")
    for s in seeds:
        pre = runs[s].get("pretrain_history") or {}
        held = pre.get("val_accuracy") or [float("nan")]
        for run, h in runs[s]["histories"].items():
            lines.append(
                f"| {s} | {100 * held[-1]:.1f}% | {run} | {' '.join(f'{100 * a:.1f}' for a in h['val_accuracy'])} | "
                f"{h['best_epoch']} |"
            )
    add("\n".join(lines) + "\n")
    add(
        "Per-seed details (validation curves, accuracy after each inner step, the FT rate probe, time per stage): "
        + ", ".join(f"`seed-{s}/RESULTS.md`" for s in seeds)
        + ".\n"
    )
    return "\n".join(out), numbers


# --------------------------------------------------------------------------- report
def results_from_summary(summary: dict) -> dict[str, dict[str, EvaluationResult]]:
    """``{setting: {row: EvaluationResult}}`` from a ``results.json``'s content."""
    results = {}
    for name, by_row in summary["results"].items():
        results[name] = {}
        for row, r in by_row.items():
            steps = np.asarray(r["per_step_accuracy"], dtype=float)
            results[name][row] = EvaluationResult(
                mean=r["mean"],
                ci95=r["ci95"],
                episode_accuracies=np.asarray(r["episode_accuracies"], dtype=float),
                per_step_accuracy=steps,
                per_step_support_loss=np.zeros_like(steps),
                ways=r["ways"],
                shots=r["shots"],
                queries=r["queries"],
                inner_steps=r["inner_steps"],
                query_loss=float(r.get("query_loss", float("nan"))),
            )
    return results


def rewrite_report(out_dir: str) -> dict[str, str]:
    """Write ``RESULTS.md`` and the plots again from ``out_dir/results.json`` (no training).

    Returns:
        The Markdown tables (``main``, ``hard``, ``claims``).
    """
    with open(os.path.join(out_dir, "results.json")) as f:
        summary = json.load(f)
    results = results_from_summary(summary)
    plots = write_plots(results, summary["histories"], out_dir, summary["benchmark"])
    return write_results_md(summary, results, os.path.join(out_dir, "RESULTS.md"), plots)


def row_label(row: str, config: ExperimentConfig, settings: ReproduceSettings | None = None) -> str:
    backbone = {"resnet12": "ResNet-12", "resnet18": "ResNet-18", "conv4": "Conv-4"}[config.backbone]
    return {
        "scratch": "(1) scratch: Conv-4, all weights meta-trained from random init",
        "pretrained": f"(2) pretrained {backbone} + inner loop, no meta-training",
        "ft": f"(3) FT: pretrained {backbone}, all weights meta-trained",
        "ss": "(4) SS: MTL (Φ and head init meta-trained)",
        "ss_ht": "(5) SS + HT: MTL with hard tasks",
    }[row]


def format_results_table(
    results: dict[str, dict[str, EvaluationResult]], names: Sequence[str], config: ExperimentConfig
) -> str:
    """Markdown: one row per method, one column per setting, ``mean ± CI`` in %."""
    return _method_table(
        results,
        names,
        lambda row: row_label(row, config),
        lambda r: f"{100 * r.mean:.2f} ± {100 * r.ci95:.2f}",
    )


def _method_table(results, names, label, cell) -> str:
    """Markdown: one row per method ``label(row)`` of `ROWS`, one column per setting of ``names``,
    ``cell(result)`` where the method has a result for the setting, else ``–``."""
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in ROWS:
        cells = []
        for name in names:
            r = results[name].get(row)
            cells.append(cell(r) if r is not None else "–")
        lines.append(f"| {label(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(mean: float, ci: float) -> str:
    """Plain words for a paired difference ``better - worse``."""
    if mean == 0 and ci == 0:
        return "no difference (identical on every episode)"
    if mean - ci > 0:
        return "holds (significant)"
    if mean + ci < 0:
        return "**reversed** (significant)"
    return f"not distinguishable ({'+' if mean >= 0 else '−'} sign, CI contains 0)"


def _verdict_code(mean: float, ci: float) -> str:
    if mean == 0 and ci == 0:
        return "identical"
    return "holds" if mean - ci > 0 else "**reversed**" if mean + ci < 0 else "n.s."


def _claims_table(results, names) -> tuple[str, dict]:
    lines = ["| claim (paper's ordering) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    verdicts = {}
    for better, worse, what in CLAIMS:
        cells = []
        for name in names:
            a, b = results[name].get(better), results[name].get(worse)
            if a is None or b is None:
                cells.append("–")
                continue
            mean, ci = paired_difference(a, b)
            verdicts[(better, worse, name)] = verdict(mean, ci)
            cells.append(f"{100 * mean:+.2f} ± {100 * ci:.2f} ({_verdict_code(mean, ci)})")
        lines.append(f"| {SHORT[better]} > {SHORT[worse]}: {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines), verdicts


def _per_step_table(results, name) -> str:
    any_result = next(iter(results[name].values()))
    last = len(any_result.per_step_accuracy) - 1
    steps = [s for s in (0, 1, 2, 5, 10, 20, 50, 100) if s < last] + [last]
    lines = [f"| {name} | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for row in ROWS:
        r = results[name].get(row)
        if r is not None:
            lines.append(
                f"| {SHORT[row]} | " + " | ".join(f"{100 * r.per_step_accuracy[s]:.2f}" for s in steps) + " |"
            )
    return "\n".join(lines)


def _ceiling_table(results, names) -> str:
    return _method_table(
        results,
        names,
        SHORT.__getitem__,
        lambda r: f"{100 * np.mean(np.asarray(r.episode_accuracies) >= 1.0):.0f}%",
    )


def _validation_table(summary) -> str:
    lines = [
        "| run | validation accuracy per epoch (%), epoch 0 = before meta-training | kept epoch | "
        "train loss per epoch | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, h in summary["histories"].items():
        val = " ".join(f"{100 * a:.2f}" for a in h["val_accuracy"])
        loss = " ".join(f"{v:.3f}" for v in h["loss"])
        extra = ""
        if "hard_tasks" in h:
            extra = f" (hard tasks trained per epoch: {h['hard_tasks']['per_epoch']})"
        lines.append(f"| {name} | {val}{extra} | {h['best_epoch']} | {loss} | {h['seconds']:.0f} |")
    return "\n".join(lines)


def write_plots(results, histories, out_dir: str, benchmark: str) -> list[str]:
    """``accuracy_bars.png``, ``inner_steps_<setting>.png`` per setting, ``meta_training.png``."""
    written = []
    results = {name: {row: by_row[row] for row in ROWS if row in by_row} for name, by_row in results.items()}
    if any(results.values()):
        bars = {
            name: {SHORT[row]: r for row, r in by_row.items()} for name, by_row in results.items() if by_row
        }
        written.append(
            plot_accuracy_bars(
                bars,
                os.path.join(out_dir, "accuracy_bars.png"),
                title=f"{benchmark}: test accuracy, mean ± 95% CI (same episodes per panel)",
            )
        )
    for name, by_row in results.items():
        if by_row:
            tag = name.replace(" ", "").replace("-", "")
            curves = {SHORT[row]: r for row, r in by_row.items()}
            written.append(
                plot_accuracy_vs_inner_steps(
                    curves,
                    os.path.join(out_dir, f"inner_steps_{tag}.png"),
                    title=f"{benchmark} {name}: test query accuracy after each inner step",
                )
            )
    if histories:
        curves = {
            name: {"loss": h["loss"], "accuracy": h["accuracy"], "val_accuracy": h["val_accuracy"][1:]}
            for name, h in histories.items()
        }
        written.append(
            plot_learning_curves(
                curves,
                os.path.join(out_dir, "meta_training.png"),
                title=f"{benchmark}: meta-training (validation = 5-way episodes)",
            )
        )
    return written


def write_results_md(summary: dict, results, path: str, plots: Sequence[str] = ()) -> dict[str, str]:
    """Write ``RESULTS.md``; return its tables (``main``, ``hard``, ``claims``)."""
    settings = summary["settings"]
    config = ExperimentConfig.from_dict(settings["config"])
    names = list(results)
    main_names = [n for n in names if n.startswith(f"{config.ways}-way ")]
    hard_names = [n for n in names if n not in main_names]
    main = format_results_table(results, main_names, config)
    hard = format_results_table(results, hard_names, config) if hard_names else ""
    claims, verdicts = _claims_table(results, names)
    splits = summary["splits"]
    secs = summary["seconds"]
    out = []
    add = out.append
    add(f"# Reproducing the MTL ablation on `{config.benchmark}`\n")
    add(
        f"Date: {summary['date']}. Total time: {secs['total']:.0f} s ({secs['total'] / 60:.1f} min) on "
        f"{summary['machine']['cpus']} CPU cores shared with other jobs (load average at the end: "
        f"{', '.join(f'{v:.1f}' for v in summary['machine']['load_average_at_end'] or [])}).\n"
    )
    add("Command:\n")
    add(f"```\n{summary['command']}\n```\n")
    add(f"## Test accuracy, {config.ways}-way (the issue's table)\n")
    add(
        f"Mean query accuracy (%) ± 95% CI over {config.test_episodes} test episodes of "
        f"{config.test_queries} queries per class, on {splits['test']['classes']} classes never seen in training. "
        "Every row is evaluated on the *same* episodes (one sampler seed).\n"
    )
    add(main + "\n")
    if hard:
        add(f"## A harder setting: {', '.join(hard_names)}\n")
        add(
            f"The same models (meta-trained {config.ways}-way) on {', '.join(hard_names)} test episodes "
            "(same episodes for every row). The head starts from zeros: a head init meta-learned for "
            f"{config.ways} positions has no meaning for other positions, and its column mean tiled over all "
            "classes gives the same softmax as zeros. Nothing here was chosen or tuned; this setting was fixed "
            "before any test result was seen, because 5-way glyph episodes were known to be near ceiling.\n"
        )
        add(hard + "\n")
    add("## The paper's ordering, tested with paired differences\n")
    add(
        "Same episodes for every row, so the per-episode difference `row A - row B` has its own 95% CI "
        "(1.96·std/√n), much tighter than comparing two overlapping CIs. Points of accuracy; *holds*: the CI "
        "lies above 0, ***reversed***: below 0, *n.s.*: it contains 0. One seed and one pretraining: the CIs "
        "cover episode sampling, not training randomness.\n"
    )
    add(claims + "\n")
    add(_summary_sentences(verdicts, names))
    add("## Evidence: accuracy after each inner step (test)\n")
    add(
        "Query accuracy (%) after t inner-loop steps on the support set (step 0 = the head "
        "initialisation). The curves are in the `inner_steps_*.png` plots.\n"
    )
    for name in names:
        add(_per_step_table(results, name) + "\n")
    add("Share of test episodes classified perfectly (100% of queries), a measure of the ceiling:\n")
    add(_ceiling_table(results, names) + "\n")
    add("## Evidence: meta-training and validation\n")
    add(_validation_table(summary) + "\n")
    add("## Settings, and what was chosen on the validation split\n")
    add(_settings_text(summary, config, settings) + "\n")
    add("## The paper, for comparison (miniImageNet, not run here)\n")
    add(
        "miniImageNet 5-way 1-shot, as quoted in issue 7 (Sun et al.): "
        + "; ".join(f"{k} {v}" for k, v in PAPER_MINI_IMAGENET_1SHOT.items())
        + ". The paper's FT and MAML rows there include HT; the rows here follow issue 7 (FT and scratch "
        "without HT). The same script runs on the real benchmarks with the paper presets of `mtl_keras.config` "
        "(needs the data folder and, in practice, a GPU):\n"
    )
    add(
        "```\nmtl-keras reproduce --config paper-mini_imagenet --benchmark mini_imagenet --root DATA/mini_imagenet "
        "--out runs/reproduce-mini\nmtl-keras reproduce --config paper-fc100 --benchmark fc100 --root DATA/cifar100 "
        "--out runs/reproduce-fc100\nmtl-keras reproduce --config paper-tiered_imagenet --benchmark tiered_imagenet "
        "--root DATA/tiered_imagenet --out runs/reproduce-tiered\n```\n"
    )
    add("## Files\n")
    add(
        "`results.json` (every number, per-episode accuracies included), "
        + ", ".join(f"`{os.path.basename(p)}`" for p in plots)
        + (
            ", `pretrained_backbone.weights.h5`"
            if summary["weights"].endswith("pretrained_backbone.weights.h5")
            else ""
        )
        + ". Time per stage (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())
        + ".\n"
    )
    back = summary.get("rows_read_back")
    if back:
        add(
            f"Rows read back from the run of {back['from_run_of']} (same settings but the rows; this run's "
            f"pretrained row reproduced that run's per-episode test accuracies exactly): "
            + ", ".join(SHORT[r] for r in back["rows"])
            + " (their times above are that run's).\n"
        )
    text = "\n".join(out)
    with open(path, "w") as f:
        f.write(text)
    return {"main": main, "hard": hard, "claims": claims}


def _summary_sentences(verdicts: dict, names: Sequence[str]) -> str:
    lines = ["In words (generated from the table above):\n"]
    for better, worse, what in CLAIMS:
        parts = [
            f"{name}: {verdicts[(better, worse, name)]}"
            for name in names
            if (better, worse, name) in verdicts
        ]
        if parts:
            lines.append(f"- *{what}* — " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def _settings_text(summary: dict, config: ExperimentConfig, settings: dict) -> str:
    episode_seed = settings.get("episode_seed", -1)
    episode_seed = config.seed if episode_seed is None or episode_seed < 0 else episode_seed
    splits = summary["splits"]
    probe = summary["ft_probe"]
    initial = summary["initial_val_accuracy"]
    lines = [
        f"- Data: `{config.benchmark}`, {config.image_size}×{config.image_size} images; classes "
        f"train / val / test = {splits['train']['classes']} / {splits['val']['classes']} / {splits['test']['classes']} "
        f"(images {splits['train']['images']} / {splits['val']['images']} / {splits['test']['images']}).",
        f"- One pretraining shared by rows 2-5: {config.backbone} widths {tuple(config.widths)}, "
        f"{config.pretrain_epochs} epochs over the {splits['train']['classes']} training classes, batch "
        f"{config.pretrain_batch_size}, Adam {config.pretrain_lr:g} with cosine decay, augmentation "
        f"{'on' if config.pretrain_augment else 'off'} (`mtl_keras.workflow.pretrain`). Weights: `{summary['weights']}`, "
        "loaded afresh for each row.",
        f"- Inner loop (every row, training and test): linear head, {config.inner_steps} steps in meta-training, "
        f"{config.eval_inner_steps} at validation/test, rate {config.inner_lr:g}, "
        f"{'first' if config.first_order else 'second'}-order meta-gradients.",
        f"- Meta-training, rows 3-5: {config.meta_epochs} epochs × {config.steps_per_epoch} steps, meta-batch "
        f"{config.meta_batch_size} tasks of {config.ways}-way K-shot with {config.queries} queries per class; "
        f"SS: Adam {config.phi_lr:g} (ε {config.adam_epsilon:g}) on Φ"
        f"{' and batch norm γ/β (train_batch_norm, as the official meta phase)' if config.train_batch_norm else ''}, "
        f"{config.head_lr:g} on the head init ({config.head_init}); "
        + (
            f"both rates ×{config.meta_lr_decay_rate:g} every {config.meta_lr_decay_every} epochs; "
            if config.meta_lr_decay_every
            else ""
        )
        + f"FT: Adam {summary['ft_lr']:g} on all "
        f"backbone weights, {config.head_lr:g} on the head init; HT: periodic schedule, "
        f"{config.ht_hard_batches} hard meta-batches after every {config.ht_every} normal ones "
        "(`HardTaskPool`).",
        (
            f"- Row 1 (scratch): Conv-4 with {settings['scratch_filters']} filters, random init, "
            f"{settings['scratch_epochs']} epochs × {settings['scratch_steps_per_epoch']} steps, Adam "
            f"{settings['scratch_lr']:g} (MAML's meta rate) on every weight and the head init. It has no pretraining, "
            "so it gets more meta-training steps; Conv-4 steps are cheap."
            if "scratch" in settings.get("rows", ROWS)
            else "- Rows run: pretrained, " + ", ".join(SHORT[r] for r in settings["rows"]) + "."
        ),
        '- Batch norm: every row calls the backbone with `training=False` (`batch_norm="frozen"`), so batch norm '
        "uses moving statistics that never change during meta-training. For FT these are the pretrained "
        "statistics while γ/β (and all convolution weights) train; with `set_phase('pretrain')` the BN layers are "
        "trainable and would use batch statistics if called in training mode, which `MetaTransferModel` does "
        "not do here. For scratch the statistics stay at their initial values (mean 0, variance 1), so its "
        "batch norms are learned per-channel affine maps — unlike MAML, which normalises with each batch's "
        "statistics.",
        f"- Seeds: seed {config.seed} for every initialiser and for the training episode stream of every row; "
        f"validation episodes seed {episode_seed + 1}, test episodes seed {episode_seed + 100} (identical for all "
        "rows). Evaluation adapts on cached embeddings (exactly the episodes of `evaluate_episodes`).",
        "",
        "Chosen on the validation split (never on test):",
        f"- The epoch of each meta-trained row: the best of epochs 1..E on {config.val_episodes} fixed "
        f"{config.ways}-way validation episodes (epoch 0, before meta-training, = row 2: "
        + ", ".join(f"{k} {100 * a:.2f}%" for k, a in initial.items())
        + "; it is not allowed to win, so every meta-trained row really is meta-trained). See the table above.",
    ]
    if probe:
        lines.append(
            f"- The FT learning rate, among {', '.join(probe)}: {settings['ft_probe_steps']} steps of "
            f"{config.shots[0]}-shot meta-training each, then the validation accuracy: "
            + ", ".join(f"{lr}: {100 * a:.2f}%" for lr, a in probe.items())
            + f" → {summary['ft_lr']:g} (used for every shot setting)."
        )
    else:
        lines.append(f"- The FT learning rate was not probed (one candidate): {summary['ft_lr']:g}.")
    source = (
        "the `cpu-glyph_scenes` recipe (chosen on its validation split, `benchmarks/glyph_scenes.md`): inner "
        "rate and steps, Φ and head rates and their decay"
        if summary.get("benchmark") == "glyph_scenes"
        else "the `cpu-glyphs` preset (chosen earlier on validation, `benchmarks/probes/select_cpu_glyphs.py`): "
        "inner rate, Φ and head rates"
    )
    lines.append(
        f"- From {source}. Pretraining settings and the scratch rate were fixed in advance, not tuned."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line
def settings_from_args(args: argparse.Namespace) -> ReproduceSettings:
    """Settings from ``mtl-keras reproduce`` arguments (see `mtl_keras.cli`).

    Order (later wins): ``--config`` (default: `default_config`), ``--quick``, the flags
    (``--benchmark``, ``--root``, ``--allow-pickle``, ``--seed``, ``--shots``), then ``--set``.
    """
    config = get_config(args.config) if args.config else default_config()
    settings = ReproduceSettings(config=config)
    if args.quick:
        settings = settings.quick()
    fields = {
        "benchmark": args.benchmark,
        "root": args.root,
        "seed": args.seed,
        "shots": tuple(args.shots) if args.shots else None,
        "allow_pickle": True if getattr(args, "allow_pickle", False) else None,
    }
    settings = settings.replace(**{k: v for k, v in fields.items() if v is not None})
    if getattr(args, "rows", None):
        settings = settings.replace(rows=tuple(args.rows))
    return settings.with_overrides(args.set or ()).validate()


def command_from_args(args: argparse.Namespace, prog: str = "mtl-keras reproduce") -> str:
    """The canonical command line of parsed ``args`` (what ``RESULTS.md`` records)."""
    parts = [prog]
    if args.quick:
        parts.append("--quick")
    for flag in ("config", "benchmark", "root", "seed", "weights", "out"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag}", str(value)]
    if args.shots:
        parts += ["--shots", *map(str, args.shots)]
    if getattr(args, "seeds", None):
        parts += ["--seeds", *map(str, args.seeds)]
    if getattr(args, "rows", None):
        parts += ["--rows", *args.rows]
    if getattr(args, "allow_pickle", False):
        parts.append("--allow-pickle")
    for item in args.set or ():
        parts += ["--set", item]
    if args.quiet:
        parts.append("--quiet")
    return " ".join(shlex.quote(p) if i else p for i, p in enumerate(parts))


def run_from_args(args: argparse.Namespace, prog: str = "mtl-keras reproduce") -> dict:
    """`reproduce` as the command line asks; the command is recorded in ``RESULTS.md``."""
    settings = settings_from_args(args)
    out = args.out or os.path.join(
        "runs", f"reproduce-{settings.config.benchmark}{'-quick' if args.quick else ''}"
    )
    command = command_from_args(args, prog)
    if getattr(args, "seeds", None):
        if args.weights:
            raise ValueError(
                "--weights with --seeds: each seed pretrains its own backbone; drop --weights, or run one "
                "seed with --seed S --weights FILE."
            )
        return reproduce_seeds(settings, out, args.seeds, verbose=not args.quiet, command=command)
    return reproduce(settings, out, weights=args.weights, verbose=not args.quiet, command=command)


__all__ = [
    "EpisodeSet",
    "EpisodeValidation",
    "ReproduceSettings",
    "build_row_model",
    "command_from_args",
    "draw_episodes",
    "embed_split",
    "evaluate_features",
    "paired_difference",
    "reproduce",
    "reproduce_seeds",
    "rewrite_report",
    "run_from_args",
    "settings_from_args",
]
