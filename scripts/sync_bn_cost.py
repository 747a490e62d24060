"""What synchronized batch norm costs a pretraining step under MirroredStrategy.

`PretrainModel` synchronizes its backbone's batch norm under a strategy with more than one
replica (docs/distributed.md). This times a pretraining step (ResNet-12, 32×32×1, batch 128 by
default) on two logical CPUs with ``synchronized`` on and off, rounds interleaved, and prints
the medians and their ratio.

    python scripts/sync_bn_cost.py [--widths 64,128,256,512] [--batch 128] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="64,128,256,512")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    args = parser.parse_args()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from mtl_keras import PretrainModel
    from mtl_keras.backbones import resnet12
    from mtl_keras.models.pretrain import synchronize_batch_norm

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    widths = tuple(int(w) for w in args.widths.split(","))
    rng = np.random.default_rng(0)
    images = rng.random((args.batch * args.steps, args.size, args.size, 1)).astype("float32")
    labels = rng.integers(0, 64, len(images))
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(args.batch).cache()
    models = {}
    for synchronized in (True, False):
        with strategy.scope():
            model = PretrainModel(resnet12((args.size, args.size, 1), widths=widths), num_classes=64)
            synchronize_batch_norm(model.backbone, synchronized)
            model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(data, epochs=1, verbose=0)  # trace and warm up
        models[synchronized] = model
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for synchronized, model in models.items():
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            times[synchronized].append((time.perf_counter() - start) / args.steps)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"pretraining step, ResNet-12 {widths} {args.size}x{args.size}, batch {args.batch}, 2 replicas")
    print(f"  synchronized BN: {on * 1e3:.0f} ms (median of {args.rounds} rounds)")
    print(f"  per-replica BN:  {off * 1e3:.0f} ms")
    print(f"  ratio: {on / off:.3f}")


if __name__ == "__main__":
    main()
