"""Episode pipeline throughput from JPEG files, against the model's own consumption.

Writes a miniImageNet-like folder tree (``train/<wnid>/*.jpg``, 100 classes × 600 images of
84×84 by default, random smooth images, generated once into ``--data``), loads it with the
``mini_imagenet`` loader (file-backed), and measures, each as the median of ``--repeats``:

* episodes/s of `make_episodes` (5-way 1-shot 15-query, meta-batch 2, parallel JPEG decoding);
* the same with ``num_parallel_calls=1`` (and a check that both streams are identical);
* meta-train steps/s of a `MetaTransferModel` with ResNet-12 (64-128-256-512) at 84×84 on
  the same episodes.

It prints a Markdown table with the ratio pipeline / model (target ≥ 10×) and writes JSON.

    python benchmarks/probes/pipeline_benchmark.py --data /tmp/mini_like --out benchmarks/pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np


def write_tree(root: str, classes: int, per_class: int, size: int, seed: int = 0) -> None:
    """A miniImageNet folder layout of random smooth JPEGs (skipped when already there)."""
    from PIL import Image

    marker = os.path.join(root, f".complete_{classes}x{per_class}x{size}")
    if os.path.exists(marker):
        return
    rng = np.random.default_rng(seed)
    splits = (
        {"train": classes - 36, "val": 16, "test": 20}
        if classes >= 60
        else {"train": classes, "val": 0, "test": 0}
    )
    index = 0
    for split, count in splits.items():
        for _ in range(count):
            folder = os.path.join(root, split, f"n{index:08d}")
            os.makedirs(folder, exist_ok=True)
            base = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
            for i in range(per_class):
                noise = rng.integers(-30, 30, (8, 8, 3))
                small = np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(small).resize((size, size), Image.BILINEAR).save(
                    os.path.join(folder, f"n{index:08d}_{i:05d}.jpg"), quality=90
                )
            index += 1
    open(marker, "w").close()


def time_batches(dataset, batches: int) -> float:
    iterator = iter(dataset)
    next(iterator)  # warm-up: graph building, first decode
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def main(
    data: str,
    out: str | None,
    classes: int = 100,
    per_class: int = 600,
    size: int = 84,
    batches: int = 30,
    repeats: int = 3,
    model_steps: int = 3,
    seed: int = 0,
) -> dict:
    from mtl_keras import MetaTransferModel, make_episodes, resnet12
    from mtl_keras.data.sources import mini_imagenet

    start = time.perf_counter()
    write_tree(data, classes, per_class, size, seed)
    print(f"data: {data} ({classes} classes x {per_class} JPEGs, {time.perf_counter() - start:.0f} s)")
    train, _, _ = mini_imagenet.load(data, image_size=size, verify="none")
    print(train.summary())

    def episodes(parallel):
        return make_episodes(train, 5, 1, 15, meta_batch_size=2, seed=seed, num_parallel_calls=parallel)

    a = [x["support_images"].numpy() for x, _ in episodes(None).take(3)]
    b = [x["support_images"].numpy() for x, _ in episodes(1).take(3)]
    identical = all(np.array_equal(x, y) for x, y in zip(a, b))

    parallel = [time_batches(episodes(None), batches) for _ in range(repeats)]
    serial = [time_batches(episodes(1), batches) for _ in range(repeats)]

    model = MetaTransferModel(resnet12((size, size, 3)), ways=5, inner_steps=20)
    model.compile()
    data_iter = iter(episodes(None))
    model.train_on_batch(*next(data_iter))  # warm-up (tracing)
    step_rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(model_steps):
            model.train_on_batch(*next(data_iter))
        step_rates.append(model_steps / (time.perf_counter() - t))

    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "setting": f"{classes} classes x {per_class} JPEGs {size}x{size}, 5-way 1-shot 15-query, meta-batch 2",
        "pipeline_batches_per_s_parallel": statistics.median(parallel),
        "pipeline_batches_per_s_serial": statistics.median(serial),
        "model_steps_per_s": statistics.median(step_rates),
        "same_stream_parallel_vs_serial": identical,
        "repeats": repeats,
    }
    result["ratio_pipeline_over_model"] = (
        result["pipeline_batches_per_s_parallel"] / result["model_steps_per_s"]
    )
    table = "\n".join(
        [
            f"| what | meta-batches/s (median of {repeats}) |",
            "|---|---|",
            f"| pipeline, parallel decoding (AUTOTUNE) | {result['pipeline_batches_per_s_parallel']:.2f} |",
            f"| pipeline, one decoding thread | {result['pipeline_batches_per_s_serial']:.2f} |",
            f"| model: MTL train step, ResNet-12 84×84 | {result['model_steps_per_s']:.3f} |",
            f"| **pipeline / model** | **{result['ratio_pipeline_over_model']:.0f}×** (target ≥ 10×) |",
        ]
    )
    print(table)
    print(f"same episode stream with parallel and serial decoding: {identical}")
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/mtl_keras_mini_like")
    parser.add_argument("--out", default=None)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.data, args.out, args.classes, args.per_class, args.size, repeats=args.repeats)
