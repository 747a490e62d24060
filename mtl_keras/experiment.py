"""The main job: pretrain → meta-train (MTL) → evaluate → export, in one run folder.

Everything the CLI's ``demo`` and ``run`` do lives here, so notebooks and scripts
can call the same steps one at a time.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.backbones import get_backbone
from mtl_keras.config import ExperimentConfig
from mtl_keras.data.augment import pretrain_augmentation
from mtl_keras.data.episodes import make_episodes, pretrain_dataset
from mtl_keras.data.registry import load_benchmark
from mtl_keras.evaluation import EvaluationResult, confidence_interval, evaluate_episodes
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.models.pretrain import PretrainModel
from mtl_keras.plots import plot_accuracy_vs_inner_steps, plot_episode_grid, plot_learning_curves, plot_run


def _verbose_mode(verbose: bool) -> int:
    return 0 if not verbose else (1 if sys.stdout.isatty() else 2)


def build_backbone(config: ExperimentConfig, channels: int) -> keras.Model:
    """The configured backbone for ``(image_size, image_size, channels)`` images."""
    kwargs = {"widths": tuple(config.widths)} if config.backbone != "conv4" else {"filters": config.widths[0]}
    return get_backbone(config.backbone, (config.image_size, config.image_size, channels), **kwargs)


def pretrain(config: ExperimentConfig, train_split, verbose: bool = True, callbacks: list | None = None):
    """Train the backbone as a classifier over the base classes.

    ``callbacks`` (optional) are passed to ``fit`` (e.g. `tensorboard_callbacks`).

    Returns:
        ``(PretrainModel, history dict)``. 10% of each class is held out and
        reported as ``val_accuracy``.
    """
    keras.utils.set_random_seed(config.seed)
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
    steps = sum(1 for _ in train_ds) * max(1, config.pretrain_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(config.pretrain_lr, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        train_ds, validation_data=held_ds, epochs=config.pretrain_epochs, verbose=_verbose_mode(verbose),
        callbacks=list(callbacks or []),
    )
    return model, history.history


def meta_model(
    config: ExperimentConfig, channels: int, weights_path: str | None, strategy: tf.distribute.Strategy | None = None,
) -> MetaTransferModel:
    """A fresh `MetaTransferModel` whose backbone carries the pretrained weights.

    With a ``strategy`` (e.g. ``tf.distribute.MirroredStrategy()``) the model and
    both optimizers are created in its scope, so ``fit`` splits every meta-batch
    across its replicas (see ``docs/distributed.md``).
    """
    if strategy is not None:
        with strategy.scope():
            return meta_model(config, channels, weights_path)
    from mtl_keras.models.weights import load_backbone_weights

    backbone = build_backbone(config, channels)
    if weights_path:
        load_backbone_weights(backbone, weights_path)  # names both architectures on a mismatch
    model = MetaTransferModel(
        backbone,
        ways=config.ways,
        inner_steps=config.inner_steps,
        eval_inner_steps=config.eval_inner_steps,
        inner_lr=config.inner_lr,
        first_order=config.first_order,
    )
    model.compile(phi_learning_rate=config.phi_lr, head_learning_rate=config.head_lr)
    return model


def meta_train(
    config: ExperimentConfig, model: MetaTransferModel, train_split, val_split, shots: int,
    checkpoint_path: str, verbose: bool = True, callbacks: list | None = None,
) -> dict:
    """Meta-train ``model`` on ``shots``-shot episodes; keep the best validation epoch.

    The weights with the highest mean validation-episode accuracy are written to
    ``checkpoint_path`` and restored into ``model`` at the end. ``callbacks``
    (optional) are passed to ``fit`` after the checkpoint callback.
    """
    keras.utils.set_random_seed(config.seed)
    train_eps = make_episodes(
        train_split, config.ways, shots, config.queries, meta_batch_size=config.meta_batch_size,
        seed=config.seed,
    )
    val_batch = 10
    val_eps = make_episodes(
        val_split, config.ways, shots, config.queries, meta_batch_size=val_batch,
        num_batches=max(1, config.val_episodes // val_batch), seed=config.seed + 1, repeatable=True,
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        checkpoint_path, monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True,
    )
    # Epoch 0: the pretrained model before any meta-training competes too.
    initial = model.evaluate(val_eps, verbose=0, return_dict=True)
    model.save_weights(checkpoint_path)
    checkpoint.best = initial["accuracy"]
    history = model.fit(
        train_eps, steps_per_epoch=config.steps_per_epoch, epochs=config.meta_epochs,
        validation_data=val_eps, callbacks=[checkpoint, *(callbacks or [])], verbose=_verbose_mode(verbose),
    )
    model.load_weights(checkpoint_path)
    hist = dict(history.history)
    hist["initial_val_accuracy"] = [initial["accuracy"]]
    # Epoch kept: 0 (the pretrained model) unless a meta-training epoch beat it on validation.
    val = [initial["accuracy"], *hist.get("val_accuracy", [])]
    hist["kept_epoch"] = [int(max(range(len(val)), key=lambda i: (val[i], -i)))]
    return hist


def format_table(rows: dict[str, dict[int, EvaluationResult]], ways: int) -> str:
    """A Markdown table: one row per method, one column per shot setting."""
    shots = sorted({s for r in rows.values() for s in r})
    header = "| method | " + " | ".join(f"{ways}-way {s}-shot" for s in shots) + " |"
    lines = [header, "|---|" + "---|" * len(shots)]
    for name, by_shot in rows.items():
        cells = [
            f"{100 * by_shot[s].mean:.2f} ± {100 * by_shot[s].ci95:.2f}" if s in by_shot else "–"
            for s in shots
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_experiment(
    config: ExperimentConfig, run_dir: str, verbose: bool = True,
    callbacks: Callable[[str], list] | None = None,
) -> dict:
    """Pretrain, evaluate the pretrained baseline, meta-train with MTL, evaluate, export.

    Writes into ``run_dir``: ``config.json``, ``pretrained_backbone.weights.h5``,
    ``mtl_{K}shot.weights.h5``, ``metrics.json``, ``results.md``,
    ``learning_curves.png``, ``accuracy_vs_inner_steps.png`` and
    ``export/{N}way{K}shot`` SavedModels.

    ``callbacks`` (optional): a function ``stage → list of Keras callbacks`` for the
    ``fit`` of each stage, ``"pretrain"`` and ``"mtl_{K}shot"`` (`run_workflow` passes
    TensorBoard callbacks this way). None (default): no extra callbacks.

    Returns:
        The metrics dict that is also written to ``metrics.json``.
    """
    start = time.time()
    os.makedirs(run_dir, exist_ok=True)
    config.to_json(os.path.join(run_dir, "config.json"))
    say = print if verbose else (lambda *a, **k: None)

    say(f"[1/4] Loading benchmark '{config.benchmark}'")
    train, val, test = load_benchmark(config.benchmark, root=config.root, image_size=config.image_size)

    say(f"[2/4] Pretraining {config.backbone} {tuple(config.widths)} on {train.num_classes} base classes")
    pre_model, pre_hist = pretrain(
        config, train, verbose=verbose, callbacks=callbacks("pretrain") if callbacks else None
    )
    weights_path = os.path.join(run_dir, "pretrained_backbone.weights.h5")
    pre_model.backbone.save_weights(weights_path)
    histories = {"pretrain": pre_hist}

    rows: dict[str, dict[int, EvaluationResult]] = {"pretrained + inner loop (no meta-training)": {}, "MTL (SS, meta-trained)": {}}
    curves = {}
    for shots in config.shots:
        say(f"[3/4] {config.ways}-way {shots}-shot: baseline evaluation, then meta-training")
        model = meta_model(config, train.channels, weights_path)
        baseline = evaluate_episodes(
            model, test, config.ways, shots, config.test_queries, episodes=config.test_episodes,
            seed=config.seed + 100, verbose=verbose,
        )
        say(f"    pretrained + inner loop: {baseline}")
        rows["pretrained + inner loop (no meta-training)"][shots] = baseline
        hist = meta_train(
            config, model, train, val, shots,
            os.path.join(run_dir, f"mtl_{shots}shot.weights.h5"), verbose=verbose,
            callbacks=callbacks(f"mtl_{shots}shot") if callbacks else None,
        )
        histories[f"MTL {shots}-shot"] = hist
        say(f"[4/4] {config.ways}-way {shots}-shot: test evaluation ({config.test_episodes} episodes)")
        result = evaluate_episodes(
            model, test, config.ways, shots, config.test_queries, episodes=config.test_episodes,
            seed=config.seed + 100, verbose=verbose,
        )
        kept = hist["kept_epoch"][0]
        say(f"    MTL: {result}; kept meta-training epoch {kept} of {config.meta_epochs} by validation accuracy"
            + (" (0 = the pretrained model: no epoch beat it)" if kept == 0 else ""))
        rows["MTL (SS, meta-trained)"][shots] = result
        curves[f"pretrained, {shots}-shot"] = baseline
        curves[f"MTL, {shots}-shot"] = result
        model.export(os.path.join(run_dir, "export", f"{config.ways}way{shots}shot"), verbose=verbose)

    table = format_table(rows, config.ways)
    plot_learning_curves(histories, os.path.join(run_dir, "learning_curves.png"),
                         title=f"{config.benchmark}: pretraining and meta-training")
    plot_accuracy_vs_inner_steps(curves, os.path.join(run_dir, "accuracy_vs_inner_steps.png"))
    metrics = {
        "benchmark": config.benchmark,
        "splits": {s.name: {"classes": s.num_classes, "images": s.num_images} for s in (train, val, test)},
        "results": {name: {f"{k}-shot": r.to_dict() for k, r in by.items()} for name, by in rows.items()},
        "histories": histories,
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, default=float)
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    say("")
    say(f"Test accuracy (%) on {test.num_classes} unseen {config.benchmark} classes, "
        f"{config.test_episodes} episodes, mean ± 95% CI:")
    say(table)
    say(f"\nRun folder: {run_dir} ({metrics['seconds']:.0f} s)")
    return metrics


# --------------------------------------------------------------------------- workflow stages
# The `mtl-keras` subcommands, one function each: every stage reads and writes the
# same run folder, so `pretrain` → `meta-train` → `evaluate` → `export` → `plot`
# run one after the other (possibly days apart) give what `run` gives in one go.

MTL_ROW = "MTL (SS, meta-trained)"
PRETRAINED_WEIGHTS = "pretrained_backbone.weights.h5"


def checkpoint_path(run_dir: str, shots: int) -> str:
    """Where the meta-trained ``shots``-shot weights of a run live."""
    return os.path.join(run_dir, f"mtl_{shots}shot.weights.h5")


def load_config_benchmark(config: ExperimentConfig):
    """`load_benchmark` with the config's benchmark, root and image size."""
    return load_benchmark(config.benchmark, root=config.root, image_size=config.image_size)


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
        optimizers = ((("phi", self.model.optimizer), ("head", head)) if head is not None
                      else (("optimizer", getattr(self.model, "optimizer", None)),))
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
    return {"benchmark": config.benchmark, "splits": _split_summary(splits), "channels": splits.train.channels}


