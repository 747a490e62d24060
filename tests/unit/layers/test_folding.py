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


def test_folds_dilated_and_grouped_convolutions_but_not_one_with_an_activation():
    from mtl_keras import ScaleShiftConv2D

    inputs = keras.Input((8, 8, 4))
    x = ScaleShiftConv2D(4, 3, groups=2, dilation_rate=2, name="grouped_dilated")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", groups=4, dilation_rate=(1, 2), name="plain")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = ScaleShiftConv2D(4, 3, activation="relu", name="activated")(x)  # BN(relu(conv)): not foldable
    x = keras.layers.BatchNormalization(name="bn3")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(3)
    randomise_backbone(model, rng)
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    view = fold_batch_norm(model)
    norms = [layer.name for layer in view.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms == ["bn3"]
    np.testing.assert_allclose(view(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_folds_depthwise_convolutions_and_keeps_gradients():
    from mtl_keras import ScaleShiftDepthwiseConv2D

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="plain_dw")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = ScaleShiftDepthwiseConv2D(3, strides=2, depth_multiplier=2, use_bias=False, name="ss_dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = ScaleShiftDepthwiseConv2D(3, activation="relu6", name="activated_dw")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    model = set_phase(keras.Model(inputs, x), "meta")
    rng = np.random.default_rng(4)
    randomise_backbone(model, rng)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    view = fold_batch_norm(model)
    norms = [layer.name for layer in view.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms == ["bn3"]
    np.testing.assert_allclose(view(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)
    phi = phi_weights(model)
    with tf.GradientTape(persistent=True) as tape:
        a = tf.reduce_sum(model(x, training=False) ** 2)
        b = tf.reduce_sum(view(x, training=False) ** 2)
    for ga, gb in zip(tape.gradient(a, phi), tape.gradient(b, phi)):
        np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-5 * float(tf.reduce_max(tf.abs(ga))))
