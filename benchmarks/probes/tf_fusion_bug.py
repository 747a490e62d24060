"""A TensorFlow 2.21 CPU graph-optimizer bug that `mtl_keras.layers.conv.conv2d` steers around.

Inside a `tf.function`, ``leaky_relu(bias_add(conv2d(x, k), b) + r)`` — the end of a residual
block — is fused into one oneDNN op that computes wrong values; the same with a broadcast ``+``
instead of ``bias_add``, or with ``relu``, is exact. The training-graph form of the same fusion is
what makes TensorFlow log "remapper failed: ... LeakyReluGrad exist for missing node" (harmless:
the optimizer then leaves that graph alone).

    python benchmarks/probes/tf_fusion_bug.py      # prints max |graph - eager| per variant
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def variants(x, k, b, r) -> dict:
    conv = lambda: tf.nn.conv2d(x, k, 1, "SAME")  # noqa: E731
    return {
        "leaky_relu(bias_add(conv) + r)": lambda: tf.nn.leaky_relu(tf.nn.bias_add(conv(), b) + r, 0.1),
        "leaky_relu(conv + b + r)": lambda: tf.nn.leaky_relu(conv() + b + r, 0.1),
        "relu(bias_add(conv) + r)": lambda: tf.nn.relu(tf.nn.bias_add(conv(), b) + r),
        "leaky_relu(bias_add(conv))": lambda: tf.nn.leaky_relu(tf.nn.bias_add(conv(), b), 0.1),
    }


def main() -> None:
    rng = np.random.default_rng(0)
    x, k, b, r = (
        tf.constant(rng.normal(size=shape), tf.float32)
        for shape in ((2, 6, 6, 4), (3, 3, 4, 4), (4,), (2, 6, 6, 4))
    )
    print(f"TensorFlow {tf.__version__}")
    for name, fn in variants(x, k, b, r).items():
        error = np.abs(tf.function(fn)().numpy() - fn().numpy()).max()
        print(f"{name:32s} max |graph - eager| = {error:.3g}")


if __name__ == "__main__":
    main()
