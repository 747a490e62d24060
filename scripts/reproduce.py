"""Reproduce the MTL ablation (scratch, pretrained, FT, SS, SS + HT) on one benchmark.

A thin runner: the logic is `mtl_keras_app.ablation`; the options are those of
``mtl-keras reproduce`` (see ``--help``).

    python scripts/reproduce.py --out runs/reproduce-glyphs          # full glyph run, ≈ 1 hour on 2 CPU cores
    python scripts/reproduce.py --quick --out runs/reproduce-quick   # ≤ 5 minutes
    python scripts/reproduce.py --config paper-mini_imagenet --benchmark mini_imagenet \\
        --root DATA/mini_imagenet --out runs/reproduce-mini
"""

from __future__ import annotations

import sys

from mtl_keras_app import cli


def main(argv: list[str] | None = None, seed: int = 0) -> int:
    """Run ``mtl-keras reproduce`` with ``argv`` (default: the command line); ``seed`` unless ``--seed`` is given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--seed" not in argv:
        argv += ["--seed", str(seed)]
    return cli.main(["reproduce", *argv])


if __name__ == "__main__":
    sys.exit(main())
