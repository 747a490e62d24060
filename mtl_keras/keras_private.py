"""Every use of Keras's and TensorFlow's private API in mtl_keras, in one module.

Keras 3 and `tf.distribute` offer no public way to do the few things below, so they are
done here and nowhere else; `tests/unit/test_keras_private.py` fails as soon as one of the hooks
relied on disappears or is renamed (an upstream rename would otherwise disable an override
silently). Tested with Keras 3.15 and TensorFlow 2.21 (``setup.py``'s lower bounds).

* `SkipSymbolicBuildWhenBuilt`, `SymbolicBuildFromZeros`: overrides of
  ``TensorFlowTrainer._maybe_symbolic_build``, which ``fit`` calls before training; under a
  `tf.distribute` strategy it peeks one batch of the distributed dataset to build the model —
  a batch that is never trained, and that fails to reduce under
  ``MultiWorkerMirroredStrategy`` (Keras 3.15).
* `set_initial_epoch`: ``fit`` starts at ``model._initial_epoch`` when set (what Keras's own
  ``BackupAndRestore`` sets); `mtl_keras.callbacks.ResumableCheckpoint` resumes with it.
* `all_layers`, `tracked_layers`, `child_layers`: ``Layer._flatten_layers`` / ``Layer._layers``, the nested
  layers of a layer that is not a ``Functional``/``Sequential`` model (``.layers`` covers only
  those).
* `in_multi_worker_mode`: ``MultiWorkerMirroredStrategy.extended._in_multi_worker_mode``.
* `has_distribute_strategy`: ``model._distribute_strategy``, set when the model was built in
  a strategy's scope.
* `state_sharding_spec`: ``JAXTrainer._get_state_sharding_spec``, the layouts of a JAX model's
  training state, which Keras's JAX trainer gives ``jax.jit`` as ``out_shardings`` under a
  `keras.distribution` (the JAX `MetaTransferModel` step does the same).
"""

from __future__ import annotations

import sys

import keras


def all_layers(layer: keras.layers.Layer) -> list:
    """``layer`` and every layer nested in it, each once (``Layer._flatten_layers``)."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def tracked_layers(layer) -> list:
    """The sub-layers Keras tracks as direct children of ``layer`` (``Layer._layers``)."""
    return list(getattr(layer, "_layers", None) or [])


def child_layers(layer) -> list:
    """The direct sub-layers of ``layer``: ``.layers`` of a model, else `tracked_layers`."""
    return list(getattr(layer, "layers", None) or tracked_layers(layer))


def set_initial_epoch(model: keras.Model, epoch: int | None) -> None:
    """Make the running (or next) ``fit`` start at ``epoch`` (None: at its own ``initial_epoch``)."""
    model._initial_epoch = None if epoch is None else int(epoch)


def in_multi_worker_mode(strategy) -> bool:
    """Whether a `tf.distribute.MultiWorkerMirroredStrategy` spans several workers."""
    tf = sys.modules.get("tensorflow")  # no strategy exists unless TensorFlow was imported
    if tf is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    hook = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return True if hook is None else bool(hook())


def has_distribute_strategy(model: keras.Model) -> bool:
    """Whether ``model`` was created in a `tf.distribute` strategy's scope."""
    return getattr(model, "_distribute_strategy", None) is not None


def state_sharding_spec(model: keras.Model) -> tuple:
    """The shardings of a JAX model's training state, read from its variables' current values.

    ``JAXTrainer._get_state_sharding_spec``: ``(trainable, non_trainable, optimizer, metrics)``,
    each a list of ``jax.sharding.Sharding`` in the order of ``model.trainable_variables``,
    ``model.non_trainable_variables``, ``model.optimizer.variables`` and ``model.metrics_variables``.
    Keras warns here when local and distributed variables are mixed (a model built before
    ``keras.distribution.set_distribution``).
    """
    return model._get_state_sharding_spec()


class SkipSymbolicBuildWhenBuilt:
    """Mixin for a model built in ``__init__`` and ``compile``: no batch is peeked to build it.

    The model class defines ``_built_for_training()`` (True when nothing is left to build).
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._built_for_training():
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


class SymbolicBuildFromZeros:
    """Mixin: under a strategy, build from a zero batch of ``_symbolic_build_batch()`` instead of
    peeking a batch of the (distributed) dataset."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and has_distribute_strategy(self):
            iterator, data_batch = None, self._symbolic_build_batch()
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
