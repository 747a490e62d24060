import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import ScaleShiftConv2D, set_phase
from mtl_keras.layers import phi_weights, theta_weights
from tests.helpers import run_layer_test


def _x(shape=(2, 8, 8, 3), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.backends
@pytest.mark.parametrize("phase,trainable", [("pretrain", 2), ("meta", 2)])
def test_layer_contract(tmp_path, phase, trainable):
    layer = run_layer_test(
        ScaleShiftConv2D,
        dict(filters=4, kernel_size=3, padding="same", phase=phase),
        _x(),
        (2, 8, 8, 4),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=2,
        tmp_path=tmp_path,
    )
    names = {w.name for w in layer.trainable_weights}
    assert names == ({"kernel", "bias"} if phase == "pretrain" else {"scale", "shift"})


@pytest.mark.backends
def test_identity_phi_equals_conv2d():
    x = _x()
    conv = keras.layers.Conv2D(5, 3, strides=2, padding="same")
    expected = conv(x)
    ss = ScaleShiftConv2D.from_conv2d(conv)
    np.testing.assert_allclose(ss(x), expected, atol=1e-5)
    assert ss.phase == "meta"
    np.testing.assert_array_equal(ss.scale.numpy(), 1.0)
    np.testing.assert_array_equal(ss.shift.numpy(), 0.0)


@pytest.mark.backends
def test_output_is_scaled_kernel_plus_shift():
    x = _x()
    ss = ScaleShiftConv2D(4, 3, padding="valid")
    ss.build(x.shape)
    rng = np.random.default_rng(1)
    ss.scale.assign(rng.uniform(0.5, 1.5, ss.scale.shape).astype("float32"))
    ss.shift.assign(rng.normal(size=4).astype("float32"))
    ss.bias.assign(rng.normal(size=4).astype("float32"))
    expected = tf.nn.conv2d(x, ss.kernel * ss.scale, 1, "VALID") + ss.bias + ss.shift
    np.testing.assert_allclose(ss(x), expected, atol=1e-5)
    assert ss(x).shape == ss.compute_output_shape(x.shape)


def test_meta_phase_gradients_reach_phi_not_theta():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            ScaleShiftConv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
        ]
    )
    set_phase(model, "meta")
    phi = phi_weights(model)
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in phi}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(_x(), training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    # Θ (kernel, bias, BN) is not trainable and gets no update from an optimizer step.
    theta_before = [v.numpy().copy() for v in theta_weights(model)]
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_weights))
    for before, v in zip(theta_before, theta_weights(model)):
        np.testing.assert_array_equal(before, v.numpy())


@pytest.mark.backends
def test_pretrain_phase_trains_theta_only():
    model = keras.Sequential([keras.Input((8, 8, 3)), ScaleShiftConv2D(4, 3)])
    set_phase(model, "meta")
    set_phase(model, "pretrain")
    assert {w.name for w in model.trainable_weights} == {"kernel", "bias"}


@pytest.mark.backends
def test_phase_survives_keras_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 3)), ScaleShiftConv2D(4, 3)])
    set_phase(model, "meta")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert {w.name for w in loaded.trainable_weights} == {"scale", "shift"}


@pytest.mark.backends
def test_bad_phase_is_rejected():
    with pytest.raises(ValueError, match="phase"):
        ScaleShiftConv2D(4, phase="finetune")


@pytest.mark.backends
def test_from_conv2d_rejects_unbuilt_channels_first_and_subclasses():
    with pytest.raises(ValueError, match="not built"):
        ScaleShiftConv2D.from_conv2d(keras.layers.Conv2D(4, 3))
    conv = keras.layers.Conv2D(4, 3, data_format="channels_first")
    conv.build((None, 3, 8, 8))
    with pytest.raises(ValueError, match="data_format=channels_first"):
        ScaleShiftConv2D.from_conv2d(conv)

    class MyConv(keras.layers.Conv2D):
        pass

    mine = MyConv(4, 3)
    mine(_x())
    with pytest.raises(ValueError, match="a MyConv, not a keras.layers.Conv2D"):
        ScaleShiftConv2D.from_conv2d(mine)


