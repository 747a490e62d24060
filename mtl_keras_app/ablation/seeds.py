"""Several training seeds, all tested on the same episodes: `reproduce_seeds` and ``SEEDS.md``
(`seeds_report`)."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence

import numpy as np

from mtl_keras.evaluation import confidence_interval
from mtl_keras_app.ablation.run import reproduce, same_settings_but_rows
from mtl_keras_app.ablation.settings import CLAIMS, ROWS, SHORT, ReproduceSettings
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.run_lock import locks_run_folder

#: The targets `seeds_report` checks at every N-way setting, on the pooled paired differences:
#: (better, worse, minimum paired difference in points, what it says). ``worse`` may name several
#: rows: per setting, the one with the highest pooled mean (the baseline gets the benefit of the
#: doubt).
SEED_TARGETS = (
    ("ss", ("pretrained",), 0.0, "SS ≥ pretrained + inner loop, pooled paired CI not below 0"),
    (
        "ss",
        ("simpleshot_l2n", "simpleshot"),
        0.0,
        "SS ≥ SimpleShot (the better of L2N and CL2N), pooled paired CI not below 0",
    ),
    (
        "ss",
        ("pretrained", "simpleshot_l2n", "simpleshot"),
        2.0,
        "SS ≥ the best of those baselines + 2 points (pooled)",
    ),
)
#: No meta-training run's epoch-mean outer gradient norm may exceed this many times its first epoch's.
GRADIENT_RATIO_LIMIT = 100.0


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
    add("## The targets\n")
    add(
        "Met means: the pooled paired difference's 95% CI lies at or above the minimum (for ≥ 0: its "
        "lower end is not below 0); the per-seed means are shown beside it.\n"
    )
    lines = []
    for name in (n for n in names if n.startswith(f"{config.ways}-way ")):
        for better, worse, minimum, what in SEED_TARGETS:
            if better not in rows:
                lines.append(f"- {name}: {what}: not run (row {SHORT[better]} missing).")
                continue
            candidates = [r for r in worse if r in rows]
            if not candidates:
                lines.append(f"- {name}: {what}: not run (row {SHORT[worse[0]]} missing).")
                continue
            worse = max(candidates, key=lambda r: numbers[name][r]["pooled"][0])
            label = f"{what} (here {SHORT[worse]})" if len(candidates) > 1 else what
            diffs = [per_seed[s][name][better] - per_seed[s][name][worse] for s in seeds]
            per = [confidence_interval(d)[0] for d in diffs]
            pooled = confidence_interval(np.mean(diffs, axis=0))
            met = (pooled[0] - pooled[1] >= 0) if minimum == 0 else (pooled[0] >= minimum / 100)
            numbers[name].setdefault("targets", {})[what] = {
                "met": bool(met),
                "pooled": pooled,
                "per_seed": per,
            }
            lines.append(
                f"- {name}: {label}: **{'met' if met else 'not met'}** — pooled "
                f"{100 * pooled[0]:+.2f} ± {100 * pooled[1]:.2f}; per seed "
                + ", ".join(f"{100 * m:+.2f}" for m in per)
                + "."
            )
    ratios = {}
    for s in seeds:
        for run, h in runs[s]["histories"].items():
            for key in ("phi_grad_norm", "head_grad_norm"):
                values = [float(v) for v in h.get(key) or []]
                if values and values[0] > 0:
                    ratio = max(values) / values[0] if all(np.isfinite(values)) else float("inf")
                    ratios[f"seed {s} {run} {key}"] = ratio
    if ratios:
        worst = max(ratios, key=ratios.get)
        ok = ratios[worst] <= GRADIENT_RATIO_LIMIT
        numbers["gradient_ratio"] = {"worst": worst, "ratio": ratios[worst], "met": ok}
        lines.append(
            f"- No run's epoch-mean outer gradient norm above {GRADIENT_RATIO_LIMIT:g}× its first epoch's: "
            f"**{'met' if ok else 'not met'}** — the largest ratio is {ratios[worst]:.1f} ({worst})."
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
