"""How far a tiny training drifts from a float-rounding-sized change of its start.

The synchronized-batch-norm test (`tests/test_distribute.py`) compares a two-replica run with a
one-device run. Their arithmetic differs at the last bits (other batch shapes, other reduction
orders, other oneDNN kernels per ISA), and this training amplifies such differences: the script
perturbs the initial weights by ``eps`` (default 1e-6) and prints how far apart the weights end
after the test's 8 SGD steps, and after one step. Hence the test compares one step.

    python benchmarks/probes/training_sensitivity.py [--eps 1e-6]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras import PretrainModel  # noqa: E402
from mtl_keras.backbones import resnet12  # noqa: E402


def train(data, lr: float, eps: float, steps: int | None) -> list[np.ndarray]:
    """The test's model, its initial weights moved by ``eps`` · N(0, 1), after ``steps`` (None: 8)."""
    keras.utils.set_random_seed(0)
    model = PretrainModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), num_classes=6)
    noise = np.random.default_rng(1)
    for w in model.trainable_weights:
        w.assign(w + eps * noise.standard_normal(w.shape).astype("float32"))
    model.compile(
        optimizer=keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(data if steps is None else data.take(steps), epochs=2 if steps is None else 1, verbose=0)
    return [np.asarray(w) for w in model.weights]


def main(eps: float = 1e-6) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((64, 16, 16, 1)).astype("float32")
    images[32:] += 1.0
    labels = rng.integers(0, 6, 64)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    for lr in (0.1, 0.01):
        for steps, what in ((1, "1 step"), (None, "8 steps")):
            a, b = train(data, lr, 0.0, steps), train(data, lr, eps, steps)
            drift = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
            print(f"SGD lr {lr}, {what}: start moved by {eps:g} -> weights differ by up to {drift:.2e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=1e-6)
    main(parser.parse_args().eps)
