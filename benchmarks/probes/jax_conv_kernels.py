"""Where XLA:CPU's convolutions lose to TensorFlow's (oneDNN): GFLOP/s of a training step's three
convolution products on both, interleaved in one process.

For the 3×3 convolutions of a ResNet-12 (64-128-256-512) at 32×32 input, 160 images (a 5-way
1-shot 15-query meta-batch of 2), float32: forward, backward-data (the input's gradient) and
backward-weights (the kernel's gradient, which the scaling Φ needs), each as TensorFlow runs it
(`tf.function` of the raw ops: oneDNN) and as JAX runs it (``jax.jit`` of `jax.lax` and its VJP:
XLA:CPU), plus the kernel's gradient on JAX as nine shifted matmuls (each a ``(C_in, N·H·W) ×
(N·H·W, C_out)`` dot, XLA's matmul path instead of its convolution) and as the one im2col
product mtl_keras runs on JAX on CPUs (`mtl_keras.jax_backend.conv.im2col_filter_gradient`).
Prints the CPU (`mtl_keras.hardware.isa_label`). Each repeat times every
variant once, in turn, so a machine shared with other jobs slows them alike; medians of
``--repeats``.

    python benchmarks/probes/jax_conv_kernels.py               # prints a Markdown table

Used in benchmarks/RESULTS.md (the JAX vs TensorFlow backend section).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras.hardware import cpu_flags, isa_label  # noqa: E402
from mtl_keras.jax_backend.conv import im2col_filter_gradient  # noqa: E402

LAYERS = ((32, 64, 64), (16, 128, 128), (8, 256, 256), (4, 512, 512))  # (side, Cin, Cout)
_DIMS = ("NHWC", "HWIO", "NHWC")


def _jax_variants():
    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)

    def backward_data(x, w, g):
        return jax.vjp(lambda x: conv(x, w), x)[1](g)[0]

    def backward_weights(x, w, g):
        return jax.vjp(lambda w: conv(x, w), w)[1](g)[0]

    def shifted(x, w, g):
        n, h, wd, cin = x.shape
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        flat_g = g.reshape(-1, g.shape[-1])
        taps = [
            padded[:, i : i + h, j : j + wd, :].reshape(-1, cin).T @ flat_g
            for i in range(3)
            for j in range(3)
        ]
        return jnp.stack(taps).reshape(3, 3, cin, -1)

    return {
        "forward": jax.jit(lambda x, w, g: conv(x, w)),
        "backward-data": jax.jit(backward_data),
        "backward-weights": jax.jit(backward_weights),
        "backward-weights, 9 shifted matmuls": jax.jit(shifted),
        # What mtl_keras runs on JAX on a CPU for maps of 16 px or more (`mtl_keras.jax_backend.conv`).
        "backward-weights, im2col (mtl_keras)": jax.jit(lambda x, w, g: im2col_filter_gradient(x, g, (3, 3))),
    }


def _tf_variants(n, side, cin, cout):
    strides = [1, 1, 1, 1]
    return {
        "forward": tf.function(lambda x, w, g: tf.nn.conv2d(x, w, 1, "SAME")),
        "backward-data": tf.function(
            lambda x, w, g: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=[n, side, side, cin], filter=w, out_backprop=g, strides=strides, padding="SAME"
            )
        ),
        "backward-weights": tf.function(
            lambda x, w, g: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=[3, 3, cin, cout], out_backprop=g, strides=strides, padding="SAME"
            )
        ),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    n = args.images
    rng = np.random.default_rng(0)
    columns = [
        ("TF", "forward"),
        ("JAX", "forward"),
        ("TF", "backward-data"),
        ("JAX", "backward-data"),
        ("TF", "backward-weights"),
        ("JAX", "backward-weights"),
        ("JAX", "backward-weights, 9 shifted matmuls"),
        ("JAX", "backward-weights, im2col (mtl_keras)"),
    ]
    print("| maps, channels | " + " | ".join(f"{b} {what}" for b, what in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for side, cin, cout in LAYERS:
        x = rng.normal(size=(n, side, side, cin)).astype(np.float32)
        w = (rng.normal(size=(3, 3, cin, cout)) * 0.05).astype(np.float32)
        g = rng.normal(size=(n, side, side, cout)).astype(np.float32)
        tf_args = [tf.constant(a) for a in (x, w, g)]
        jax_args = [jnp.asarray(a) for a in (x, w, g)]
        fns = {"TF": _tf_variants(n, side, cin, cout), "JAX": _jax_variants()}
        args_of = {"TF": tf_args, "JAX": jax_args}

        def run(backend, what, fns=fns, args_of=args_of):
            out = fns[backend][what](*args_of[backend])
            return out.numpy() if backend == "TF" else jax.block_until_ready(out)

        for column in columns:  # warm-up: tracing, compilation, oneDNN primitives
            run(*column)
        times = {column: [] for column in columns}
        for _ in range(args.repeats):
            for column in columns:
                start = time.perf_counter()
                run(*column)
                times[column].append(time.perf_counter() - start)
        flops = 2 * n * side * side * cin * cout * 9
        cells = " | ".join(f"{flops / np.median(times[c]) / 1e9:.0f}" for c in columns)
        print(f"| {side}×{side}, {cin}→{cout} | {cells} |", flush=True)
    print(
        f"\nGFLOP/s, float32, medians of {args.repeats} interleaved repeats; {n} images; "
        f"load average {os.getloadavg()[0]:.2f}; {isa_label(cpu_flags())} CPU."
    )


if __name__ == "__main__":
    main()
