"""`mtl-keras` command line. Subcommands call the package; no logic lives here."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _demo(args) -> int:
    from mtl_keras.config import get_config
    from mtl_keras.experiment import run_experiment

    overrides = {}
    if args.test_episodes is not None:
        overrides["test_episodes"] = args.test_episodes
    config = get_config(args.config, **overrides)
    run_dir = args.run_dir or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    run_experiment(config, run_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl-keras", description="Meta-transfer learning for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="pretrain, meta-train and evaluate on the embedded glyph dataset",
        description="Pretrain → MTL → evaluate 5-way 1/5-shot on glyphs; writes a run folder.",
    )
    demo.add_argument("--config", default="cpu-glyphs", help="preset name or JSON file (default: cpu-glyphs)")
    demo.add_argument("--run-dir", default=None, help="output folder (default: runs/demo-<time>)")
    demo.add_argument("--test-episodes", type=int, default=None, help="override the number of test episodes")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"mtl-keras {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
