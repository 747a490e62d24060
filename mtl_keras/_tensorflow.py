"""TensorFlow for the parts of mtl_keras that need it, imported on first use. Imports nothing itself.

On the JAX backend ``import mtl_keras`` imports no TensorFlow; the tf.data pipelines, SavedModel
export and `tf.distribute` import it through `import_tensorflow`, which says what to install when
it is missing. Nothing here changes the environment or the process' file descriptors: the
``mtl-keras`` command's start-up filter (`mtl_keras_app.quiet`) can install itself as the importer
(`set_tensorflow_importer`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable

#: Why mtl_keras imports TensorFlow at all: the parts that exist on TensorFlow only.
TENSORFLOW_ONLY = (
    "the tf.data episode and pretraining pipelines (make_episodes, pretrain_dataset), "
    "SavedModel export and tf.distribute strategies are TensorFlow-only"
)

_importer: Callable[[], object] | None = None


def set_tensorflow_importer(importer: Callable[[], object] | None) -> None:
    """Import TensorFlow with ``importer`` (a no-argument callable returning the module) from now on.

    None restores the plain ``import tensorflow``. The ``mtl-keras`` command sets its start-up
    filter here, so that a TensorFlow imported late (on the JAX backend) starts as quietly.
    """
    global _importer
    _importer = importer


def tensorflow_installed() -> bool:
    """Whether ``import tensorflow`` can find TensorFlow (looked up, not imported)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None  # None: an import that is blocked
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def import_tensorflow(purpose: str):
    """TensorFlow, for ``purpose``; imported on first use.

    Args:
        purpose: what needs it, for the error message (e.g. ``"make_episodes' tf.data pipeline"``).

    Returns:
        The ``tensorflow`` module.

    Raises:
        ImportError: TensorFlow is not installed (or cannot be imported); the message names
            ``purpose`` and says to ``pip install tensorflow``.
    """
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        return tf
    try:
        if _importer is not None:
            return _importer()
        return importlib.import_module("tensorflow")
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs TensorFlow, which cannot be imported here ({err}). Install it with "
            f"`pip install tensorflow`: {TENSORFLOW_ONLY}. Models, training and evaluation on "
            "numpy episodes and batches (mtl_keras.data.episode_source, pretrain_source) run on the JAX "
            "backend without it."
        ) from err
