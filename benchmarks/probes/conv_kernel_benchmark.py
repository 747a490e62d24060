"""GFLOP/s of the three convolution products of a training step, float32 and bfloat16.

For the 3×3 convolutions of a ResNet-12 (64-128-256-512) at 32×32 input (and its last block
at 84×84 input, 10×10 maps), 160 images (a 5-way 1-shot 15-query meta-batch of 2): forward,
backward-data (gradient of the input), backward-weights (gradient of the kernel, which the
scaling Φ1 needs), and three alternative ways to compute the backward-weights product
(im2col + one matmul; nine shifted matmuls, `mtl_keras.tensorflow_backend.conv.shifted_matmul_filter_gradient`,
which `mtl_keras` uses for bfloat16 maps of at most 10×10 on AMX CPUs; one forward convolution
with batch and channel axes swapped, `mtl_keras.tensorflow_backend.conv.swapped_filter_gradient`, which
`mtl_keras` uses for bfloat16 maps of at most 10×10 on other AVX-512 CPUs). Medians of ``--repeats`` timed calls after one warm-up call.

    python benchmarks/probes/conv_kernel_benchmark.py             # prints a Markdown table
    python benchmarks/probes/conv_kernel_benchmark.py --threads 1

Used in benchmarks/RESULTS.md ("Why bf16 stops at ≈ 2×").
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras.tensorflow_backend.conv import shifted_matmul_filter_gradient, swapped_filter_gradient  # noqa: E402

LAYERS = ((32, 64, 64), (16, 128, 128), (8, 256, 256), (4, 512, 512), (10, 512, 512))  # (side, Cin, Cout)


def _median_seconds(fn, args, repeats: int) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _variants(n: int, side: int, cin: int, cout: int):
    strides = [1, 1, 1, 1]

    def forward(x, w, g):
        return tf.nn.conv2d(x, w, 1, "SAME")

    def backward_data(x, w, g):
        return tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[n, side, side, cin], filter=w, out_backprop=g, strides=strides, padding="SAME"
        )

    def backward_weights(x, w, g):
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=[3, 3, cin, cout], out_backprop=g, strides=strides, padding="SAME"
        )

    def im2col(x, w, g):
        patches = tf.image.extract_patches(x, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
        product = tf.matmul(tf.reshape(patches, (-1, 9 * cin)), tf.reshape(g, (-1, cout)), transpose_a=True)
        return tf.reshape(product, (3, 3, cin, cout))

    def shifted(x, w, g):  # what mtl_keras runs on AMX CPUs' small bf16 maps
        return shifted_matmul_filter_gradient(x, g, (3, 3))

    def swapped(x, w, g):
        return swapped_filter_gradient(x, g, (3, 3))

    return {
        "forward": forward,
        "backward-data": backward_data,
        "backward-weights": backward_weights,
        "backward-weights, im2col": im2col,
        "backward-weights, 9 shifted matmuls": shifted,
        "backward-weights, swapped forward conv": swapped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    n = args.images
    header = None
    for dtype in (tf.float32, tf.bfloat16):
        for side, cin, cout in LAYERS:
            flops = 2 * n * side * side * cin * cout * 9
            x = tf.cast(tf.random.normal((n, side, side, cin)), dtype)
            w = tf.cast(tf.random.normal((3, 3, cin, cout)), dtype)
            g = tf.cast(tf.random.normal((n, side, side, cout)), dtype)
            variants = _variants(n, side, cin, cout)
            if header is None:
                header = list(variants)
                print("| dtype | maps, channels | " + " | ".join(header) + " |")
                print("|---|---|" + "---|" * len(header))
            rates = [
                flops / _median_seconds(tf.function(fn), (x, w, g), args.repeats) / 1e9
                for fn in variants.values()
            ]
            cells = " | ".join(f"{r:.0f}" for r in rates)
            print(f"| {dtype.name} | {side}×{side}, {cin}→{cout} | {cells} |", flush=True)
    print(
        f"\nGFLOP/s, medians of {args.repeats}; {n} images; {args.threads} intra-op threads; "
        f"load average {os.getloadavg()[0]:.2f}."
    )


if __name__ == "__main__":
    main()
