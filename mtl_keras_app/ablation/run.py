"""The whole run on one benchmark: `reproduce` (pretraining, the five rows, ``results.json``,
``RESULTS.md`` and plots in one folder)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence

import numpy as np

from mtl_keras.evaluation import (
    EvaluationResult,
    base_feature_mean,
    draw_episodes,
    embed_split,
    evaluate_nearest_centroid,
)
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras_app.ablation.features import evaluate_model
from mtl_keras_app.ablation.report import results_from_summary, write_plots, write_results_md
from mtl_keras_app.ablation.rows import build_row_model, meta_train_row
from mtl_keras_app.ablation.settings import ROWS, SHORT, ReproduceSettings
from mtl_keras_app.run_lock import locks_run_folder
from mtl_keras_app.workflow import load_config_benchmark, pretrain


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

    def test_row(row: str, model: MetaTransferModel, shots: Sequence[int]):
        features = embed_split(model, test)  # once per row: every setting shares it
        for name, (_, k) in settings_of.items():
            if k in shots:
                results[name][row] = evaluate_model(model, test, test_episodes[name], features, chunk)
                say(f"    test {SHORT[row]:>14}: {results[name][row]}", flush=True)
        return features

    def test_nearest_centroid(model: MetaTransferModel, features) -> None:
        """The SimpleShot rows: nearest centroid on ``model``'s features, the same test episodes."""
        mean = base_feature_mean(model, train, seed=config.seed)
        for name, (n, k) in settings_of.items():
            for row, normalization in (("simpleshot_l2n", "L2N"), ("simpleshot", "CL2N")):
                results[name][row] = evaluate_nearest_centroid(
                    model,
                    test,
                    n,
                    k,
                    config.test_queries,
                    config.test_episodes,
                    episode_seed + 100,
                    normalization=normalization,
                    mean_feature=mean,
                    features=features,
                )
                say(f"    test {SHORT[row]:>14}: {results[name][row]}", flush=True)

    # Row 2 (no meta-training) and the epoch-0 validation of rows 3-5: one embedding each.
    t = time.time()
    base = build_row_model("pretrained", settings, channels, weights_path)
    val_features = embed_split(base, val)
    initial_val = {
        k: float(evaluate_model(base, val, val_episodes[k], val_features, chunk).mean) for k in shots_list
    }
    say(
        f"[row 2] pretrained + inner loop: validation {', '.join(f'{k}-shot {100 * a:.2f}%' for k, a in initial_val.items())}"
    )
    test_nearest_centroid(base, test_row("pretrained", base, shots_list))
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
