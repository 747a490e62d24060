"""`mtl_keras.keras_private`: the hooks it relies on exist, and nothing else uses private API."""

import inspect
import pathlib
import re
import sys

import keras
import pytest
import tensorflow as tf

from mtl_keras import keras_private
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.models.pretrain import PretrainModel


def _tf_trainer():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer  # the class we override

    return TensorFlowTrainer


def test_fit_still_calls_the_symbolic_build_hook_we_override():
    trainer = _tf_trainer()
    assert callable(getattr(trainer, "_maybe_symbolic_build", None))
    assert "self._maybe_symbolic_build(" in inspect.getsource(trainer.fit)
    params = inspect.signature(trainer._maybe_symbolic_build).parameters
    assert {"iterator", "data_batch"} <= set(params)


def test_fit_still_starts_at_initial_epoch_attribute():
    assert "self._initial_epoch" in inspect.getsource(_tf_trainer().fit)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    keras_private.set_initial_epoch(model, 2)
    history = model.fit(tf.zeros((4, 2)), tf.zeros((4, 1)), epochs=4, verbose=0)
    assert history.epoch == [2, 3]  # started at epoch 2
    keras_private.set_initial_epoch(model, None)
    assert model.fit(tf.zeros((4, 2)), tf.zeros((4, 1)), epochs=2, verbose=0).epoch == [0, 1]


def test_layer_lists():
    class Outer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.inner = keras.layers.Dense(2)
            self.norm = keras.layers.BatchNormalization()

    outer = Outer()
    assert keras_private.tracked_layers(outer) == [outer.inner, outer.norm]
    assert keras_private.child_layers(outer) == [outer.inner, outer.norm]
    assert keras_private.all_layers(outer) == [outer, outer.inner, outer.norm]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    assert keras_private.child_layers(model) == model.layers


def test_strategy_hooks():
    module = sys.modules[tf.distribute.MultiWorkerMirroredStrategy.__module__]
    assert hasattr(module.CollectiveAllReduceExtended, "_in_multi_worker_mode")
    assert keras_private.in_multi_worker_mode(tf.distribute.get_strategy()) is False
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        scoped = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert not keras_private.has_distribute_strategy(plain)
    assert keras_private.has_distribute_strategy(scoped)


@pytest.mark.parametrize(
    "model, mixin",
    [
        (MetaTransferModel, keras_private.SkipSymbolicBuildWhenBuilt),
        (PretrainModel, keras_private.SymbolicBuildFromZeros),
    ],
)
def test_models_keep_keras_contract(model, mixin):
    """No `fit` override; the one private hook comes from `keras_private`'s mixin."""
    assert "fit" not in vars(model)
    assert model.fit is keras.Model.fit
    assert model._maybe_symbolic_build is mixin._maybe_symbolic_build
    assert model.__mro__.index(mixin) < model.__mro__.index(keras.Model)


#: Private names of Keras / TF that mtl_keras uses: only keras_private.py may mention them.
PRIVATE = re.compile(
    r"[.\"'](_flatten_layers|_layers|_maybe_symbolic_build|_initial_epoch|_in_multi_worker_mode"
    r"|_distribute_strategy|_get_state_sharding_spec)\b|def _maybe_symbolic_build|keras\.src|tensorflow\.python"
)


def test_no_private_api_outside_keras_private():
    root = pathlib.Path(keras_private.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "keras_private.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if PRIVATE.search(code) and not code.lstrip().startswith(("`", '"', "'")):
                offenders.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
