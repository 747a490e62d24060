"""Winograd F(2×2, 3×3) convolution from TensorFlow ops vs TensorFlow's own convolution.

Winograd's algorithm does a 3×3 convolution with 2.25× fewer multiplications: 16 batched
matmuls between input tiles and filters transformed by small constant matrices. oneDNN fuses
the transforms into its kernel; built from TF ops they are separate memory-bound passes over
4× the input. This times the forward pass for ResNet-12's four map sizes (5-shot meta-batch 2:
200 images) in float32 and bfloat16, with and without XLA fusing the transforms, and prints
the speed-up over ``tf.nn.conv2d`` and the relative error. (Recorded in benchmarks/RESULTS.md
as tried and not kept.)

    python benchmarks/probes/winograd_probe.py [--images 200] [--rounds 7] [--xla]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from conv_kernel_benchmark import _median_seconds  # noqa: E402  (benchmarks/probes/ is on sys.path)

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def winograd_conv(x, w):
    """``tf.nn.conv2d(x, w, 1, "SAME")`` for 3×3 ``w`` and even H, W, by Winograd F(2×2, 3×3)."""
    n, h, wd, c = x.shape
    cout = w.shape[-1]
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    tiles = tf.stack([xp[:, a : a + h : 2, b : b + wd : 2, :] for a in range(4) for b in range(4)])
    v = tf.matmul(tf.constant(np.kron(B_T, B_T), x.dtype), tf.reshape(tiles, [16, -1]))
    v = tf.reshape(v, [16, -1, c])  # (16, tiles, Cin)
    g = tf.constant(G, w.dtype)
    u = tf.reshape(tf.einsum("ua,abcd,vb->uvcd", g, w, g), [16, c, cout])
    m = tf.reshape(tf.matmul(v, u), [16, -1])  # (16, tiles · Cout)
    y = tf.matmul(tf.constant(np.kron(A_T, A_T), x.dtype), m)  # (4, tiles · Cout)
    y = tf.transpose(tf.reshape(y, [4, -1, cout]), [1, 0, 2])
    return tf.nn.depth_to_space(tf.reshape(y, [n, h // 2, wd // 2, 4 * cout]), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--xla", action="store_true", help="compile the Winograd version with XLA")
    args = parser.parse_args()
    native = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    winograd = tf.function(winograd_conv, jit_compile=args.xla)
    print(
        f"| dtype | map | Cin→Cout | tf.nn.conv2d | Winograd{' (XLA)' if args.xla else ''} | speed-up | rel. error |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype in (tf.float32, tf.bfloat16):
        for side, c in ((32, 64), (16, 128), (8, 256), (4, 512)):
            x = tf.cast(tf.random.normal([args.images, side, side, c], seed=1), dtype)
            w = tf.cast(tf.random.normal([3, 3, c, c], seed=2) * 0.05, dtype)
            t_native = _median_seconds(native, (x, w), args.rounds)
            t_wino = _median_seconds(winograd, (x, w), args.rounds)
            want = tf.cast(native(x, w), tf.float32)
            err = float(
                tf.reduce_max(tf.abs(tf.cast(winograd(x, w), tf.float32) - want))
                / tf.reduce_max(tf.abs(want))
            )
            print(
                f"| {dtype.name} | {side}×{side} | {c}→{c} | {t_native * 1e3:.1f} ms | {t_wino * 1e3:.1f} ms "
                f"| {t_native / t_wino:.2f}× | {err:.1e} |"
            )


if __name__ == "__main__":
    main()
