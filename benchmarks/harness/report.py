"""Render a `run_suite` report: the Markdown table, targets, cost scaling; write JSON and RESULTS.md."""

from __future__ import annotations

import json
import os
import statistics

BEGIN = "<!-- benchmark:begin (written by benchmarks/benchmark.py; edit outside these markers) -->"
END = "<!-- benchmark:end -->"
#: One table per instruction set (issue 19): the AVX-512 table between `BEGIN`/`END` (and
#: ``results.json``), the AVX2 and AMX-BF16 ones between these (and ``results-<isa>.json``).
ISA_MARKERS = {
    "avx512": (BEGIN, END),
    "avx2": (
        "<!-- benchmark:begin isa=avx2 (written by benchmarks/benchmark.py; edit outside these markers) -->",
        "<!-- benchmark:end isa=avx2 -->",
    ),
    "amx": (
        "<!-- benchmark:begin isa=amx (written by benchmarks/benchmark.py; edit outside these markers) -->",
        "<!-- benchmark:end isa=amx -->",
    ),
}


def isa_table(report: dict) -> str:
    """Which table a report belongs to: ``"avx2"``, ``"avx512"`` or ``"amx"`` (reports before
    2026-12-02: AVX-512)."""
    return report.get("machine", {}).get("isa_table", "avx512")


def json_name(report: dict) -> str:
    """``results.json`` for the AVX-512 table, ``results-avx2.json`` / ``results-amx.json`` for the others."""
    return "results.json" if isa_table(report) == "avx512" else f"results-{isa_table(report)}.json"


def _fmt(value, digits=2, suffix=""):
    if value is None:
        return "–"
    return f"{value:.{digits}f}{suffix}"


