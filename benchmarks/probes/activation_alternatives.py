"""Forward + backward time of LeakyReLU(0.1) on a bfloat16 tensor, TF's op against rewrites.

On an AMX CPU a bf16 meta-training step spends more time in ``LeakyRelu`` and
``LeakyReluGrad`` (75 ms of 460, `profile_step.py --precision mixed_bfloat16 --inter-threads 1`)
than in its forward convolutions; this asks whether another formulation of the activation is
cheaper. Shape: ResNet-12's first block at 32×32 input over 160 images, (160, 32, 32, 64).
Medians of ``--repeats`` calls of one ``tf.function`` each; max |difference| to TF's op.

    python benchmarks/probes/activation_alternatives.py
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

VARIANTS = {
    "tf.nn.leaky_relu (what mtl_keras runs)": lambda x: tf.nn.leaky_relu(x, 0.1),
    "maximum(x, 0.1 x)": lambda x: tf.maximum(x, 0.1 * x),
    "where(x > 0, x, 0.1 x)": lambda x: tf.where(x > 0, x, 0.1 * x),
    "leaky_relu in float32, cast back": lambda x: tf.cast(
        tf.nn.leaky_relu(tf.cast(x, tf.float32), 0.1), x.dtype
    ),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shape", default="160,32,32,64")
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape), tf.bfloat16)
    g = tf.constant(rng.normal(size=shape), tf.bfloat16)

    def compiled(fn):
        @tf.function
        def run(x, g):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            return y, tape.gradient(y, x, output_gradients=g)

        return run

    runs = {name: compiled(fn) for name, fn in VARIANTS.items()}
    ref_y, ref_dx = (tf.cast(t, tf.float32) for t in next(iter(runs.values()))(x, g))
    print(
        f"| variant ({'x'.join(map(str, shape))} bfloat16) | forward + backward ms | max abs diff y | max abs diff dx |"
    )
    print("|---|---|---|---|")
    for name, run in runs.items():
        y, dx = run(x, g)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run(x, g)[1].numpy()
            times.append(time.perf_counter() - start)
        dy = float(tf.reduce_max(tf.abs(tf.cast(y, tf.float32) - ref_y)))
        ddx = float(tf.reduce_max(tf.abs(tf.cast(dx, tf.float32) - ref_dx)))
        print(f"| {name} | {1000 * np.median(times):.2f} | {dy:.3g} | {ddx:.3g} |")


if __name__ == "__main__":
    main()