def pretrain_stage(config: ExperimentConfig, run_dir: str, verbose: bool = True, tensorboard: bool = True) -> str:
    """Pretrain the backbone into a run folder (``mtl-keras pretrain``).

    Writes ``config.json``, ``pretrained_backbone.weights.h5``, the ``pretrain``
    history in ``metrics.json``, TensorBoard logs in ``logs/pretrain`` and the plots.

    Returns:
        The path of the pretrained backbone weights.
    """
    os.makedirs(run_dir, exist_ok=True)
    config.to_json(os.path.join(run_dir, "config.json"))
    splits = load_config_benchmark(config)
    train = splits.train
    callbacks = tensorboard_callbacks(os.path.join(run_dir, "logs", "pretrain")) if tensorboard else None
    model, history = pretrain(config, train, verbose=verbose, callbacks=callbacks)
    path = os.path.join(run_dir, PRETRAINED_WEIGHTS)
    model.backbone.save_weights(path)
    update_metrics(run_dir, {**_run_info(config, splits), "histories": {"pretrain": history}})
    plot_run(run_dir)
    if verbose:
        print(f"Pretrained backbone: {path}")
    return path


def meta_train_stage(
    config: ExperimentConfig, run_dir: str, weights_path: str | None = None, verbose: bool = True,
    tensorboard: bool = True,
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

    Returns:
        ``{K: checkpoint path}`` (``mtl_{K}shot.weights.h5``, the best validation epoch).

    Raises:
        FileNotFoundError: no pretrained weights.
    """
    weights_path = weights_path or os.path.join(run_dir, PRETRAINED_WEIGHTS)
    if not os.path.exists(weights_path):
        raise FileNotFoundError(
            f"No pretrained weights at {weights_path}: run `mtl-keras pretrain --run-dir {run_dir}` "
            "first or pass --weights."
        )
    os.makedirs(run_dir, exist_ok=True)
    config.to_json(os.path.join(run_dir, "config.json"))
    splits = load_config_benchmark(config)
    written = {}
    for shots in config.shots:
        model = meta_model(config, splits.train.channels, weights_path)
        callbacks = (tensorboard_callbacks(os.path.join(run_dir, "logs", f"mtl_{shots}shot"))
                     if tensorboard else None)
        history = meta_train(config, model, splits.train, splits.val, shots, checkpoint_path(run_dir, shots),
                             verbose=verbose, callbacks=callbacks)
        update_metrics(run_dir, {**_run_info(config, splits), "histories": {f"MTL {shots}-shot": history}})
        written[shots] = checkpoint_path(run_dir, shots)
        if verbose:
            print(f"{config.ways}-way {shots}-shot MTL weights: {written[shots]}")
    plot_run(run_dir)
    return written


def evaluate_in_detail(
    model: MetaTransferModel,
    split,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    inner_steps: int | None = None,
    meta_batch_size: int = 10,
    verbose: bool = False,
) -> tuple[EvaluationResult, dict]:
    """`evaluate_episodes` (same episodes, same result) plus per-class statistics.

    Returns:
        ``(result, details)`` with ``details``:

        * ``class_ids``, ``class_names``: the split's classes that appeared;
        * ``accuracy``: each one's mean query accuracy over the episodes it was in;
        * ``episodes``: how many episodes it was in;
        * ``worst``: how many times it was its episode's *failure class* (lowest
          accuracy, the hard-task criterion; episodes whose classes all tie count for
          none);
        * ``sample``: the first episode — ``support_images (N*K, H, W, C) uint8``,
          ``support_labels``, ``query_images``, ``query_labels``,
          ``query_predictions``, ``class_names (N,)``.
    """
    if model.ways != ways:
        raise ValueError(f"The model has a {model.ways}-way head; cannot evaluate {ways}-way episodes.")
    steps = model.eval_inner_steps if inner_steps is None else int(inner_steps)
    batch = max(1, min(meta_batch_size, episodes))
    ds = make_episodes(split, ways, shots, queries, meta_batch_size=batch,
                       num_batches=math.ceil(episodes / batch), seed=seed, repeatable=True)

    @tf.function(reduce_retracing=True)
    def run(inputs, labels):
        _, history = model.adapt(inputs["support_images"], inputs["support_labels"], inputs["query_images"],
                                 steps=steps, return_history=True)
        logits = history["query_logits"]  # (T+1, B, N*Q, N)
        preds = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_mean(tf.cast(tf.equal(preds, labels[None]), tf.float32), axis=-1)  # (T+1, B)
        class_acc = MetaTransferModel.per_class_accuracy(logits[-1], labels, ways)  # (B, N)
        return correct, history["support_loss"], class_acc, preds[-1]

    correct_all, loss_all, class_acc_all, classes_all = [], [], [], []
    sample = None
    bar = keras.utils.Progbar(episodes, unit_name="episode") if verbose else None
    for inputs, labels in ds:
        correct, loss, class_acc, preds = run(inputs, labels)
        correct_all.append(correct.numpy())
        loss_all.append(loss.numpy())
        class_acc_all.append(class_acc.numpy())
        classes_all.append(inputs["task_classes"].numpy())
        if sample is None:
            sample = {
                "support_images": np.round(inputs["support_images"][0].numpy() * 255).astype(np.uint8),
                "support_labels": inputs["support_labels"][0].numpy(),
                "query_images": np.round(inputs["query_images"][0].numpy() * 255).astype(np.uint8),
                "query_labels": labels[0].numpy(),
                "query_predictions": preds[0].numpy(),
                "task_classes": inputs["task_classes"][0].numpy(),
            }
        if bar is not None:
            bar.update(min(sum(c.shape[1] for c in correct_all), episodes))
    correct = np.concatenate(correct_all, axis=1)[:, :episodes]
    losses = np.concatenate(loss_all, axis=1)[:, :episodes]
    class_acc = np.concatenate(class_acc_all, axis=0)[:episodes]  # (E, N)
    task_classes = np.concatenate(classes_all, axis=0)[:episodes]  # (E, N) global ids
    mean, ci = confidence_interval(correct[-1])
    result = EvaluationResult(
        mean=mean, ci95=ci, episode_accuracies=correct[-1], per_step_accuracy=correct.mean(axis=1),
        per_step_support_loss=losses.mean(axis=1), ways=ways, shots=shots, queries=queries, inner_steps=steps,
    )
    name_of = dict(zip(np.asarray(split.class_ids).tolist(), split.class_names))
    ids, inverse = np.unique(task_classes.reshape(-1), return_inverse=True)
    hits = np.bincount(inverse, weights=class_acc.reshape(-1), minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids))
    failing = class_acc.min(axis=1) < class_acc.max(axis=1)
    worst_ids = task_classes[np.arange(len(task_classes)), class_acc.argmin(axis=1)][failing]
    worst = dict(zip(*np.unique(worst_ids, return_counts=True))) if len(worst_ids) else {}
    sample["class_names"] = np.array([name_of[int(c)] for c in sample.pop("task_classes")])
    details = {
        "class_ids": ids.tolist(),
        "class_names": [name_of[int(c)] for c in ids],
        "accuracy": (hits / np.maximum(counts, 1)).tolist(),
        "episodes": counts.tolist(),
        "worst": [int(worst.get(c, 0)) for c in ids],
        "sample": sample,
    }
    return result, details


def _save_evaluation(run_dir: str, shots: int, result: EvaluationResult | None, details: dict,
                     benchmark: str, tensorboard: bool) -> None:
    """Write an evaluation's per-class statistics, sample episode (and result) into the run folder."""
    key = f"{shots}-shot"
    updates = {
        "per_class": {key: {k: details[k] for k in ("class_ids", "class_names", "accuracy", "episodes", "worst")}},
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
                sample["support_images"], sample["support_labels"], sample["query_images"], sample["query_labels"],
                os.path.join(tmp, "episode.png"), query_predictions=sample["query_predictions"],
                class_names=sample["class_names"], title=f"{benchmark}: a test episode ({shots}-shot)",
            )
            write_episode_image(os.path.join(run_dir, "logs", f"test_{shots}shot"), png, tag="test_episode")


