"""What synchronized batch norm costs a pretraining step under a tf.distribute strategy.

Under a strategy, `PretrainModel` normalises with each replica's batch statistics and averages
the moving statistics over the replicas after every step (one all-reduce);
`synchronize_batch_norm` makes batch norm use global-batch statistics instead (training equals
one device; several all-reduces per layer and step). This times a pretraining step (ResNet-12,
32×32×1, batch 128 by default) both ways, rounds interleaved, and prints the medians and their
ratio: on two logical CPUs (MirroredStrategy), or with ``--multi-worker`` in two worker
processes talking gRPC over 127.0.0.1 (MultiWorkerMirroredStrategy, one core each here).

    python benchmarks/probes/sync_bn_cost.py [--widths 64,128,256,512] [--batch 128] [--rounds 7]
    python benchmarks/probes/sync_bn_cost.py --multi-worker
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
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
    parser.add_argument("--multi-worker", action="store_true", help="two local worker processes")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "index:port,port"
    args = parser.parse_args()
    if args.multi_worker:
        return _launch_workers()
    if args.worker:
        index, ports = args.worker.split(":")
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
                "task": {"type": "worker", "index": int(index)},
            }
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        where = "2 worker processes (gRPC over 127.0.0.1)"
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        where = "2 logical CPUs"
    import keras

    from mtl_keras import PretrainModel
    from mtl_keras.backbones import resnet12
    from mtl_keras.models.pretrain import synchronize_batch_norm

    widths = tuple(int(w) for w in args.widths.split(","))
    rng = np.random.default_rng(0)
    images = rng.random((args.batch * args.steps, args.size, args.size, 1)).astype("float32")
    labels = rng.integers(0, 64, len(images))
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(args.batch).cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)
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
    if args.worker and not args.worker.startswith("0:"):
        return  # the chief reports
    print(f"pretraining step, ResNet-12 {widths} {args.size}x{args.size}, batch {args.batch}, {where}")
    print(f"  synchronized BN: {on * 1e3:.0f} ms (median of {args.rounds} rounds)")
    print(f"  per-replica BN, moving statistics averaged (the default): {off * 1e3:.0f} ms")
    print(f"  ratio: {on / off:.3f}")


def _launch_workers() -> None:
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = ",".join(str(s.getsockname()[1]) for s in sockets)
    for s in sockets:
        s.close()
    rest = [a for a in sys.argv[1:] if a != "--multi-worker"]
    workers = [
        subprocess.Popen([sys.executable, __file__, *rest, "--worker", f"{i}:{ports}"]) for i in range(2)
    ]
    codes = [w.wait() for w in workers]
    if any(codes):
        raise SystemExit(f"a worker failed (exit codes {codes})")


if __name__ == "__main__":
    main()
