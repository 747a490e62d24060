"""A user's wait for a meta-test: mtl_keras' `evaluate_episodes` against the official test loop.

    python benchmarks/evaluation_vs_official.py                   # 600 episodes, ≈ 7 min on 2 AVX2 cores
    python benchmarks/evaluation_vs_official.py --episodes 100 --baseline-episodes 10   # shorter

Issue 19 item 5. The setting of the benchmark grid's evaluation rows — ResNet-12
64-128-256-512 at 32×32, 5-way, 15 queries, 100 inner steps, batch norm frozen, float32 — on
a test split of ``--classes`` × ``--per-class`` images (default 20 × 600 = 12,000, the size of
miniImageNet's test split; random pixels: the work does not depend on them):

* **mtl_keras**: `mtl_keras.evaluation.evaluate_episodes` over ``--episodes`` episodes, the
  path every stage uses: every image of the split is embedded once, then each episode's inner
  loop runs on gathered embeddings (the first call, which traces the graphs, is untimed: a
  second, identical evaluation is timed);
* **official**: the official code's test loop (yaoyao-liu/meta-transfer-learning ``pytorch/``,
  ``MetaTrainer.eval``): per episode, support and query images through the encoder and the
  inner loop, as `benchmarks.harness.torch_baseline` re-implements it (torch 2.13 CPU, the same
  threads); ``--baseline-episodes`` episodes timed, half before and half after mtl_keras' pass
  so that both see the machine's load.

Prints episodes/s of both and their ratio, and the instruction set oneDNN ran on; the numbers
go to ``benchmarks/RESULTS.md`` by hand with this command. The ratio depends on the split's
size: mtl_keras' backbone work is one pass over the split, the official loop's 80 images per
episode (600 episodes of 80 images on 12,000 images: 4× fewer embeddings).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def synthetic_split(classes: int, per_class: int, image_size: int, seed: int = 0):
    """A `ClassSplit` of random uint8 pixels, ``classes`` × ``per_class`` images."""
    from mtl_keras.data.split import ClassSplit

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (classes * per_class, image_size, image_size, 3), dtype=np.uint8)
    return ClassSplit(
        name="test",
        class_names=[f"class-{c}" for c in range(classes)],
        labels=np.repeat(np.arange(classes), per_class),
        images=images,
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--baseline-episodes", type=int, default=20)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--inner-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--widths", default="64,128,256,512", help="ResNet-12 widths (tests use narrow ones)")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]

    from benchmarks.harness.suite import torch_available, torch_worker

    if not torch_available():
        raise SystemExit("The official test loop needs torch: pip install -e '.[bench]'.")
    spec = {
        "kind": "eval",
        "ways": 5,
        "shots": args.shots,
        "queries": 15,
        "image_size": args.image_size,
        "widths": widths,
        "inner_steps": args.inner_steps,
        "warmup": 1,
    }
    official = torch_worker(spec, args.threads)  # starts and warms up beside mtl_keras' set-up

    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    except RuntimeError:  # TensorFlow already ran in this process (called from a test suite)
        print(
            f"TensorFlow was initialised before this script: its {tf.config.threading.get_intra_op_parallelism_threads()} "
            f"intra-op threads (0: one per core) stay, not --threads {args.threads}"
        )
    from mtl_keras.backbones.resnet12_backbone import resnet12
    from mtl_keras.evaluation import evaluate_episodes
    from mtl_keras.hardware import cpu_flags, isa_label
    from mtl_keras.models.meta_transfer import MetaTransferModel

    size = args.image_size
    model = MetaTransferModel(
        resnet12((size, size, 3), widths=tuple(widths)),
        ways=5,
        inner_steps=args.inner_steps,
        eval_inner_steps=args.inner_steps,
    )
    model.compile()
    split = synthetic_split(args.classes, args.per_class, size)

    def evaluate(episodes):
        start = time.perf_counter()
        evaluate_episodes(model, split, 5, args.shots, 15, episodes=episodes, seed=1, verbose=False)
        return time.perf_counter() - start

    evaluate(10)  # traces the graphs (embedding and inner loop)
    half = max(1, args.baseline_episodes // 2)
    before = official.time("step", half)
    seconds = evaluate(args.episodes)
    after = official.time("step", args.baseline_episodes - half) if args.baseline_episodes > half else []
    official.close()
    per_episode = statistics.median(before + after)
    ours = args.episodes / seconds
    theirs = 1.0 / per_episode
    print(
        f"{args.episodes} episodes 5-way {args.shots}-shot, 15 queries, {args.inner_steps} inner steps, "
        f"ResNet-12 {'-'.join(map(str, widths))} at {size}×{size}, split {args.classes}×{args.per_class} images, "
        f"{args.threads} threads, oneDNN on {isa_label(cpu_flags())}"
    )
    print(
        f"  mtl_keras evaluate_episodes (embeddings once per image): {seconds:.1f} s, {ours:.2f} episodes/s"
    )
    print(
        f"  official test loop (per-episode encoder): {per_episode:.2f} s per episode (median of "
        f"{len(before) + len(after)}: {len(before)} before, {len(after)} after), {theirs:.2f} episodes/s"
    )
    print(f"  ratio: {ours / theirs:.2f}x")
    return {"mtl_keras_episodes_per_s": ours, "official_episodes_per_s": theirs}


if __name__ == "__main__":
    main()