def format_table(report: dict) -> str:
    """One row per configuration: throughput of both sides, ratio, FLOPs, utilisation, memory."""
    lines = [
        "| mode | image | shots | B | T | precision | mtl_keras /s | baseline /s | ratio | ratio, best rounds "
        "| GFLOP/step | GFLOP/s | utilisation (ceiling) | peak RSS MiB mtl_keras / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        c, k, b = row["config"], row["mtl_keras"], row.get("baseline")
        unit = "tasks_per_s" if c["mode"] == "train" else "episodes_per_s"
        widths = "" if tuple(c["widths"]) == (64, 128, 256, 512) else f" ({'-'.join(map(str, c['widths']))})"
        lines.append(
            f"| {c['mode']} | {c['image_size']}×{c['image_size']}{widths} | {c['shots']} | {c['meta_batch']} "
            f"| {c['inner_steps']} | {c['precision']}{' +XLA' if c.get('jit_compile') else ''} "
            f"| {_fmt(k[unit], 3)} | {_fmt(b[unit] if b else None, 3)} | {_fmt(row.get('ratio'), 2, '×')} "
            f"| {_fmt(row.get('best_ratio'), 2, '×')} | {k['gflop_per_step']:.0f} | {k['gflop_per_s']:.0f} "
            f"| {100 * k['utilisation']:.0f}% ({row['ceiling_used_gflop_per_s']:.0f}) "
            f"| {_fmt(k.get('max_rss_mb'), 0)} / {_fmt(b.get('max_rss_mb') if b else None, 0)} |"
        )
    return "\n".join(lines)


def format_ceilings(report: dict) -> str:
    names = sorted({n for row in report["results"] for n in row["ceiling_samples_gflop_per_s"]})
    best = report.get("ceilings", {}).get("best_per_op_gflop_per_s", {})
    lines = [
        "| op | fastest round of the run (the ceiling) | median over rounds (min–max) |",
        "|---|---|---|",
    ]
    for name in names:
        vals = [v for row in report["results"] for v in row["ceiling_samples_gflop_per_s"].get(name, [])]
        lines.append(
            f"| {name.replace('_', ' ')} | {best.get(name, max(vals)):.0f} "
            f"| {statistics.median(vals):.0f} ({min(vals):.0f}–{max(vals):.0f}) |"
        )
    return "\n".join(lines)


def format_targets(report: dict) -> str:
    lines = ["| target | met | measured |", "|---|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        values = "; ".join(f"{k}: {v:.3g}" for k, v in t["values"].items()) or "–"
        lines.append(f"| {t['target']} | {met} | {values} |")
    return "\n".join(lines)


def format_feasibility(report: dict) -> str:
    """Per train row: the utilisation the ratio target needs beside the utilisation reached."""
    lines = ["| configuration | target | utilisation needed | reached |", "|---|---|---|---|"]
    for row in report["results"]:
        needed = row.get("utilisation_needed_for_target")
        if needed is None:
            continue
        from benchmarks.harness.suite import RATIO_TARGETS

        target = f"≥ {RATIO_TARGETS[row['config']['precision']]}×"
        flag = " (above the ceiling)" if needed > 1.0 else ""
        lines.append(
            f"| {row['label']} | {target} | {100 * needed:.0f}%{flag} | {100 * row['mtl_keras']['utilisation']:.0f}% |"
        )
    return "\n".join(lines)


def format_paired(report: dict) -> str:
    lines = [
        "| factor | from → to | at | step time × | tasks/s × | rounds |",
        "|---|---|---|---|---|---|",
    ]
    for p in report.get("paired") or []:
        lines.append(
            f"| {p['factor']} | {p['from']} → {p['to']} | {p['at']} | {p['step_time_ratio']:.3f} "
            f"| {p['tasks_per_s_ratio']:.3f} | {len(p['step_seconds']['from'])} |"
        )
    return "\n".join(lines)


def format_scaling(report: dict) -> str:
    lines = ["| factor | from → to | at | step time × | FLOPs × |", "|---|---|---|---|---|"]
    for s in report["scaling"]:
        lines.append(
            f"| {s['factor']} | {s['from']} → {s['to']} | {s['at']} | {s['step_time_ratio']:.2f} "
            f"| {s['flop_ratio']:.2f} |"
        )
    return "\n".join(lines)


def format_machine(report: dict) -> str:
    m = report["machine"]
    amx = f", AMX-BF16: {m['amx_bf16']}" if "amx_bf16" in m else ""
    return "\n".join(
        [
            f"- date: {m['date']}; command: `{report.get('command', '?')}`",
            f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical cores (AVX-512F: {m['avx512f']}, "
            f"AVX512-BF16: {m['avx512_bf16']}{amx}); oneDNN runs on: **{m.get('isa', 'not recorded')}**; load average at start {m['load_average_start'][0]:.2f}, "
            f"at end {m['load_average_end'][0]:.2f} (other jobs share this machine)",
            f"- TensorFlow {m['tensorflow']}, Keras {m['keras']}, PyTorch {m['torch'] or 'not installed'}, "
            f"NumPy {m['numpy']}, Python {m['python']}",
            f"- threads: TensorFlow intra-op {m.get('tensorflow_intra_threads')}, inter-op "
            f"{m.get('tensorflow_inter_threads') or 'TF default (0: one per core)'}; PyTorch {m['threads']}",
            f"- {m['rounds']} timed rounds per configuration after {m['warmup']} warm-up steps; "
            f"wall time of the run {m['wall_seconds'] / 60:.1f} min",
        ]
        + (
            [
                f"- targets re-evaluated on the stored measurements at today's thresholds: "
                f"{report['targets_evaluated']['date']}, `{report['targets_evaluated']['command']}`"
            ]
            if "targets_evaluated" in report
            else []
        )
    )


def format_report(report: dict) -> str:
    """The whole Markdown section (machine, table, ceilings, targets, scaling)."""
    parts = [
        "### Machine and run",
        format_machine(report),
        "### Throughput",
        format_table(report),
        "Columns: tasks/s (train) or episodes/s (eval) as medians of the timed rounds; *ratio* ="
        " mtl_keras / baseline from the medians, *ratio, best rounds* from each side's fastest round;"
        " GFLOP/step and GFLOP/s are mtl_keras' (analytic count of convolution and inner-loop FLOPs,"
        " forward and backward: `benchmarks/harness/flops.py`); utilisation = its GFLOP/s over the"
        " ceiling of the precision's dtype (in parentheses, GFLOP/s): the fastest matmul or 3×3 conv"
        " round of this run; peak RSS = `ru_maxrss` of each worker process.",
        "### Ceilings measured in the same rounds",
        format_ceilings(report),
        "### Targets",
        format_targets(report),
        "What each ratio target asks of mtl_keras: the share of the run's ceiling its step must reach,"
        " given the FLOPs it does (exact second order back-propagates support and query images; the"
        " first-order baseline only the queries) and the baseline's measured speed"
        " (`suite.needed_utilisation`).",
        format_feasibility(report),
        "### How the cost grows",
        format_scaling(report),
    ]
    if report.get("paired"):
        parts += [
            "### Paired, interleaved",
            "The inner-steps and meta-batch targets compare two configurations; the rows above ran"
            " minutes apart, under whatever load the machine had then. Here both workers were alive"
            " and their steps alternated round by round; medians of the per-round ratios (these are"
            " what the targets use).",
            format_paired(report),
        ]
    if "accuracy" in report:
        acc = report["accuracy"]
        parts += [
            "### mixed_bfloat16 accuracy",
            "\n".join(
                f"- {p}: {100 * acc[p]['mean']:.2f} ± {100 * acc[p]['ci95']:.2f}% ({acc[p]['episodes']} episodes)"
                for p in ("float32", "mixed_bfloat16")
                if p in acc
            ),
        ]
    return "\n\n".join(parts) + "\n"


def write_results(report: dict, json_path: str | None, markdown_path: str | None) -> None:
    """Write the JSON report and put the Markdown section into ``markdown_path`` between markers.

    Text outside the markers (a hand-written header, say) is kept; a new file gets a title.
    """
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    if markdown_path:
        os.makedirs(os.path.dirname(os.path.abspath(markdown_path)), exist_ok=True)
        begin, end = ISA_MARKERS[isa_table(report)]
        section = f"{begin}\n{format_report(report)}{end}\n"
        text = "# mtl_keras performance\n\n" + section
        if os.path.exists(markdown_path):
            with open(markdown_path) as f:
                old = f.read()
            if begin in old and end in old:
                text = old[: old.index(begin)] + section + old[old.index(end) + len(end) + 1 :]
            else:
                text = old.rstrip("\n") + "\n\n" + section
        with open(markdown_path, "w") as f:
            f.write(text)
