"""Interleaved A/B timing of whole meta-training steps that differ in one implementation choice.

Every variant is built in this one process (same data, same threads) and the rounds alternate
between them, so that machine load falls on all alike; prints medians and minima.

    python benchmarks/probes/step_ab.py --precision mixed_bfloat16 --meta-batch 2 --shots 1 \\
        --variant filter_gradient=native --variant filter_gradient=auto
    python benchmarks/probes/step_ab.py --image-size 84 --variant swapped_max_pixels=64 --variant swapped_max_pixels=100

A variant is ``key=value[,key=value]`` over the benchmark worker's spec
(`benchmarks.harness.keras_worker.build_steps`): ``filter_gradient`` (auto | native |
swapped, `mtl_keras.tensorflow_backend.gradient_plan.set_filter_gradient`), ``gradient_isa`` (AVX2 | AVX-512 | AMX-BF16: that
instruction set's plan of `mtl_keras.tensorflow_backend.gradient_plan.FORWARD_GRADIENT_MAX_PIXELS` instead of this
CPU's), ``swapped_max_pixels`` / ``input_max_pixels`` (the largest map, H·W, whose filter /
input gradient the ``auto`` mode computes as a forward convolution, for every dtype, in the
plan in use; ``none``: any size, 0: never), ``matmul_max_pixels`` (likewise for the filter
gradient as nine shifted matmuls, which takes precedence), ``jit_compile`` (true | false), ``unroll_training``
(true | false: the training inner loop unrolled or a ``tf.while_loop``), ``fold_batch_norm``
(true | false: frozen batch norm folded into the convolutions or run as it is). Give a knob in
every variant that changes it: limits set by one variant stay for the next.

    python benchmarks/probes/step_ab.py --precision float32 --variant gradient_isa=AVX-512 \
        --variant gradient_isa=AVX2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
if ROOT not in sys.path:  # run by path: `benchmarks.harness` (and mtl_keras) from the repository
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.harness.keras_worker import add_step_arguments, build_steps, train_spec  # noqa: E402


def _parse_variant(text: str) -> dict:
    spec = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not value:
            raise SystemExit(f"--variant {text!r}: expected key=value[,key=value].")
        spec[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value.strip())
    return spec


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--variant", action="append", required=True, help="key=value[,key=value]; repeat")
    args = parser.parse_args(argv)

    base = train_spec(args)
    steps = {}
    for text in args.variant:
        steps[text] = build_steps({**base, **_parse_variant(text)})[0]["step"]
        steps[text]()  # trace and warm up
        steps[text]()
    times = {text: [] for text in steps}
    for _ in range(args.rounds):
        for text, step in steps.items():
            start = time.perf_counter()
            step()
            times[text].append(time.perf_counter() - start)
    print(
        f"{args.precision}, {args.image_size}×{args.image_size}, 5-way {args.shots}-shot, "
        f"meta-batch {args.meta_batch}, {args.rounds} interleaved rounds, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    reference = float(np.median(times[args.variant[0]]))
    for text, ts in times.items():
        median = float(np.median(ts))
        print(f"  {text:48s} median {median:.3f} s  min {min(ts):.3f} s  ({median / reference - 1:+.1%})")


if __name__ == "__main__":
    main()
