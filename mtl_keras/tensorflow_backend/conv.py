"""TensorFlow kernels of `mtl_keras.layers.conv.conv2d`: gradients as forward convolutions.

Imported only on the TensorFlow backend (the layers import no TensorFlow). Why and where these
pay: the docstring of `mtl_keras.layers.conv` and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from mtl_keras.tensorflow_backend.gradient_plan import FILTER_METHODS, SWAPPED_SLICE_PIXELS


def swapped_filter_gradient(inputs, out_grad, kernel_size):
    """``∂L/∂W`` of a stride-1 ``"same"`` convolution as a forward convolution.

    A batch of more than ``SWAPPED_SLICE_PIXELS[dtype]`` images × pixels is split into equal
    slices, one swapped convolution each, summed in float32.

    Args:
        inputs: ``(N, H, W, Cin)``, the convolution's input.
        out_grad: ``(N, H, W, Cout)``, ``∂L/∂output``.
        kernel_size: ``(kh, kw)``, both odd.

    Returns:
        ``(kh, kw, Cin, Cout)`` in the dtype of ``inputs`` (accumulated in float32 by oneDNN).
    """
    n, h, w = inputs.shape[0], inputs.shape[1], inputs.shape[2]
    limit = SWAPPED_SLICE_PIXELS.get(tf.as_dtype(inputs.dtype).name)
    if limit and None not in (n, h, w) and n * h * w > limit:
        slices = -(-n * h * w // limit)
        size = -(-n // slices)
        parts = [
            tf.cast(
                _swapped_conv(inputs[i : i + size], out_grad[i : i + size], kernel_size),
                tf.float32,
            )
            for i in range(0, n, size)
        ]
        return tf.cast(tf.add_n(parts), inputs.dtype)
    return _swapped_conv(inputs, out_grad, kernel_size)


def swapped_input_gradient(out_grad, kernel):
    """``∂L/∂X`` of a stride-1 ``"same"`` convolution as a forward convolution.

    ``∂X = conv(∂Y, rot180(W)ᵀ)``: the kernel's taps reversed and its channel axes swapped.

    Args:
        out_grad: ``(N, H, W, Cout)``, ``∂L/∂output``.
        kernel: ``(kh, kw, Cin, Cout)``, both kh and kw odd.

    Returns:
        ``(N, H, W, Cin)`` in the dtype of ``out_grad``.
    """
    flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1]), [0, 1, 3, 2])  # (kh, kw, Cout, Cin)
    return tf.nn.conv2d(out_grad, flipped, strides=1, padding="SAME")


def shifted_matmul_filter_gradient(inputs, out_grad, kernel_size):
    """``∂L/∂W`` of a stride-1 ``"same"`` convolution as ``kh·kw`` matrix products.

    ``∂W[i, j] = X_(i, j)ᵀ · G``: for each kernel tap, the zero-padded input shifted by the tap,
    as an ``(N·H·W, Cin)`` matrix, times ``∂L/∂output`` as an ``(N·H·W, Cout)`` one. On AMX
    CPUs oneDNN runs these products on AMX tiles, faster than its filter-gradient kernel on small
    maps (``benchmarks/RESULTS.md``).

    Args:
        inputs: ``(N, H, W, Cin)``, the convolution's input.
        out_grad: ``(N, H, W, Cout)``, ``∂L/∂output``.
        kernel_size: ``(kh, kw)``, both odd.

    Returns:
        ``(kh, kw, Cin, Cout)`` in the dtype of ``inputs``.
    """
    kh, kw = kernel_size
    h, w, cin, cout = inputs.shape[1], inputs.shape[2], inputs.shape[3], out_grad.shape[3]
    padded = tf.pad(inputs, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
    grads = tf.reshape(out_grad, (-1, cout))
    taps = [
        tf.matmul(tf.reshape(padded[:, i : i + h, j : j + w, :], (-1, cin)), grads, transpose_a=True)
        for i in range(kh)
        for j in range(kw)
    ]
    return tf.reshape(tf.stack(taps), (kh, kw, cin, cout))


def _swapped_conv(inputs, out_grad, kernel_size):
    kh, kw = kernel_size
    x_t = tf.transpose(inputs, [3, 1, 2, 0])  # (Cin, H, W, N): channels as batch, batch as channels
    g_t = tf.transpose(out_grad, [1, 2, 0, 3])  # (H, W, N, Cout): the "filter"
    pad = [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]]
    grad = tf.nn.conv2d(x_t, g_t, strides=1, padding=pad)  # (Cin, kh, kw, Cout)
    return tf.transpose(grad, [1, 2, 0, 3])


@functools.cache
def _conv_with_forward_gradients(filter_method: str, swap_input: bool):
    """A stride-1 ``"same"`` convolution plus bias whose filter gradient is ``filter_method``'s
    (``"native"``, ``"swapped"``: `swapped_filter_gradient`, ``"matmul"``:
    `shifted_matmul_filter_gradient`) and whose input gradient is a forward convolution
    (`swapped_input_gradient`) if ``swap_input``."""

    @tf.custom_gradient
    def conv(inputs, kernel, bias):
        outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME") + bias  # not bias_add: see conv2d

        def grad(out_grad):
            if swap_input:
                with tf.name_scope("swapped_input_gradient"):
                    d_inputs = swapped_input_gradient(out_grad, kernel)
            else:
                d_inputs = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(inputs),
                    filter=kernel,
                    out_backprop=out_grad,
                    strides=[1, 1, 1, 1],
                    padding="SAME",
                )
            if filter_method == "swapped":
                with tf.name_scope("swapped_filter_gradient"):
                    d_kernel = swapped_filter_gradient(inputs, out_grad, kernel.shape[:2])
            elif filter_method == "matmul":
                with tf.name_scope("shifted_matmul_filter_gradient"):
                    d_kernel = shifted_matmul_filter_gradient(inputs, out_grad, kernel.shape[:2])
            else:
                d_kernel = tf.raw_ops.Conv2DBackpropFilter(
                    input=inputs,
                    filter_sizes=tf.shape(kernel),
                    out_backprop=out_grad,
                    strides=[1, 1, 1, 1],
                    padding="SAME",
                )
            d_bias = tf.raw_ops.BiasAddGrad(out_backprop=out_grad)
            return d_inputs, d_kernel, d_bias

        return outputs, grad

    return conv


def conv_with_forward_gradients(filter_method, swap_input: bool):
    """The convolution of `_conv_with_forward_gradients` (made once per combination, cached).

    Args:
        filter_method: one of `mtl_keras.tensorflow_backend.gradient_plan.FILTER_METHODS`, or a bool (True:
            ``"swapped"``, False: ``"native"``).
        swap_input: whether the input gradient is a forward convolution.
    """
    if isinstance(filter_method, bool):
        filter_method = "swapped" if filter_method else "native"
    if filter_method not in FILTER_METHODS:
        raise ValueError(f"filter_method must be one of {FILTER_METHODS}, got {filter_method!r}.")
    if filter_method == "native" and not swap_input:
        raise ValueError(
            "conv_with_forward_gradients: TensorFlow's kernels for both gradients is plain tf.nn.conv2d; "
            "change the filter gradient, the input gradient or both."
        )
    return _conv_with_forward_gradients(filter_method, bool(swap_input))
