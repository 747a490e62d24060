"""Choosing a `tf.distribute` strategy by name (the CLI's ``--strategy``).

``make_strategy("mirrored")`` uses every local GPU, or every logical CPU device when
there is no GPU; ``make_strategy("multi-worker")`` reads the cluster from
``TF_CONFIG``. ``configure_logical_cpus(n)`` splits the CPU into ``n`` logical
devices, so that ``mirrored`` can be tried (and tested) without GPUs. Both must run
before TensorFlow's first operation. See ``docs/distributed.md``.

``tf.distribute`` is TensorFlow-only: TensorFlow is imported by the functions that need it
(not with this module), with an error saying what to install where it is missing.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from mtl_keras._tensorflow import import_tensorflow

if TYPE_CHECKING:
    import tensorflow as tf


def _tf(purpose: str):
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"{purpose}: tf.distribute strategies train models of the TensorFlow backend, and Keras runs "
            f"on {backend} here (KERAS_BACKEND={backend}). Run with KERAS_BACKEND=tensorflow, or, in Python "
            "on JAX, split meta-batches over devices with keras.distribution.DataParallel "
            "(docs/guides/distributed.md)."
        )
    return import_tensorflow(f"{purpose} (tf.distribute)")


#: Names `make_strategy` takes.
STRATEGIES = ("none", "mirrored", "multi-worker")


def configure_logical_cpus(count: int) -> None:
    """Split the (first) physical CPU into ``count`` logical devices.

    Raises:
        ValueError: ``count`` < 1, TensorFlow is already initialised (devices can
            only be configured before the first operation), or Keras runs on another backend.
    """
    count = int(count)
    if count < 1:
        raise ValueError(f"logical CPU devices must be at least 1, got {count}.")
    tf = _tf("configure_logical_cpus")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:
        raise ValueError(
            f"Cannot split the CPU into {count} logical devices: TensorFlow is already initialised ({err}). "
            "Configure devices at the very start of the program."
        ) from err


def make_strategy(name: str | None, devices: list[str] | None = None) -> tf.distribute.Strategy | None:
    """The strategy called ``name``, or None for ``"none"`` / None (TensorFlow's default).

    Args:
        name: ``"none"``, ``"mirrored"`` (one machine, several devices) or
            ``"multi-worker"`` (several processes or hosts; needs ``TF_CONFIG``).
        devices: for ``"mirrored"``, the devices (e.g. ``["/gpu:0", "/gpu:1"]``);
            default every GPU, or every logical CPU device when there is no GPU.

    Raises:
        ValueError: an unknown name, ``devices`` with another strategy,
            ``"multi-worker"`` without a valid ``TF_CONFIG``, or a strategy on another Keras
            backend than TensorFlow.
        ImportError: a strategy is asked for and TensorFlow is not installed.
    """
    if name in (None, "none"):
        if devices:
            raise ValueError("--devices needs --strategy mirrored.")
        return None
    if name == "mirrored":
        tf = _tf("--strategy mirrored")
        if not devices:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi-worker":
        if devices:
            raise ValueError("--devices needs --strategy mirrored (multi-worker uses each worker's GPUs).")
        _check_tf_config()
        return _tf("--strategy multi-worker").distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; choose one of {list(STRATEGIES)}.")


def _check_tf_config() -> dict:
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "--strategy multi-worker needs the TF_CONFIG environment variable naming the cluster and this "
            'worker, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' (see docs/distributed.md).'
        )
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"TF_CONFIG is not valid ({err!r}): {text}") from None
    if not 0 <= index < len(workers):
        raise ValueError(
            f"TF_CONFIG task index {index} is outside the {len(workers)} workers of the cluster."
        )
    return config


def worker_index(strategy: tf.distribute.Strategy | None) -> int:
    """This process' worker index under a multi-worker strategy (0 = the chief), else 0."""
    if strategy is None:
        return 0
    tf = sys.modules.get("tensorflow")  # a strategy was made by TensorFlow: it is imported
    if tf is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 0
    resolver = strategy.cluster_resolver
    return int(getattr(resolver, "task_id", 0) or 0)


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """True unless this is a non-chief worker of a multi-worker strategy."""
    return worker_index(strategy) == 0
