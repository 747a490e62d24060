"""GFLOP/s of a 3×3 convolution's three products, and of each gradient computed as a forward
convolution, per block of a ResNet-12 (64-128-256-512) at 32×32 input (and 10×10 maps of 84×84).

The input gradient of a stride-1 ``"same"`` convolution is itself a forward convolution of the
output gradient with the kernel rotated by 180° and its channel axes swapped,

    ∂X = conv(∂Y, rot180(W)ᵀ)        (rot180: taps reversed; ᵀ: Cin ↔ Cout),

and the filter gradient one with batch and channel axes swapped
(`mtl_keras.tensorflow_backend.conv.swapped_filter_gradient`). On some CPUs oneDNN's backward kernels run
far below its forward kernel on small maps (issue 19: on an AVX2-only AMD EPYC the 4×4×512
input gradient took ~4× the forward convolution's time); this probe measures by how much, per
map size, so that `mtl_keras.layers.conv` can choose per instruction set.

    python benchmarks/probes/input_gradient_alternatives.py                 # float32, Markdown table
    python benchmarks/probes/input_gradient_alternatives.py --dtype bfloat16

Medians of ``--repeats`` timed calls after one warm-up call, ``--images`` images (160: a 5-way
1-shot 15-query meta-batch of 2). Also checks that each alternative equals TensorFlow's gradient.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras.hardware import cpu_flags, isa_label  # noqa: E402
from mtl_keras.tensorflow_backend.conv import swapped_filter_gradient, swapped_input_gradient  # noqa: E402

LAYERS = (
    (32, 64, 64),
    (16, 128, 128),
    (8, 256, 256),
    (4, 512, 512),
    (84, 64, 64),
    (42, 128, 128),
    (21, 256, 256),
    (10, 512, 512),
)  # (side, Cin, Cout)


def _time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(side, cin, cout, images, dtype, repeats):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((images, side, side, cin)), dtype)
    k = tf.constant(rng.standard_normal((3, 3, cin, cout)) * 0.05, dtype)
    g = tf.constant(rng.standard_normal((images, side, side, cout)), dtype)
    flops = 2.0 * images * side * side * 9 * cin * cout
    ops = {
        "forward": tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME")),
        "backward-data": tf.function(
            lambda: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=k, out_backprop=g, strides=[1, 1, 1, 1], padding="SAME"
            )
        ),
        "backward-data as forward conv": tf.function(lambda: swapped_input_gradient(g, k)),
        "backward-weights": tf.function(
            lambda: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(k), out_backprop=g, strides=[1, 1, 1, 1], padding="SAME"
            )
        ),
        "backward-weights as forward conv": tf.function(lambda: swapped_filter_gradient(x, g, (3, 3))),
    }
    for native, alternative in (
        ("backward-data", "backward-data as forward conv"),
        ("backward-weights", "backward-weights as forward conv"),
    ):
        a = tf.cast(ops[native](), tf.float32).numpy()
        b = tf.cast(ops[alternative](), tf.float32).numpy()
        error = np.abs(a - b).max() / (np.abs(a).max() + 1e-12)
        if error > (1e-4 if dtype == tf.float32 else 3e-2):
            raise AssertionError(f"{alternative} differs from {native}: relative error {error:.2e}")
    return {name: flops / _time(lambda f=f: f().numpy(), repeats) / 1e9 for name, f in ops.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    dtype = tf.as_dtype(args.dtype)
    print(f"{args.dtype}, {args.images} images, {args.threads} threads, oneDNN on {isa_label(cpu_flags())}")
    rows = [(layer, measure(*layer, args.images, dtype, args.repeats)) for layer in LAYERS]
    names = list(rows[0][1])
    print("| maps, channels | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for (side, cin, cout), rates in rows:
        print(f"| {side}×{side}, {cin}→{cout} | " + " | ".join(f"{rates[n]:.0f}" for n in names) + " |")


if __name__ == "__main__":
    main()
