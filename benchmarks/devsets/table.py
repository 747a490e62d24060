"""One table of MTL against its baselines on every development set, from `mtl-keras reproduce` runs.

Each set is run by ``mtl-keras reproduce --seeds 0 1 2`` into ``OUT/<set>`` (see ``run.sh``); this
script reads their ``seeds.json`` and ``seed-<s>/results.json`` and writes ``OUT/RESULTS.md``: per
set, shot setting and seed the test accuracy of every row, the paired differences of SS (MTL)
against the pretrained row and SimpleShot CL2N, the largest outer-gradient ratio of the seed's
runs, and the targets `mtl_keras_app.ablation.seeds_report` checked. Example::

    python benchmarks/devsets/table.py --out benchmarks/devsets/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

ROWS = (
    ("pretrained", "pretrained + inner loop"),
    ("simpleshot_l2n", "SimpleShot L2N"),
    ("simpleshot", "SimpleShot CL2N"),
    ("ft", "FT"),
    ("ss", "MTL (SS)"),
)


def _ci(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(len(values)))


def _max_ratio(histories: dict, prefix: str) -> float:
    ratios = []
    for name, h in histories.items():
        if not name.startswith(prefix):
            continue
        for key in ("phi_grad_norm", "head_grad_norm"):
            values = [float(v) for v in h.get(key) or []]
            if values and values[0] > 0:
                ratios.append(max(values) / values[0] if np.all(np.isfinite(values)) else float("inf"))
    return max(ratios) if ratios else float("nan")


def read_seeds(folder: str) -> tuple[dict, list, dict]:
    """``(seeds.json, its seeds, {seed: seed-<s>/results.json})`` of one set's reproduce folder."""
    with open(os.path.join(folder, "seeds.json")) as f:
        combined = json.load(f)
    seeds = combined["seeds"]
    runs = {}
    for s in seeds:
        with open(os.path.join(folder, f"seed-{s}", "results.json")) as f:
            runs[s] = json.load(f)
    return combined, seeds, runs


def summary_rows(name: str, folder: str) -> list[str]:
    """One line per shot setting of a set: pooled rows and paired differences, seeds' spread."""
    combined, seeds, runs = read_seeds(folder)
    ways = str(runs[seeds[0]]["settings"]["config"]["ways"])
    lines = []
    for setting in (k for k in runs[seeds[0]]["results"] if k.split("-way")[0] == ways):
        res = {s: runs[s]["results"][setting] for s in seeds}
        present = [r for r in ("simpleshot_l2n", "simpleshot") if r in res[seeds[0]]]
        better = max(present, key=lambda r: np.mean([res[s][r]["mean"] for s in seeds]))

        def pooled(row, res=res):
            if not all(row in res[s] for s in seeds):
                return "–"
            m, c = _ci(np.mean([res[s][row]["episode_accuracies"] for s in seeds], axis=0))
            return f"{100 * m:.2f} ± {100 * c:.2f}"

        def paired(base, res=res):
            diffs = [
                np.asarray(res[s]["ss"]["episode_accuracies"])
                - np.asarray(res[s][base]["episode_accuracies"])
                for s in seeds
            ]
            m, c = _ci(np.mean(diffs, axis=0))
            per = ", ".join(f"{100 * _ci(d)[0]:+.1f}" for d in diffs)
            return f"{100 * m:+.2f} ± {100 * c:.2f} ({per})"

        shots = setting.split(" ")[1].split("-")[0]
        ratio = max(_max_ratio(runs[s]["histories"], f"SS {shots}-shot") for s in seeds)
        label = "L2N" if better == "simpleshot_l2n" else "CL2N"
        lines.append(
            f"| {name} | {setting.split(' ', 1)[1]} | {pooled('pretrained')} | {pooled(better)} ({label}) | "
            f"{pooled('ft')} | {pooled('ss')} | {paired('pretrained')} | {paired(better)} | {ratio:.1f} |"
        )
    return lines


SUMMARY_HEADER = [
    "| set | shots | pretrained + inner loop | SimpleShot (the better) | FT | MTL (SS) | MTL − pretrained "
    "(per seed) | MTL − SimpleShot (per seed) | max grad ratio |",
    "|---|---|---|---|---|---|---|---|---|",
]


