"""The main job: pretrain → meta-train (MTL) → evaluate → export, in one run folder.

Everything the CLI's ``demo`` and ``run`` do lives here, so notebooks and scripts
can call the same steps one at a time.
"""

from __future__ import annotations

import json
import os
import sys
import time

import keras

from mtl_keras.backbones import get_backbone
from mtl_keras.config import ExperimentConfig
from mtl_keras.data.augment import pretrain_augmentation
from mtl_keras.data.episodes import make_episodes, pretrain_dataset
from mtl_keras.data.registry import load_benchmark
from mtl_keras.evaluation import EvaluationResult, evaluate_episodes
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.models.pretrain import PretrainModel
from mtl_keras.plots import plot_accuracy_vs_inner_steps, plot_learning_curves


def _verbose_mode(verbose: bool) -> int:
    return 0 if not verbose else (1 if sys.stdout.isatty() else 2)


def build_backbone(config: ExperimentConfig, channels: int) -> keras.Model:
    """The configured backbone for ``(image_size, image_size, channels)`` images."""
    kwargs = {"widths": tuple(config.widths)} if config.backbone != "conv4" else {"filters": config.widths[0]}
    return get_backbone(config.backbone, (config.image_size, config.image_size, channels), **kwargs)


def pretrain(config: ExperimentConfig, train_split, verbose: bool = True):
    """Train the backbone as a classifier over the base classes.

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
        train_ds, validation_data=held_ds, epochs=config.pretrain_epochs, verbose=_verbose_mode(verbose)
    )
    return model, history.history


def meta_model(config: ExperimentConfig, channels: int, weights_path: str | None) -> MetaTransferModel:
    """A fresh `MetaTransferModel` whose backbone carries the pretrained weights."""
    backbone = build_backbone(config, channels)
    if weights_path:
        backbone.load_weights(weights_path)
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
    checkpoint_path: str, verbose: bool = True,
) -> dict:
    """Meta-train ``model`` on ``shots``-shot episodes; keep the best validation epoch.

    The weights with the highest mean validation-episode accuracy are written to
    ``checkpoint_path`` and restored into ``model`` at the end.
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
        validation_data=val_eps, callbacks=[checkpoint], verbose=_verbose_mode(verbose),
    )
    model.load_weights(checkpoint_path)
    hist = dict(history.history)
    hist["initial_val_accuracy"] = [initial["accuracy"]]
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


def run_experiment(config: ExperimentConfig, run_dir: str, verbose: bool = True) -> dict:
    """Pretrain, evaluate the pretrained baseline, meta-train with MTL, evaluate, export.

    Writes into ``run_dir``: ``config.json``, ``pretrained_backbone.weights.h5``,
    ``mtl_{K}shot.weights.h5``, ``metrics.json``, ``results.md``,
    ``learning_curves.png``, ``accuracy_vs_inner_steps.png`` and
    ``export/{N}way{K}shot`` SavedModels.

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
    pre_model, pre_hist = pretrain(config, train, verbose=verbose)
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
        )
        histories[f"MTL {shots}-shot"] = hist
        say(f"[4/4] {config.ways}-way {shots}-shot: test evaluation ({config.test_episodes} episodes)")
        result = evaluate_episodes(
            model, test, config.ways, shots, config.test_queries, episodes=config.test_episodes,
            seed=config.seed + 100, verbose=verbose,
        )
        say(f"    MTL: {result}")
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