@pytest.mark.backends
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(filters=6, kernel_size=3, activation="relu"),  # VGG: activation fused in the conv
        dict(filters=6, kernel_size=1, activation="swish"),  # EfficientNet's squeeze-excite
        dict(filters=6, kernel_size=1, activation="sigmoid", use_bias=False),
        dict(filters=6, kernel_size=3, dilation_rate=2, padding="same"),
        dict(filters=6, kernel_size=3, dilation_rate=(2, 1), padding="valid"),
        dict(filters=6, kernel_size=3, groups=3, padding="same"),  # ResNeXt / RegNet
        dict(filters=6, kernel_size=7, groups=6, padding="same"),  # ConvNeXt's depthwise conv
        dict(filters=6, kernel_size=3, strides=2, groups=2, padding="valid"),
    ],
)
def test_from_conv2d_converts_activation_dilation_and_groups_exactly(kwargs):
    x = _x((2, 9, 9, 6))
    conv = keras.layers.Conv2D(**kwargs)
    expected = np.asarray(conv(x))
    ss = ScaleShiftConv2D.from_conv2d(conv)
    np.testing.assert_array_equal(np.asarray(ss(x)), expected)
    assert ss.compute_output_shape(x.shape) == expected.shape
    assert ss.scale.shape == (1, 1, 6 // conv.groups, 6)
    clone = ScaleShiftConv2D.from_config(ss.get_config())
    clone.build(x.shape)
    clone.set_weights(ss.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), expected)


@pytest.mark.parametrize("mode", ["swapped", "auto"])
@pytest.mark.parametrize("kwargs", [dict(groups=2), dict(dilation_rate=2)])
def test_grouped_and_dilated_kernel_gradients_equal_keras(mode, kwargs):
    """The swapped filter gradient (`conv.py`) is for plain convolutions only."""
    from mtl_keras.tensorflow_backend.gradient_plan import set_filter_gradient

    x = tf.constant(_x((2, 4, 4, 4)))
    conv = keras.layers.Conv2D(4, 3, padding="same", **kwargs)
    conv(x)
    ss = ScaleShiftConv2D.from_conv2d(conv, phase="pretrain")
    set_filter_gradient(mode)
    try:
        grads = []
        for layer in (conv, ss):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x) ** 2)
            grads.append(tape.gradient(loss, layer.kernel))
    finally:
        set_filter_gradient("auto")
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-5)


@pytest.mark.backends
def test_layer_contract_with_groups_dilation_and_activation(tmp_path):
    run_layer_test(
        ScaleShiftConv2D,
        dict(filters=4, kernel_size=3, groups=2, dilation_rate=2, activation="relu", phase="meta"),
        _x((2, 8, 8, 4)),
        (2, 8, 8, 4),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2,
        tmp_path=tmp_path,
    )


def test_mixed_bfloat16_scales_the_kernel_in_float32_before_casting():
    """A meta-learned scale of 1.003 must not round to bfloat16's 1.0 before it multiplies Θ."""
    x = _x()
    layer = ScaleShiftConv2D(4, 3, dtype="mixed_bfloat16")
    layer.build(x.shape)
    layer.kernel.assign(np.full(layer.kernel.shape, 100.0, "float32"))
    base = layer(x)
    layer.scale.assign(np.full(layer.scale.shape, 1.003, "float32"))
    scaled = layer(x)
    assert scaled.dtype == "bfloat16" and layer.scale.dtype == "float32"
    assert not np.allclose(np.asarray(base, "float32"), np.asarray(scaled, "float32"))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.cast(layer(x), tf.float32))
    grads = tape.gradient(y, layer.phi)
    assert all(g.dtype == tf.float32 and np.all(np.isfinite(g.numpy())) for g in grads)
