"""Peak memory of a second-order meta-training step vs. the number of inner steps.

Each configuration runs in its own subprocess (peak RSS is per process) and trains
a few meta-batches; the table compares the measured growth of peak RSS over the
post-build baseline with `mtl_keras.tensorflow_backend.memory.estimate_training_memory`.

    python benchmarks/probes/measure_inner_loop_memory.py                  # 20 vs 100 steps, a few minutes on 2 cores
    python benchmarks/probes/measure_inner_loop_memory.py --steps 20 100 200 --image-size 32
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras
from mtl_keras import MetaTransferModel, make_episodes, resnet12
from mtl_keras.data import ClassSplit
from mtl_keras.tensorflow_backend.memory import estimate_training_memory

steps, size, first_order, batch, queries = (int(a) for a in sys.argv[1:6])
ways, shots = 5, 1
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (10 * 20, size, size, 3), dtype=np.uint8)
split = ClassSplit.from_arrays(images, np.repeat(np.arange(10), 20))
keras.utils.set_random_seed(0)
backbone = resnet12((size, size, 3), widths=(64, 160, 320, 640))
model = MetaTransferModel(backbone, ways=ways, inner_steps=steps, first_order=bool(first_order))
model.compile()
episodes = make_episodes(split, ways, shots, queries, meta_batch_size=batch, seed=0)
model.fit(episodes, steps_per_epoch=1, epochs=1, verbose=0)  # trace + first step
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model.fit(episodes, steps_per_epoch=3, epochs=1, verbose=0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
est = estimate_training_memory(backbone, batch, ways * shots, ways * queries, ways, steps)
print(json.dumps({"steps": steps, "first_order": bool(first_order), "peak": peak,
                  "after_first_step": base, "estimate": est}))
"""


def measure(steps: int, image_size: int, first_order: bool, batch: int, queries: int) -> dict:
    """Run one configuration in a subprocess; returns its JSON line."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(steps),
            str(image_size),
            str(int(first_order)),
            str(batch),
            str(queries),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None, seed: int = 0) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--meta-batch-size", type=int, default=2)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--first-order", action="store_true", help="also measure first-order MTL")
    args = parser.parse_args(argv)
    mb = 2**20
    print(
        f"ResNet-12 (64-160-320-640), {args.image_size}x{args.image_size}x3, 5-way 1-shot "
        f"{args.queries} queries, B={args.meta_batch_size}"
    )
    print("| inner steps | order | peak RSS (MB) | estimate: activations + inner loop (MB) |")
    print("|---|---|---|---|")
    for first_order in [False, True] if args.first_order else [False]:
        for steps in args.steps:
            r = measure(steps, args.image_size, first_order, args.meta_batch_size, args.queries)
            est = r["estimate"]
            print(
                f"| {steps} | {'first' if first_order else 'second'} | {r['peak'] / mb:.0f} | "
                f"{est['activations'] / mb:.0f} + {est['inner_loop'] / mb:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
