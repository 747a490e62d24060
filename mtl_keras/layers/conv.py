"""`conv2d`: the convolution of `ScaleShiftConv2D`, with cheaper gradients on CPUs.

Every scaled convolution of meta-transfer learning needs its filter gradient (the gradient of
the scale Φ1 is ``Σ_taps Θ ⊙ ∂L/∂(Θ⊙Φ1)``). The bfloat16 filter-gradient kernel that
TensorFlow 2.21's oneDNN path picks (``Conv2DBackpropFilter``) runs at a fraction of the forward
rate, worst on small feature maps (ResNet-12's last two blocks at 32×32 input: 8×8 and 4×4
maps). The same gradient is a *forward* convolution with batch and
channel axes swapped:

    ∂W[i, j, c, d] = Σ_{n, y, x} X[n, y + i, x + j, c] · G[n, y, x, d]
                   = conv(Xᵀ (c, y, x, n), Gᵀ (y, x, n, d))[c, i, j, d]

(Xᵀ zero-padded like the forward pass), which oneDNN's forward kernel runs faster on small
maps: in bfloat16 up to 10×10 (large batches in slices), in float32 at 4×4 only; slower on larger
maps. `conv2d` uses it exactly there and is ``keras.ops.conv(...) + bias`` everywhere else. The
measurements behind these limits (per-kernel rates: `benchmarks/probes/conv_kernel_benchmark.py`;
whole steps: `benchmarks/probes/step_ab.py`) are in `benchmarks/RESULTS.md`, "Optimizations
measured and kept" and "The bfloat16 filter-gradient kernel".
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

#: Largest feature map (H·W), per compute dtype, whose filter gradient runs as a swapped forward
#: convolution in the ``"auto"`` mode (0: never).
SWAPPED_FILTER_GRAD_MAX_PIXELS = {"bfloat16": 100, "float16": 100, "float32": 16}

#: Most images × pixels per swapped convolution, per compute dtype: oneDNN runs a larger swapped
#: "filter" markedly slower (measured), so larger batches are split into equal slices.
SWAPPED_SLICE_PIXELS = {"bfloat16": 160 * 64, "float16": 160 * 64, "float32": 160 * 16}

_mode = {"filter_gradient": "auto"}
FILTER_GRADIENT_MODES = ("auto", "native", "swapped")


def set_filter_gradient(mode: str) -> None:
    """Choose how `conv2d` computes filter gradients (for benchmarks and tests).

    Args:
        mode: ``"auto"`` (default: swapped on maps of at most
            ``SWAPPED_FILTER_GRAD_MAX_PIXELS[dtype]`` pixels, TensorFlow's kernel elsewhere),
            ``"native"`` (TensorFlow's kernel always) or ``"swapped"`` (the swapped forward
            convolution wherever it applies: stride 1, ``"same"`` padding, odd kernel).

    Takes effect for functions traced afterwards.
    """
    if mode not in FILTER_GRADIENT_MODES:
        raise ValueError(f"filter gradient mode must be one of {FILTER_GRADIENT_MODES}, got {mode!r}.")
    _mode["filter_gradient"] = mode


def conv2d(inputs, kernel, bias, strides=(1, 1), padding: str = "same", dilation_rate=(1, 1)):
    """``keras.ops.conv(inputs, kernel, strides, padding, dilation_rate) + bias`` (NHWC), with the
    fast filter gradient.

    Args:
        inputs: ``(N, H, W, Cin)``.
        kernel: ``(kh, kw, Cin / groups, Cout)``, same dtype as ``inputs`` (``groups > 1``: a
            grouped convolution, as `keras.ops.conv` infers it).
        bias: ``(Cout,)``, same dtype as ``inputs``.
        strides: ``(sh, sw)``.
        padding: ``"same"`` or ``"valid"``.
        dilation_rate: ``(dh, dw)``.

    Returns:
        ``(N, H', W', Cout)``; the gradient with respect to ``kernel`` is computed as a swapped
        forward convolution when `set_filter_gradient` says so.
    """
    if _swapped(inputs, kernel, strides, padding, dilation_rate):
        return _conv_swapped_filter_grad(inputs, kernel, bias)
    # A broadcast add, not tf.nn.bias_add: TF 2.21's CPU graph optimizer fuses
    # leaky_relu(bias_add(conv2d(x, k), b) + r) — a residual block's last convolution — into
    # one oneDNN op that computes wrong values (benchmarks/probes/tf_fusion_bug.py); with AddV2 it does not.
    return ops.conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate) + bias


def _swapped(inputs, kernel, strides, padding, dilation_rate=(1, 1)) -> bool:
    mode = _mode["filter_gradient"]
    if mode == "native":
        return False
    kh, kw = kernel.shape[0], kernel.shape[1]
    if tuple(strides) != (1, 1) or padding != "same" or kh is None or kw is None or not (kh % 2 and kw % 2):
        return False
    if tuple(dilation_rate) != (1, 1) or kernel.shape[2] != inputs.shape[-1]:  # dilated or grouped
        return False
    if mode == "swapped":
        return True
    h, w = inputs.shape[1], inputs.shape[2]
    limit = SWAPPED_FILTER_GRAD_MAX_PIXELS.get(tf.as_dtype(inputs.dtype).name, 0)
    return h is not None and w is not None and h * w <= limit


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


def _swapped_conv(inputs, out_grad, kernel_size):
    kh, kw = kernel_size
    x_t = tf.transpose(inputs, [3, 1, 2, 0])  # (Cin, H, W, N): channels as batch, batch as channels
    g_t = tf.transpose(out_grad, [1, 2, 0, 3])  # (H, W, N, Cout): the "filter"
    pad = [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]]
    grad = tf.nn.conv2d(x_t, g_t, strides=1, padding=pad)  # (Cin, kh, kw, Cout)
    return tf.transpose(grad, [1, 2, 0, 3])


@tf.custom_gradient
def _conv_swapped_filter_grad(inputs, kernel, bias):
    outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME") + bias  # not bias_add: see conv2d

    def grad(out_grad):
        d_inputs = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(inputs),
            filter=kernel,
            out_backprop=out_grad,
            strides=[1, 1, 1, 1],
            padding="SAME",
        )
        with tf.name_scope("swapped_filter_gradient"):
            d_kernel = swapped_filter_gradient(inputs, out_grad, kernel.shape[:2])
        d_bias = tf.raw_ops.BiasAddGrad(out_backprop=out_grad)
        return d_inputs, d_kernel, d_bias

    return outputs, grad