def evaluate_stage(
    config: ExperimentConfig, run_dir: str, weights_path: str | None = None, episodes: int | None = None,
    verbose: bool = True, tensorboard: bool = True,
) -> dict[int, EvaluationResult]:
    """Evaluate meta-trained weights on test episodes (``mtl-keras evaluate``).

    For each K of ``config.shots``: loads ``mtl_{K}shot.weights.h5`` (or
    ``weights_path``), runs `evaluate_in_detail` on ``episodes`` (default
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
        result, details = evaluate_in_detail(
            model, test, config.ways, shots, config.test_queries, episodes=episodes or config.test_episodes,
            seed=config.seed + 100, verbose=verbose,
        )
        _save_evaluation(run_dir, shots, result, details, config.benchmark, tensorboard)
        results[shots] = result
        if verbose:
            print(f"MTL {result}")
    plot_run(run_dir)
    return results


def export_stage(config: ExperimentConfig, run_dir: str, output_dir: str | None = None,
                 verbose: bool = True) -> dict[int, str]:
    """Export each meta-trained model as an ``adapt_and_classify`` SavedModel (``mtl-keras export``).

    Writes ``{output_dir or run_dir/export}/{N}way{K}shot`` from ``mtl_{K}shot.weights.h5``.

    Returns:
        ``{K: SavedModel folder}``.
    """
    channels = read_metrics(run_dir).get("channels") or load_config_benchmark(config).train.channels
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


def run_workflow(config: ExperimentConfig, run_dir: str, verbose: bool = True, tensorboard: bool = True) -> dict:
    """`run_experiment` plus what the ``mtl-keras run`` folder promises on top.

    Runs `run_experiment` (pretrain → baseline → meta-train → evaluate → export) with
    TensorBoard callbacks (``logs/pretrain``, ``logs/mtl_{K}shot``), then one more pass
    over the same test episodes per K (`evaluate_in_detail`) for the per-class accuracy,
    failure-class counts and a sample episode (also shown in TensorBoard), and writes
    every plot into ``run_dir/plots``.

    Returns:
        The final ``metrics.json`` content.
    """
    factory = (lambda stage: tensorboard_callbacks(os.path.join(run_dir, "logs", stage))) if tensorboard else None
    run_experiment(config, run_dir, verbose=verbose, callbacks=factory)
    splits = load_config_benchmark(config)
    test = splits.test
    update_metrics(run_dir, _run_info(config, splits))
    for shots in config.shots:
        model = meta_model(config, test.channels, None)
        model.load_weights(checkpoint_path(run_dir, shots))
        _, details = evaluate_in_detail(
            model, test, config.ways, shots, config.test_queries, episodes=config.test_episodes,
            seed=config.seed + 100, verbose=False,
        )
        _save_evaluation(run_dir, shots, None, details, config.benchmark, tensorboard)
    written = plot_run(run_dir)
    if verbose:
        print(f"Plots: {', '.join(os.path.basename(p) for p in written)} in {os.path.join(run_dir, 'plots')}")
    return read_metrics(run_dir)
