"""`PretrainModel`'s steps are compiled by default on JAX, its augmentation included.

Keras's random affine image layers (translation, zoom, rotation, ...) say they do not support
``jit_compile`` (TensorFlow's XLA), so Keras ran a JAX model that holds them op by op: the
pretraining step was about 8× slower than compiled. On JAX they compile under ``jax.jit``.
"""

import keras
import numpy as np
import pytest

from mtl_keras import PretrainModel, resnet12
from mtl_keras.data.augment import pretrain_augmentation

#: Backend-agnostic: also run in the second pytest pass, on JAX (conftest.py).
pytestmark = pytest.mark.backends


def _model(augmentation=True):
    keras.utils.set_random_seed(7)
    model = PretrainModel(
        resnet12((16, 16, 1), widths=(4, 4, 4, 4)),
        num_classes=5,
        augmentation=pretrain_augmentation(seed=3, flip=True) if augmentation else None,
    )
    return model


def _compile(model, **kwargs):
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )


def _data():
    rng = np.random.default_rng(0)
    return rng.random((24, 16, 16, 1), dtype=np.float32), rng.integers(0, 5, 24)


def test_pretraining_with_augmentation_is_compiled_on_jax_by_default():
    model = _model()
    flags = [layer.supports_jit for layer in model.augmentation.layers]
    _compile(model)
    if keras.backend.backend() == "jax":
        assert model.jit_compile is True
    # Keras's own choice is kept elsewhere (TensorFlow on a CPU: no XLA), and an explicit False holds.
    other = _model()
    _compile(other, jit_compile=False)
    assert other.jit_compile is False
    # The layers' own flag is left as Keras set it.
    assert [layer.supports_jit for layer in model.augmentation.layers] == flags
    assert not all(flags)


def test_compiled_augmented_steps_train_as_the_eager_ones():
    """Same initial weights and seeds: two compiled steps (augmentation drawn inside the compiled
    step, a new draw each step) give the weights of two eager steps."""
    x, y = _data()
    weights = {}
    for eager in (False, True):
        model = _model()
        _compile(model, run_eagerly=eager)
        model.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
        weights[eager] = [np.asarray(v) for v in model.trainable_variables]
    for compiled, eager in zip(weights[False], weights[True]):
        np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)
