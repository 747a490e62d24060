"""Speed of the meta-train and evaluation steps, against a faithful PyTorch MTL baseline.

    python benchmarks/benchmark.py            # the default grid (about 20 minutes on 2 EPYC cores)
    python benchmarks/benchmark.py --quick    # a smoke run of seconds (tiny network)
    python benchmarks/benchmark.py --full     # everything: 32/84 px, 1/5-shot, B 2/8, T 20/100, both precisions
    python benchmarks/benchmark.py --accuracy # also: glyph 5-way 1-shot accuracy, float32 vs mixed_bfloat16

Prints a Markdown table and writes ``results.json`` and the generated section of ``RESULTS.md``
(see `benchmarks.harness`): the default, ``--full`` and ``--accuracy`` runs into ``benchmarks/``
(the published results), a ``--quick`` smoke run into ``runs/benchmark-quick/`` (git-ignored), so
that it never overwrites them; ``--out`` always wins. The PyTorch baseline needs the ``bench``
extra (``pip install -e '.[bench]'``); without torch it is skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
if ROOT not in sys.path:  # run by path from a fresh clone: `benchmarks.harness` (and mtl_keras)
    sys.path.insert(0, ROOT)

from benchmarks.harness import default_configs, full_configs, quick_configs, run_suite  # noqa: E402
from benchmarks.harness.report import format_report, isa_table, json_name, write_results  # noqa: E402

PUBLISHED_OUT = os.path.join(ROOT, "benchmarks")
QUICK_OUT = os.path.join(ROOT, "runs", "benchmark-quick")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: tiny ResNet-12, 2 configurations")
    size.add_argument("--full", action="store_true", help="the whole grid (hours on 2 cores)")
    parser.add_argument(
        "--widths", default=None, help="ResNet-12 widths, e.g. 32,64,128,256 (default 64,128,256,512)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed rounds per configuration (default 3; quick 2)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps first (default 1: tracing, graph optimisation, oneDNN primitives)",
    )
    parser.add_argument("--threads", type=int, default=2, help="TF intra-op and torch threads (default 2)")
    parser.add_argument("--inter-threads", type=int, default=None, help="TF inter-op threads (default: TF's)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    size.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="measure nothing: re-evaluate today's targets on a stored report (e.g. benchmarks/results.json) "
        "and rewrite its table in RESULTS.md",
    )
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="also meta-train and evaluate glyphs 5-way 1-shot in float32 and mixed_bfloat16",
    )
    parser.add_argument("--accuracy-episodes", type=int, default=600)
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=("float32", "mixed_bfloat16"),
        default=None,
        help="only these precisions' rows (default both where the CPU has native bf16, else float32: "
        "elsewhere, e.g. on AVX2 or under ONEDNN_MAX_CPU_ISA=AVX2, bf16 is emulated and slow)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder of results.json and RESULTS.md (default benchmarks/; with --quick runs/benchmark-quick/)",
    )
    return parser.parse_args(argv)


def default_out(args: argparse.Namespace) -> str:
    """The folder a run writes into: ``--out``, else a smoke run's own folder, else ``benchmarks/``.

    A ``--quick`` run measures a tiny network; written into ``benchmarks/`` it would replace the
    published results, so by default it goes to ``runs/benchmark-quick/`` (git-ignored).
    """
    if args.out is not None:
        return os.path.abspath(args.out)
    return QUICK_OUT if args.quick else PUBLISHED_OUT


def render(path: str, out: str, command: str) -> dict:
    """Re-evaluate the targets (and each row's "utilisation needed") of the stored report ``path``
    with today's thresholds, note when and how, and rewrite its files; no measurement."""
    import datetime
    import json

    from benchmarks.harness.suite import apply_run_ceilings, check_targets

    with open(path) as f:
        report = json.load(f)
    report["ceilings"] = apply_run_ceilings(report["results"])
    report["targets"] = check_targets(report)
    report["targets_evaluated"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    write_results(report, os.path.join(out, json_name(report)), os.path.join(out, "RESULTS.md"))
    print(format_report(report))
    return report


def main(argv=None, seed: int = 0) -> dict:
    args = parse_args(argv)
    command = "python benchmarks/benchmark.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.render:
        return render(args.render, args.out or os.path.dirname(os.path.abspath(args.render)), command)

    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else None
    if args.quick:
        configs = quick_configs()
    elif args.full:
        configs = full_configs(widths) if widths else full_configs()
    else:
        configs = default_configs(widths) if widths else default_configs()
    if args.precisions:
        configs = [c for c in configs if c.precision in args.precisions]
    from mtl_keras.hardware import cpu_flags, native_bfloat16, onednn_allows_bfloat16, onednn_isa_cap

    if not onednn_allows_bfloat16() and any(c.precision != "float32" for c in configs):
        print(f"ONEDNN_MAX_CPU_ISA={onednn_isa_cap()} allows no bfloat16 (it would abort): float32 rows only")
        configs = [c for c in configs if c.precision == "float32"]
    elif not (args.precisions or args.quick) and cpu_flags() is not None and not native_bfloat16(cpu_flags()):
        print(
            "This CPU has no native bfloat16 (mtl_keras trains mixed_bfloat16 requests in float32 here): "
            "float32 rows only; --precisions mixed_bfloat16 measures the emulated bf16 anyway"
        )
        configs = [c for c in configs if c.precision == "float32"]
    report = run_suite(
        configs,
        rounds=args.rounds or (2 if args.quick else 3),
        warmup=args.warmup if args.warmup is not None else 1,
        baseline=not args.no_baseline,
        threads=args.threads,
        inter_threads=args.inter_threads,
        prestart=args.quick,
        settle=0.05 if args.quick else 0.2,
        ceiling_calls=1 if args.quick else 3,
        torch_ceiling=not args.quick,
    )
    report["command"] = command
    report["seed"] = seed
    if args.accuracy:
        from benchmarks.harness.accuracy import precision_accuracy
        from benchmarks.harness.suite import check_targets

        report["accuracy"] = precision_accuracy(episodes=args.accuracy_episodes, seed=seed)
        report["targets"] = check_targets(report)
    out = default_out(args)
    json_path = os.path.join(out, json_name(report))  # one table per instruction set
    write_results(report, json_path, os.path.join(out, "RESULTS.md"))
    print(format_report(report))
    print(f"Wrote {json_path} and {os.path.join(out, 'RESULTS.md')} (the {isa_table(report)} table)")
    return report


if __name__ == "__main__":
    main()
