"""The report of one run: ``RESULTS.md`` (tables, paired claims, settings text) and the plots,
written by `reproduce` or again from ``results.json`` (`rewrite_report`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from mtl_keras.evaluation import EvaluationResult, paired_difference
from mtl_keras_app.ablation.settings import CLAIMS, PAPER_MINI_IMAGENET_1SHOT, ROWS, SHORT, ReproduceSettings
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.plots import plot_accuracy_bars, plot_accuracy_vs_inner_steps, plot_learning_curves


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
        "simpleshot_l2n": "(2a) SimpleShot L2N: nearest centroid on the pretrained features",
        "simpleshot": "(2b) SimpleShot CL2N: nearest centroid, features centred on the base classes' mean",
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
        if r is not None and r.inner_steps > 0:  # nearest centroid has no inner loop
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
        "miniImageNet 5-way 1-shot, as reported by Sun et al. (CVPR 2019): "
        + "; ".join(f"{k} {v}" for k, v in PAPER_MINI_IMAGENET_1SHOT.items())
        + ". The paper's FT and MAML rows there include HT; the rows here do not (FT and scratch "
        "without HT). The same script runs on the real benchmarks with the paper presets of `mtl_keras_app.config` "
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
        f"{'on' if config.pretrain_augment else 'off'} (`mtl_keras_app.workflow.pretrain`). Weights: `{summary['weights']}`, "
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
        f"- The epoch of each meta-trained row: the best of epochs 0..E on {config.val_episodes} fixed "
        f"{config.ways}-way validation episodes, earlier on ties (`mtl_keras.evaluation.kept_epoch`, the rule "
        "of the workflow and the tuner too; epoch 0, before meta-training, = row 2: "
        + ", ".join(f"{k} {100 * a:.2f}%" for k, a in initial.items())
        + "; a row that keeps epoch 0 is the pretrained model: its meta-training never beat it). See the table above.",
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
