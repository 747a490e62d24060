"""Meta-train speed of two checkouts of mtl_keras, on the TensorFlow backend, round by round.

The question it answers (issue 17 item 1): did porting the layers, the inner loop and the model's
forward pass to `keras.ops` slow the TensorFlow path down? Each round runs one subprocess per
checkout (order alternating), each timing ``--steps`` `MetaTransferModel.fit` steps after one
warm-up step, on the same configuration and episodes: ResNet-12 64-128-256-512 at 32×32×3,
5-way 1-shot, 15 queries, 20 inner steps, meta-batch 2, float32, BN frozen, second order.

    python benchmarks/probes/checkout_ab.py --a /tmp/old --b . --rounds 3

prints tasks/s per round and checkout and the median of the per-round ratios B/A.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_RUN = r"""
import json, sys, time
import numpy as np
import keras, mtl_keras
from mtl_keras.data import ClassSplit
steps = int(sys.argv[1])
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (20 * 20, 32, 32, 3)).astype("uint8")
split = ClassSplit.from_arrays(images, np.repeat(np.arange(20), 20), name="ab")
model = mtl_keras.MetaTransferModel(
    mtl_keras.resnet12((32, 32, 3), widths=(64, 128, 256, 512)), ways=5, inner_steps=20
)
model.compile()
episodes = mtl_keras.make_episodes(split, 5, 1, 15, meta_batch_size=2, seed=0)
model.fit(episodes, steps_per_epoch=1, epochs=1, verbose=0)  # warm-up: tracing, oneDNN primitives
start = time.perf_counter()
model.fit(episodes, steps_per_epoch=steps, epochs=1, verbose=0)
print(json.dumps({"tasks_per_s": 2 * steps / (time.perf_counter() - start)}))
"""


def run(checkout: str, steps: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(steps)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["tasks_per_s"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", required=True, help="checkout A (the baseline)")
    parser.add_argument("--b", required=True, help="checkout B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed fit steps per run")
    args = parser.parse_args(argv)
    ratios = []
    for r in range(args.rounds):
        order = [("A", args.a), ("B", args.b)] if r % 2 == 0 else [("B", args.b), ("A", args.a)]
        rates = {name: run(path, args.steps) for name, path in order}
        ratios.append(rates["B"] / rates["A"])
        print(
            f"round {r + 1}: A {rates['A']:.3f} tasks/s, B {rates['B']:.3f} tasks/s, B/A {ratios[-1]:.3f}",
            flush=True,
        )
    print(
        f"median B/A over {args.rounds} rounds: {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
