"""Seconds per `PretrainModel` training step on the Keras backend in use, with the pretraining
augmentation, on NumPy batches (no tf.data): what ``jit_compile`` Keras settles on, and the step.

The CLI's pretraining on JAX ran about 8× slower per step than on TensorFlow. Run once per
backend (and, on JAX, with ``--jit-compile false`` for the op-by-op step):

    KERAS_BACKEND=tensorflow python benchmarks/probes/pretrain_step_speed.py
    KERAS_BACKEND=jax python benchmarks/probes/pretrain_step_speed.py
    KERAS_BACKEND=jax python benchmarks/probes/pretrain_step_speed.py --jit-compile false

By default 16×16×1 images, ResNet-12 8-8-8-8, 64 classes, batch 128 (the CLI's ``cpu-glyphs`` at
``image_size=16 widths=8,8,8,8``); ``--steps`` timed steps after a two-step warm-up ``fit``.
Wall and process CPU seconds per step. ``make demo``'s pretraining (``cpu-glyph_scenes``):

    KERAS_BACKEND=jax python benchmarks/probes/pretrain_step_speed.py --image-size 32 --channels 3 --widths 16,32,64,128
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mtl_keras import PretrainModel, resnet12  # noqa: E402
from mtl_keras.data.augment import pretrain_augmentation  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--widths", default="8,8,8,8", help="ResNet-12 widths, comma-separated")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    shape = (args.image_size, args.image_size, args.channels)
    model = PretrainModel(
        resnet12(shape, widths=tuple(int(w) for w in args.widths.split(","))),
        64,
        augmentation=None if args.no_augment else pretrain_augmentation(),
    )
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    rng = np.random.default_rng(0)
    x = rng.random((128 * args.steps, *shape), dtype=np.float32)
    y = rng.integers(0, 64, len(x))
    model.fit(x[:256], y[:256], batch_size=128, epochs=1, verbose=0)
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=False)
    np.asarray(model.trainable_variables[0])  # the last update done (JAX dispatches asynchronously)
    seconds = (time.perf_counter() - start) / args.steps
    cpu_seconds = (time.process_time() - cpu) / args.steps
    print(
        f"{keras.backend.backend()}: {shape} widths {args.widths}, jit_compile={model.jit_compile}, "
        f"augmentation={not args.no_augment}: {seconds:.4f} s/step, {cpu_seconds:.4f} CPU s/step "
        f"({args.steps} steps; load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
