"""More ways to compute a bfloat16 filter gradient, against TensorFlow's kernel (none wins on 16×16/32×32).

`benchmarks/probes/conv_kernel_benchmark.py` compares TF's backward-weights kernel with im2col (via
``extract_patches``), nine shifted matmuls and the swapped forward convolution. This script
measures the formulations tried after it, for the 3×3 convolutions of ResNet-12 at 32×32 input
and ``--images`` images (200 = a 5-way 5-shot 15-query meta-batch of 2), GFLOP/s, medians of 5:

* ``native``: ``Conv2DBackpropFilter`` (NHWC), what TF's autodiff runs;
* ``native, 4 slices``: the same on four equal slices of the batch, summed in float32;
* ``native NCHW``: the kernel on NCHW tensors (transposes included);
* ``swapped``: `mtl_keras.tensorflow_backend.conv.swapped_filter_gradient` (what mtl_keras runs on ≤ 10×10);
* ``swapped, 8×8 tiles``: the map cut into 8×8 tiles (with a 1-pixel halo) stacked on the
  batch axis, then swapped — the small-map speed of the swap on large maps;
* ``im2col, one matmul``: the 9 shifted copies concatenated on channels, one ``matmul``.

    python benchmarks/probes/filter_gradient_alternatives.py
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from conv_kernel_benchmark import _median_seconds  # noqa: E402

from mtl_keras.tensorflow_backend.conv import swapped_filter_gradient  # noqa: E402

LAYERS = ((32, 64, 64), (16, 128, 128), (8, 256, 256), (4, 512, 512))  # (side, Cin, Cout)


def native(x, g, data_format="NHWC"):
    cin, cout = x.shape[-1], g.shape[-1]
    if data_format == "NCHW":
        x, g = tf.transpose(x, [0, 3, 1, 2]), tf.transpose(g, [0, 3, 1, 2])
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=[3, 3, cin, cout], out_backprop=g, strides=[1, 1, 1, 1], padding="SAME",
        data_format=data_format,
    )  # fmt: skip


def sliced(x, g, slices=4):
    size = -(-x.shape[0] // slices)
    parts = [
        tf.cast(native(x[i : i + size], g[i : i + size]), tf.float32) for i in range(0, x.shape[0], size)
    ]
    return tf.cast(tf.add_n(parts), x.dtype)


def tiled_swapped(x, g, tile=8):
    n, h, w, c = x.shape
    d = g.shape[-1]
    if h <= tile:
        return swapped_filter_gradient(x, g, (3, 3))
    th, tw = h // tile, w // tile
    rows = np.array([t * tile + r for t in range(th) for r in range(tile + 2)])
    xt = tf.transpose(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), [3, 1, 2, 0])  # (C, H+2, W+2, N)
    xt = tf.gather(tf.gather(xt, rows, axis=1), rows, axis=2)
    xt = tf.reshape(tf.transpose(tf.reshape(xt, (c, th, tile + 2, tw, tile + 2, n)), [0, 2, 4, 1, 3, 5]),
                    (c, tile + 2, tile + 2, th * tw * n))  # fmt: skip
    gt = tf.reshape(tf.transpose(tf.reshape(g, (n, th, tile, tw, tile, d)), [2, 4, 1, 3, 0, 5]),
                    (tile, tile, th * tw * n, d))  # fmt: skip
    return tf.transpose(tf.nn.conv2d(xt, gt, 1, "VALID"), [1, 2, 0, 3])


def im2col_matmul(x, g):
    _, h, w, c = x.shape
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    cols = tf.concat([padded[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=-1)
    product = tf.matmul(tf.reshape(cols, (-1, 9 * c)), tf.reshape(g, (-1, g.shape[-1])), transpose_a=True)
    return tf.reshape(product, (3, 3, c, g.shape[-1]))


VARIANTS = {
    "native": native,
    "native, 4 slices": sliced,
    "native NCHW": lambda x, g: native(x, g, "NCHW"),
    "swapped": lambda x, g: swapped_filter_gradient(x, g, (3, 3)),
    "swapped, 8×8 tiles": tiled_swapped,
    "im2col, one matmul": im2col_matmul,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    n = args.images
    print("| maps, channels | forward | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for side, cin, cout in LAYERS:
        flops = 2 * n * side * side * cin * cout * 9
        x = tf.cast(tf.random.normal((n, side, side, cin)), tf.bfloat16)
        g = tf.cast(tf.random.normal((n, side, side, cout)), tf.bfloat16)
        k = tf.cast(tf.random.normal((3, 3, cin, cout)), tf.bfloat16)
        reference = tf.cast(native(x, g), tf.float32)
        cells = [
            f"{flops / _median_seconds(tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, 'SAME')), (x, k), 5) / 1e9:.0f}"
        ]
        for fn in VARIANTS.values():
            f = tf.function(fn)
            error = tf.reduce_max(tf.abs(tf.cast(f(x, g), tf.float32) - reference)) / tf.reduce_max(
                tf.abs(reference)
            )
            assert float(error) < 0.02, f"{fn} computes something else (relative error {float(error):.3g})"
            cells.append(f"{flops / _median_seconds(f, (x, g), 5) / 1e9:.0f}")
        print(f"| {side}×{side}, {cin}→{cout} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nbfloat16 GFLOP/s, medians of 5; {n} images; load average {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
    main()
