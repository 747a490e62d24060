import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import ScaleShiftDepthwiseConv2D, set_phase
from mtl_keras.layers import phi_weights, theta_weights
from tests.helpers import run_layer_test


def _x(shape=(2, 8, 8, 3), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.backends
@pytest.mark.parametrize("phase", ["pretrain", "meta"])
def test_layer_contract(tmp_path, phase):
    layer = run_layer_test(
        ScaleShiftDepthwiseConv2D,
        dict(kernel_size=3, depth_multiplier=2, activation="relu6", phase=phase),
        _x(),
        (2, 8, 8, 6),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2,
        tmp_path=tmp_path,
    )
    names = {w.name for w in layer.trainable_weights}
    assert names == ({"kernel", "bias"} if phase == "pretrain" else {"scale", "shift"})
    assert layer.scale.shape == (1, 1, 3, 2) and layer.shift.shape == (6,)


@pytest.mark.backends
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding="same"),  # MobileNetV2
        dict(kernel_size=3, strides=2, padding="valid", use_bias=False),
        dict(kernel_size=5, depth_multiplier=2, padding="same", activation="swish"),
        dict(kernel_size=3, dilation_rate=2, padding="same"),
    ],
)
def test_from_depthwise_conv2d_is_exact_at_identity_phi(kwargs):
    x = _x((2, 9, 9, 4))
    conv = keras.layers.DepthwiseConv2D(**kwargs, bias_initializer="random_normal")
    expected = np.asarray(conv(x))
    ss = ScaleShiftDepthwiseConv2D.from_depthwise_conv2d(conv)
    np.testing.assert_array_equal(np.asarray(ss(x)), expected)
    assert ss.compute_output_shape(x.shape) == expected.shape
    assert ss.phase == "meta" and ss.name == "ss_" + conv.name


@pytest.mark.backends
def test_output_is_the_scaled_kernel_plus_shift_per_output_channel():
    """Output channel c*M + m: input channel c, multiplier m (scale[0, 0, c, m], shift[c*M + m])."""
    x = _x((2, 6, 6, 3))
    ss = ScaleShiftDepthwiseConv2D(3, depth_multiplier=2, padding="valid")
    ss.build(x.shape)
    rng = np.random.default_rng(1)
    ss.scale.assign(rng.uniform(0.5, 1.5, ss.scale.shape).astype("float32"))
    ss.shift.assign(rng.normal(size=6).astype("float32"))
    ss.bias.assign(rng.normal(size=6).astype("float32"))
    expected = tf.nn.depthwise_conv2d(x, ss.kernel * ss.scale, [1, 1, 1, 1], "VALID") + ss.bias + ss.shift
    np.testing.assert_allclose(ss(x), expected, atol=1e-5)


@pytest.mark.backends
def test_set_phase_trains_only_phi_of_depthwise_layers():
    inputs = keras.Input((8, 8, 3))
    x = ScaleShiftDepthwiseConv2D(3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, x)
    set_phase(model, "meta")
    phi = phi_weights(model)
    assert len(phi) == 2
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in phi}
    assert len(theta_weights(model)) == 2 + 4  # kernel, bias, BN γ β μ σ²
    set_phase(model, "pretrain")
    assert {w.name for w in model.layers[1].trainable_weights} == {"kernel", "bias"}


@pytest.mark.backends
def test_from_depthwise_conv2d_rejects_channels_first():
    conv = keras.layers.DepthwiseConv2D(3, data_format="channels_first")
    conv.build((None, 3, 8, 8))
    with pytest.raises(ValueError, match="data_format=channels_first"):
        ScaleShiftDepthwiseConv2D.from_depthwise_conv2d(conv)
