import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import resnet12, set_phase
from mtl_keras.layers import conv as conv_module
from mtl_keras.layers import phi_weights
from mtl_keras.layers.conv import conv2d, set_filter_gradient, swapped_filter_gradient
from tests.helpers import randomise_backbone


@pytest.fixture(autouse=True)
def _default_mode():
    yield
    set_filter_gradient("auto")


def _native_filter_gradient(x, g, kernel_size):
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x,
        filter_sizes=[*kernel_size, x.shape[-1], g.shape[-1]],
        out_backprop=g,
        strides=[1, 1, 1, 1],
        padding="SAME",
    )


@pytest.mark.parametrize(
    "shape, kernel_size",
    [
        ((3, 4, 4, 5), (3, 3)),
        ((2, 7, 5, 3), (3, 3)),
        ((2, 6, 6, 4), (5, 5)),
        ((2, 4, 4, 3), (1, 1)),
        ((2, 5, 8, 2), (3, 5)),
    ],
)
def test_swapped_filter_gradient_equals_tensorflows(shape, kernel_size):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape), tf.float32)
    g = tf.constant(rng.normal(size=(*shape[:3], 6)), tf.float32)
    got = swapped_filter_gradient(x, g, kernel_size)
    want = _native_filter_gradient(x, g, kernel_size)
    assert got.shape == (*kernel_size, shape[-1], 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_large_batches_are_summed_in_slices(monkeypatch):
    monkeypatch.setitem(conv_module.SWAPPED_SLICE_PIXELS, "float32", 3 * 16)  # ≤ 3 images of 4×4
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(8, 4, 4, 3)), tf.float32)
    g = tf.constant(rng.normal(size=(8, 4, 4, 5)), tf.float32)
    calls = []
    original = tf.nn.conv2d
    monkeypatch.setattr(tf.nn, "conv2d", lambda *a, **k: calls.append(1) or original(*a, **k))
    got = swapped_filter_gradient(x, g, (3, 3))
    assert len(calls) == 3  # 8 images: three equal slices of 3, 3 and 2
    np.testing.assert_allclose(got, _native_filter_gradient(x, g, (3, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_swapped_conv_has_the_same_value_and_gradients(jit):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(3, 6, 6, 4)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 4, 5)), tf.float32)
    bias = tf.constant(rng.normal(size=(5,)), tf.float32)
    target = tf.constant(rng.normal(size=(3, 6, 6, 5)), tf.float32)

    def value_and_grads(mode):
        set_filter_gradient(mode)

        @tf.function(jit_compile=jit)
        def run(x, kernel, bias):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel, bias])
                y = conv2d(x, kernel, bias)
                loss = tf.reduce_sum((y - target) ** 2)
            return y, tape.gradient(loss, [x, kernel, bias])

        return run(x, kernel, bias)

    y_native, grads_native = value_and_grads("native")
    y_swapped, grads_swapped = value_and_grads("swapped")
    np.testing.assert_allclose(y_swapped, y_native, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_swapped, grads_native):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "dtype, side, kernel, strides, padding, mode, expected",
    [
        ("bfloat16", 8, 3, 1, "same", "auto", True),
        ("bfloat16", 10, 3, 1, "same", "auto", True),  # ResNet-12's last block at 84×84 input
        ("bfloat16", 16, 3, 1, "same", "auto", False),  # TF's kernel is faster on larger maps
        ("bfloat16", 12, 3, 1, "same", "auto", False),
        ("float32", 4, 3, 1, "same", "auto", True),
        ("float32", 8, 3, 1, "same", "auto", False),  # float32 only at 4×4
        ("bfloat16", 8, 3, 2, "same", "auto", False),
        ("bfloat16", 8, 3, 1, "valid", "auto", False),
        ("bfloat16", 8, 2, 1, "same", "swapped", False),  # even kernels pad asymmetrically
        ("float32", 32, 3, 1, "same", "swapped", True),
        ("bfloat16", 8, 3, 1, "same", "native", False),
    ],
)
def test_where_the_swapped_gradient_is_used(dtype, side, kernel, strides, padding, mode, expected):
    set_filter_gradient(mode)
    x = tf.zeros((1, side, side, 2), dtype)
    w = tf.zeros((kernel, kernel, 2, 3), dtype)
    assert conv_module._swapped(x, w, (strides, strides), padding) is expected


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="auto"):
        set_filter_gradient("fast")


@pytest.mark.parametrize("mode", ["native", "swapped"])
def test_residual_block_end_is_exact_in_a_graph(mode):
    """leaky_relu(conv + bias + residual) in a tf.function equals eager (benchmarks/probes/tf_fusion_bug.py:
    with tf.nn.bias_add, TF 2.21's CPU graph optimizer fuses this pattern into wrong values)."""
    rng = np.random.default_rng(4)
    x, residual = (tf.constant(rng.normal(size=(2, 6, 6, 4)), tf.float32) for _ in range(2))
    kernel = tf.constant(rng.normal(size=(3, 3, 4, 4)), tf.float32)
    bias = tf.constant(rng.normal(size=(4,)), tf.float32)
    set_filter_gradient(mode)

    def block_end(x, kernel, bias, residual):
        return tf.nn.leaky_relu(conv2d(x, kernel, bias) + residual, 0.1)

    eager = block_end(x, kernel, bias, residual)
    graph = tf.function(block_end)(x, kernel, bias, residual)
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)


def test_backbone_gradients_agree_under_mixed_bfloat16(monkeypatch):
    """Φ gradients of a bf16 ResNet-12 with the swapped filter gradient ≈ TF's (bf16 rounding)."""
    calls = []
    original = conv_module.swapped_filter_gradient

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(conv_module, "swapped_filter_gradient", counting)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        rng = np.random.default_rng(0)
        backbone = set_phase(randomise_backbone(resnet12((16, 16, 3), widths=(8, 8, 16, 16)), rng), "meta")
        x = rng.random((6, 16, 16, 3)).astype("float32")
        phi = phi_weights(backbone)

        def grads(mode):
            set_filter_gradient(mode)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.cast(backbone(x, training=False), tf.float32) ** 2)
            return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, phi)], 0)

        native = grads("native")
        assert not calls
        auto = grads("auto")
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    # maps 16, 8, 4, 2: the three convolutions of blocks 2-4 use it, block 1's do not
    assert len(calls) == 9
    assert float(tf.norm(auto - native) / tf.norm(native)) < 2e-2