def set_section(name: str, folder: str) -> list[str]:
    combined, seeds, runs = read_seeds(folder)
    first = runs[seeds[0]]
    splits = first["splits"]
    lines = [
        f"### {name}",
        "",
        f"Classes train / val / test: {splits['train']['classes']} / {splits['val']['classes']} / "
        f"{splits['test']['classes']} ({splits['train']['images']} / {splits['val']['images']} / "
        f"{splits['test']['images']} images). Command: `{combined['command']}`.",
        "",
    ]
    settings = [k for k in first["results"] if k.split("-way")[0] == str(first["settings"]["config"]["ways"])]
    header = "| setting | seed | " + " | ".join(label for _, label in ROWS)
    header += " | MTL − pretrained | MTL − SimpleShot | max grad ratio (SS) | kept epoch (SS) |"
    lines += [header, "|---|---|" + "---|" * (len(ROWS) + 4)]
    for setting in settings:
        shots = setting.split(" ")[1].split("-")[0]
        per_seed_diffs = {"pretrained": [], "simpleshot": []}
        # SimpleShot: the better of L2N and CL2N over the seeds (as SEEDS.md's targets pick it).
        present = [r for r in ("simpleshot_l2n", "simpleshot") if r in runs[seeds[0]]["results"][setting]]
        better = max(present, key=lambda r: np.mean([runs[s]["results"][setting][r]["mean"] for s in seeds]))
        for s in seeds:
            res = runs[s]["results"][setting]
            cells = []
            for row, _ in ROWS:
                r = res.get(row)
                cells.append(f"{100 * r['mean']:.2f} ± {100 * r['ci95']:.2f}" if r else "–")
            diffs = []
            for key, base in (("pretrained", "pretrained"), ("simpleshot", better)):
                if "ss" in res and base in res:
                    d = np.asarray(res["ss"]["episode_accuracies"]) - np.asarray(
                        res[base]["episode_accuracies"]
                    )
                    per_seed_diffs[key].append(d)
                    m, c = _ci(d)
                    diffs.append(f"{100 * m:+.2f} ± {100 * c:.2f}")
                else:
                    diffs.append("–")
            history = runs[s]["histories"].get(f"SS {shots}-shot", {})
            ratio = _max_ratio(runs[s]["histories"], f"SS {shots}-shot")
            lines.append(
                f"| {setting} | {s} | " + " | ".join(cells) + f" | {diffs[0]} | {diffs[1]} | {ratio:.1f} | "
                f"{history.get('best_epoch', '–')} |"
            )
        pooled = []
        for base in ("pretrained", "simpleshot"):
            if per_seed_diffs[base]:
                m, c = _ci(np.mean(per_seed_diffs[base], axis=0))
                pooled.append(f"{100 * m:+.2f} ± {100 * c:.2f}")
            else:
                pooled.append("–")
        pooled_rows = []
        for row, _ in ROWS:
            values = [runs[s]["results"][setting].get(row) for s in seeds]
            if all(v is not None for v in values):
                m, c = _ci(np.mean([v["episode_accuracies"] for v in values], axis=0))
                pooled_rows.append(f"{100 * m:.2f} ± {100 * c:.2f}")
            else:
                pooled_rows.append("–")
        lines.append(
            f"| {setting} | pooled | " + " | ".join(pooled_rows) + f" | {pooled[0]} | {pooled[1]} | | |"
        )
    targets = combined.get("summary", {})
    met = []
    for setting in settings:
        for what, t in (targets.get(setting, {}).get("targets") or {}).items():
            met.append(
                f"- {setting}: {what}: **{'met' if t['met'] else 'not met'}** (pooled {100 * t['pooled'][0]:+.2f})"
            )
    grad = targets.get("gradient_ratio")
    if grad:
        met.append(
            f"- outer gradient norm ≤ 100× the first epoch's in every run: **{'met' if grad['met'] else 'not met'}** "
            f"(largest {grad['ratio']:.1f}, {grad['worst']})"
        )
    lines += ["", *met, ""]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "devsets", "results"))
    parser.add_argument("--sets", nargs="+", default=["glyph_scenes", "clipart", "crawl_tiles", "cards"])
    parser.add_argument(
        "--readme", default=None, help="also put the pooled table between this file's markers"
    )
    args = parser.parse_args(argv)
    lines = [
        "# MTL against its baselines on the development sets",
        "",
        "Written by `python benchmarks/devsets/table.py` from the `mtl-keras reproduce` runs in this folder "
        "(commands below). Test accuracy (%) on 600 5-way test episodes per setting, the same episodes for "
        "every row and seed of a set; ± is the 95% CI over episodes; paired differences are the mean ± 95% CI "
        "of the per-episode difference; MTL − SimpleShot pairs MTL with the better of SimpleShot L2N and CL2N "
        "(by its mean over the seeds) in each setting. Everything chosen (kept epochs, the FT rate, the recipe) was chosen "
        "on validation splits. max grad ratio: the largest epoch-mean outer gradient norm (Φ or head) of the "
        "seed's SS run over its first epoch's.",
        "",
    ]
    done = [n for n in args.sets if os.path.exists(os.path.join(args.out, n, "seeds.json"))]
    missing = [n for n in args.sets if n not in done]
    summary = list(SUMMARY_HEADER)
    for name in done:
        summary += summary_rows(name, os.path.join(args.out, name))
    if missing:
        summary += ["", f"Not run: {', '.join(missing)}."]
    lines += ["## Pooled over the seeds", "", *summary, "", "## Per seed", ""]
    for name in done:
        lines += set_section(name, os.path.join(args.out, name))
    path = os.path.join(args.out, "RESULTS.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(path)
    if args.readme:
        start, end = "<!-- devsets-table:start -->", "<!-- devsets-table:end -->"
        with open(args.readme) as f:
            text = f.read()
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        with open(args.readme, "w") as f:
            f.write(f"{head}{start}\n" + "\n".join(summary) + f"\n{end}{tail}")
        print(f"{args.readme}: the pooled table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
