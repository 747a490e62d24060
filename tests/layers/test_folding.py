import keras
import numpy as np
import tensorflow as tf

from mtl_keras import resnet12, set_phase
from mtl_keras.layers import fold_batch_norm, phi_weights
from tests.helpers import randomise_backbone


def _randomised_backbone(seed=0):
    rng = np.random.default_rng(seed)
    backbone = randomise_backbone(resnet12((16, 16, 3), widths=(4, 8, 8, 8)), rng)
    return set_phase(backbone, "meta"), rng.random((3, 16, 16, 3)).astype("float32")


def test_folded_view_computes_the_same_function_and_gradients():
    backbone, x = _randomised_backbone()
    view = fold_batch_norm(backbone)
    assert view is not backbone
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in view.layers)
    np.testing.assert_allclose(view(x, training=False), backbone(x, training=False), rtol=1e-5, atol=1e-5)
    phi = phi_weights(backbone)
    with tf.GradientTape(persistent=True) as tape:
        a = tf.reduce_sum(backbone(x, training=False) ** 2)
        b = tf.reduce_sum(view(x, training=False) ** 2)
    for ga, gb in zip(tape.gradient(a, phi), tape.gradient(b, phi)):
        np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-5 * float(tf.reduce_max(tf.abs(ga))))


def test_folded_view_shares_every_variable():
    backbone, x = _randomised_backbone()
    view = fold_batch_norm(backbone)
    assert {id(v) for v in view.trainable_weights} == {id(v) for v in backbone.trainable_weights}
    before = view(x).numpy()
    for v in phi_weights(backbone):
        v.assign(v.numpy() * 1.1)
    after, expected = view(x).numpy(), backbone(x, training=False).numpy()
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)


def test_model_without_batch_norm_is_returned_unchanged():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    assert fold_batch_norm(model) is model
