"""Memory of a meta-training step: an estimate, and an up-front check against free RAM.

What a step holds (second order, batch norm frozen):

* **backbone activations** — every image of the meta-batch (``B * N * (K + Q)``)
  goes through the backbone once, and every layer output is kept for the
  backward pass. This dominates: e.g. ResNet-12 (64-160-320-640) on 84x84 keeps
  about 45 MB per image, so ``B=4``, 5-way 1-shot with 15 queries (320 images)
  needs about 14 GB.
* **the inner loop** — the backward pass through ``T`` inner steps keeps, per step
  and task, the head ``(D, N)``, its gradient and the support logits/softmax
  ``(S, N)``: ``T * B * (2 D N + 3 S N)`` floats, a few MB even for ``T = 100``.
  The inner loop works on embeddings, so its memory does not involve the
  backbone's activations: 100 inner steps cost about as much as 20.

`check_training_memory` rejects, before training starts, a configuration whose
*activations alone* exceed the memory available: the RAM available on CPU (all
local replicas share it), or on GPUs the memory of the smallest visible GPU
(``nvidia-smi``) for one replica's share of the meta-batch (``B / replicas``
under a `tf.distribute` strategy). The estimate is a lower bound (TensorFlow adds
workspace and copies), so a configuration it lets through may still run out of
memory; one it rejects cannot fit.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess

import keras
import numpy as np
import tensorflow as tf

#: Set this environment variable to 1 to skip `check_training_memory`.
SKIP_ENV = "MTL_KERAS_SKIP_MEMORY_CHECK"


def available_memory() -> int | None:
    """Bytes of RAM available to this process, or None when unknown.

    ``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup (container) limit
    minus its usage when there is one.
    """
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            free = max(0, int(limit) - usage)
            available = free if available is None else min(available, free)
        break
    return available


def gpu_memory() -> list[int] | None:
    """Total bytes of each GPU TensorFlow can see, from ``nvidia-smi``; None when unknown.

    Follows a numeric ``CUDA_VISIBLE_DEVICES``; None without ``nvidia-smi`` or on any error.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        totals = [int(float(line.strip())) * 2**20 for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        index = [int(v) for v in visible.split(",") if v.strip()]
        totals = [totals[i] for i in index if i < len(totals)]
    return totals or None


def activation_floats_per_image(backbone) -> int:
    """Floats of all layer outputs of ``backbone`` for one image (kept for the backward pass)."""
    total = 0
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # a shared layer has several outputs
            continue
        for out in tf.nest.flatten(outputs):
            shape = tuple(out.shape[1:])
            if all(d is not None for d in shape):
                total += int(np.prod(shape))
    return total


def estimate_training_memory(
    backbone,
    meta_batch_size: int,
    support_size: int,
    query_size: int,
    ways: int,
    inner_steps: int,
) -> dict[str, int]:
    """Bytes one meta-training step holds at its peak, roughly (a lower bound).

    Args:
        backbone: the functional backbone.
        meta_batch_size: ``B``.
        support_size: support images per task ``S = N*K``.
        query_size: query images per task ``N*Q``.
        ways: ``N``.
        inner_steps: ``T``.

    Returns:
        ``{"activations": ..., "inner_loop": ..., "total": ...}`` in bytes.
    """
    itemsize = tf.as_dtype(backbone.compute_dtype or "float32").size
    images = meta_batch_size * (support_size + query_size)
    activations = activation_floats_per_image(backbone) * images * itemsize
    dim = int(backbone.output_shape[-1])
    per_step = meta_batch_size * (2 * dim * ways + 3 * support_size * ways + 2 * ways)
    inner = (inner_steps + 1) * per_step * 4
    return {"activations": activations, "inner_loop": inner, "total": activations + inner}


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def check_training_memory(model, dataset) -> None:
    """Raise `MemoryError` when a training step on ``dataset`` clearly cannot fit in memory.

    On CPU the activations of this worker's share of the meta-batch are compared
    with the available RAM; on GPUs one replica's share (``B / replicas``) with the
    smallest visible GPU's memory (when ``nvidia-smi`` tells it). Needs a
    `tf.data.Dataset` of episodes with static shapes; skipped when the environment
    variable ``MTL_KERAS_SKIP_MEMORY_CHECK`` is 1.

    Raises:
        MemoryError: the backbone activations exceed the memory; the message names
            the sizes and what to lower.
    """
    if os.environ.get(SKIP_ENV) == "1" or not isinstance(dataset, tf.data.Dataset):
        return
    try:
        inputs = dataset.element_spec[0]
        support = inputs["support_images"].shape
        query = inputs["query_images"].shape
    except (TypeError, KeyError, IndexError, AttributeError):
        return
    if support.rank != 5 or query.rank != 5 or None in (support[0], support[1], query[1]):
        return
    _check(model, support, query, max(1, int(model.distribute_strategy.num_replicas_in_sync)))


def check_step_memory(model, support, query, replicas: int) -> None:
    """`check_training_memory` from one replica's input shapes, as ``train_step`` sees them.

    `MetaTransferModel.train_step` calls it while ``fit`` traces the step, so a step that
    cannot fit is refused before the first one runs.

    Args:
        model: the `MetaTransferModel`.
        support, query: static shapes ``(B / replicas, N*K, H, W, C)``, ``(B / replicas, N*Q, H, W, C)``
            of one replica's share (unknown sizes: no check).
        replicas: replicas in sync (1 without a strategy).

    Raises:
        MemoryError: as `check_training_memory`.
    """
    support, query = tf.TensorShape(support), tf.TensorShape(query)
    if os.environ.get(SKIP_ENV) == "1" or support.rank != 5 or query.rank != 5:
        return
    if None in (support[0], support[1], query[1]):
        return
    replicas = max(1, int(replicas))
    whole = tf.TensorShape([int(support[0]) * replicas, *support[1:]])
    _check(model, whole, query, replicas)


def _check(model, support, query, replicas: int) -> None:
    """The check on the whole meta-batch's shapes ``support``, ``query``."""
    strategy = model.distribute_strategy
    try:
        local = max(1, len(strategy.extended.worker_devices))
    except RuntimeError:  # the default strategy has no device list: one replica
        local = 1
    b, s, q = int(support[0]), int(support[1]), int(query[1])
    if tf.config.list_logical_devices("GPU"):
        totals = gpu_memory()
        if not totals:
            return
        available, tasks, where = min(totals), math.ceil(b / replicas), "the smallest GPU's memory"
        per = f"{tasks} of the {b} tasks per replica"
    else:
        available = available_memory()
        if available is None:
            return
        tasks = math.ceil(b * min(local, replicas) / replicas)
        where, per = (
            "RAM",
            f"{tasks} tasks" + (f" (of {b}, for this worker's replicas)" if tasks != b else ""),
        )
    estimate = estimate_training_memory(model.backbone, tasks, s, q, model.ways, model.inner_steps)
    if estimate["activations"] > available:
        h, w, c = (int(d) if d is not None else "?" for d in support[2:])
        per_task = math.ceil(estimate["activations"] / tasks)
        raise MemoryError(
            f"A meta-training step needs at least {_gb(estimate['activations'])} for backbone "
            f"activations ({per} x {s + q} images of {h}x{w}x{c} through "
            f"'{model.backbone.name}', {_gb(per_task)} per task) but only {_gb(available)} of {where} "
            "is available. Lower meta_batch_size, queries or image_size, use mixed precision "
            f"or more replicas (set {SKIP_ENV}=1 to skip this check)."
        )
