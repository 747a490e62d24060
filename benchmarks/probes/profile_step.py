"""Where a meta-training step's time goes: TensorFlow's profiler, summed per op type and per layer.

Runs the benchmark worker's step (`benchmarks.harness.keras_worker`, the compiled
`train_function` of `fit` on a synthetic meta-batch) under `tf.profiler`, then sums the
durations of the ops TensorFlow's executor ran. With ``--inter-threads 1`` ops run one at a
time, so the sums add up to about the step time; with TF's default, independent ops overlap and
each op's time includes its share of the cores.

    python benchmarks/probes/profile_step.py --precision mixed_bfloat16 --inter-threads 1
    python benchmarks/probes/profile_step.py --precision float32 --shots 5 --filter-gradient native
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
if ROOT not in sys.path:  # run by path: `benchmarks.harness` (and mtl_keras) from the repository
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.harness.keras_worker import add_step_arguments, build_steps, train_spec  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_step_arguments(parser)
    parser.add_argument("--filter-gradient", default="auto", choices=("auto", "native", "swapped"))
    parser.add_argument("--inter-threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    parser.add_argument("--top", type=int, default=12, help="op types to list")
    args = parser.parse_args(argv)

    import tensorflow as tf

    spec = train_spec(args, filter_gradient=args.filter_gradient, inter_threads=args.inter_threads)
    step = build_steps(spec)[0]["step"]
    for _ in range(3):
        step()
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            step()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    by_type, by_layer, counts = collections.Counter(), collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name == "ExecutorState::Process":
                    continue
                seconds = event.duration_ps / 1e12 / args.steps
                op_type = name.split(":")[-1]
                by_type[op_type] += seconds
                counts[op_type] += 1 / args.steps
                if "swapped_filter_gradient" in name:
                    by_layer[("blocks of small maps", "filter gradient, swapped")] += seconds
                elif "Conv2D" in op_type:
                    kind = (
                        "filter gradient"
                        if "Filter" in op_type
                        else "input gradient"
                        if "Input" in op_type
                        else "forward"
                    )
                    block = re.search(r"block\d", name)
                    by_layer[(block.group(0) if block else "blocks of small maps", kind)] += seconds
    total = sum(by_type.values())
    print(
        f"{args.precision}, {args.image_size}×{args.image_size}, 5-way {args.shots}-shot, meta-batch "
        f"{args.meta_batch}, filter gradient {args.filter_gradient}, inter-op threads "
        f"{args.inter_threads or 'TF default'}: ops sum to {1000 * total:.0f} ms per step"
    )
    conv = sum(v for k, v in by_type.items() if "Conv2D" in k)
    print(
        f"convolutions {1000 * conv:.0f} ms ({conv / total:.0%}), everything else {1000 * (total - conv):.0f} ms"
    )
    print("\n| op type | ms per step | ops per step |\n|---|---|---|")
    for op_type, seconds in by_type.most_common(args.top):
        print(f"| {op_type} | {1000 * seconds:.1f} | {counts[op_type]:.0f} |")
    print("\n| where | convolution | ms per step |\n|---|---|---|")
    for (where, kind), seconds in sorted(by_layer.items()):
        print(f"| {where} | {kind} | {1000 * seconds:.1f} |")


if __name__ == "__main__":
    main()
