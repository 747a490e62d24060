"""Is a meta-training step reproducible? The same gradient computed again and again, loop vs unrolled.

Builds the demo's model (preset ``cpu-glyphs``: ResNet-12 16-32-64-128 at 32×32, 5-way 1-shot,
a meta-batch of 4 tasks, 20 inner steps; random weights, random images), then computes the
meta-gradient of one fixed meta-batch ``--calls`` times with the compiled step and counts the
calls whose gradients are not bit-identical to the first — once with the inner loop as a
``tf.while_loop`` (``unroll_training=False``, what mtl_keras did before commit 5008bb6) and once
unrolled (the default). Each variant runs in its own process (TensorFlow's default threads).

    python benchmarks/probes/determinism_check.py            # prints one line per variant
    python benchmarks/probes/determinism_check.py --calls 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# the repository root, on the workers' PYTHONPATH: `benchmarks.harness` (and mtl_keras) from any cwd
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, keras
from benchmarks.harness.keras_worker import synthetic_episodes
from mtl_keras_app.config import get_config
from mtl_keras_app.workflow import build_meta_model
unroll, calls = sys.argv[1] == "unrolled", int(sys.argv[2])
config = get_config("cpu-glyphs")
keras.utils.set_random_seed(0)
model = build_meta_model(config, 1, unroll_training=unroll)
inputs, labels = synthetic_episodes(config.meta_batch_size, config.ways, 1, config.queries, config.image_size, 1)
variables = model.trainable_variables
@tf.function
def gradients():
    with tf.GradientTape() as tape:
        loss, _ = model._loss_and_accuracy(model(inputs, training=True), labels)
    return tape.gradient(loss, variables)
first = [g.numpy() for g in gradients()]
differ = 0
for _ in range(calls - 1):
    differ += any(not np.array_equal(a, g.numpy()) for a, g in zip(first, gradients()))
print(f"{sys.argv[1]:>10}: {differ} of {calls - 1} repeated calls gave gradients that differ from the first call's")
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=11)
    args = parser.parse_args()
    for variant in ("while-loop", "unrolled"):
        result = subprocess.run(
            [sys.executable, "-c", WORKER, variant, str(args.calls)],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
            },
        )
        if result.returncode:
            sys.exit(result.stderr)
        print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
