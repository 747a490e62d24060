"""Speed of the meta-train and evaluation steps, against a faithful PyTorch MTL baseline.

    python scripts/benchmark.py            # the default grid (about 20 minutes on 2 EPYC cores)
    python scripts/benchmark.py --quick    # a smoke run of seconds (tiny network)
    python scripts/benchmark.py --full     # everything: 32/84 px, 1/5-shot, B 2/8, T 20/100, both precisions
    python scripts/benchmark.py --accuracy # also: glyph 5-way 1-shot accuracy, float32 vs mixed_bfloat16

Prints a Markdown table and writes ``benchmarks/results.json`` and the generated section of
``benchmarks/RESULTS.md`` (see `mtl_keras.benchmarking`). The PyTorch baseline needs the
``bench`` extra (``pip install -e '.[bench]'``); without torch it is skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from mtl_keras.benchmarking import default_configs, full_configs, quick_configs, run_suite
from mtl_keras.benchmarking.report import format_report, write_results

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None, seed: int = 0) -> dict:
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
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="also meta-train and evaluate glyphs 5-way 1-shot in float32 and mixed_bfloat16",
    )
    parser.add_argument("--accuracy-episodes", type=int, default=600)
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "..", "benchmarks"),
        help="folder of results.json and RESULTS.md (default benchmarks/)",
    )
    args = parser.parse_args(argv)

    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else None
    if args.quick:
        configs = quick_configs()
    elif args.full:
        configs = full_configs(widths) if widths else full_configs()
    else:
        configs = default_configs(widths) if widths else default_configs()
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
    report["command"] = "python scripts/benchmark.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report["seed"] = seed
    if args.accuracy:
        from mtl_keras.benchmarking.accuracy import precision_accuracy
        from mtl_keras.benchmarking.suite import check_targets

        report["accuracy"] = precision_accuracy(episodes=args.accuracy_episodes, seed=seed)
        report["targets"] = check_targets(report)
    out = os.path.abspath(args.out)
    write_results(report, os.path.join(out, "results.json"), os.path.join(out, "RESULTS.md"))
    print(format_report(report))
    print(f"Wrote {os.path.join(out, 'results.json')} and {os.path.join(out, 'RESULTS.md')}")
    return report


if __name__ == "__main__":
    main()
