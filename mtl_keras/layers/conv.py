"""`conv2d`: the convolution of `ScaleShiftConv2D`, with cheaper gradients on CPUs.

Every scaled convolution of meta-transfer learning needs its filter gradient (the gradient of
the scale Φ1 is ``Σ_taps Θ ⊙ ∂L/∂(Θ⊙Φ1)``). The bfloat16 filter-gradient kernel that
TensorFlow 2.21's oneDNN path picks (``Conv2DBackpropFilter``) runs at a fraction of the forward
rate, worst on small feature maps (ResNet-12's last two blocks at 32×32 input: 8×8 and 4×4
maps, 0.3–0.55× the forward rate). The same gradient is a *forward* convolution with batch and
channel axes swapped:

    ∂W[i, j, c, d] = Σ_{n, y, x} X[n, y + i, x + j, c] · G[n, y, x, d]
                   = conv(Xᵀ (c, y, x, n), Gᵀ (y, x, n, d))[c, i, j, d]

(Xᵀ zero-padded like the forward pass), which oneDNN's forward kernel runs 1.4–2.5× faster on
bfloat16 maps of at most 8×8, and slower on larger maps and in float32
(`scripts/conv_kernel_benchmark.py`; in a whole 84×84 step, the 10×10 maps were slower too).
`conv2d` uses it exactly there. Its bias gradient is TF's BiasAddGrad kernel instead of the
reduce_sum a broadcast add derives (2-3× faster). Everything else is `keras.ops.conv`.
Compare whole steps with ``python scripts/step_ab.py``.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

#: Largest feature map (H·W), per compute dtype, whose filter gradient runs as a swapped forward
#: convolution in the ``"auto"`` mode (0: never).
SWAPPED_FILTER_GRAD_MAX_PIXELS = {"bfloat16": 64, "float16": 64, "float32": 0}

#: Images × pixels per swapped convolution; larger batches are split into slices of this size.
SWAPPED_CHUNK_PIXELS = 160 * 64

_mode = {"filter_gradient": "auto", "bias_gradient": "bias_add_grad"}
FILTER_GRADIENT_MODES = ("auto", "native", "swapped")
BIAS_GRADIENT_MODES = ("bias_add_grad", "reduce_sum")


def set_filter_gradient(mode: str) -> None:
    """Choose how `conv2d` computes filter gradients (for benchmarks and tests).

    Args:
        mode: ``"auto"`` (default: swapped on 16-bit maps of at most
            `SWAPPED_FILTER_GRAD_MAX_PIXELS` pixels, TensorFlow's kernel elsewhere),
            ``"native"`` (TensorFlow's kernel always) or ``"swapped"`` (the swapped forward
            convolution wherever it applies: stride 1, ``"same"`` padding, odd kernel).

    Takes effect for functions traced afterwards.
    """
    if mode not in FILTER_GRADIENT_MODES:
        raise ValueError(f"filter gradient mode must be one of {FILTER_GRADIENT_MODES}, got {mode!r}.")
    _mode["filter_gradient"] = mode


def set_bias_gradient(mode: str) -> None:
    """Choose how `conv2d`'s bias gradient is computed (for benchmarks).

    Args:
        mode: ``"bias_add_grad"`` (default: TF's BiasAddGrad kernel) or ``"reduce_sum"`` (what
            TensorFlow derives for a broadcast add).

    Takes effect for functions traced afterwards.
    """
    if mode not in BIAS_GRADIENT_MODES:
        raise ValueError(f"bias gradient mode must be one of {BIAS_GRADIENT_MODES}, got {mode!r}.")
    _mode["bias_gradient"] = mode


def filter_gradient_mode() -> str:
    """The current `set_filter_gradient` mode."""
    return _mode["filter_gradient"]


def conv2d(inputs, kernel, bias, strides=(1, 1), padding: str = "same"):
    """``keras.ops.conv(inputs, kernel, strides, padding) + bias`` (NHWC), with the fast filter gradient.

    Args:
        inputs: ``(N, H, W, Cin)``.
        kernel: ``(kh, kw, Cin, Cout)``, same dtype as ``inputs``.
        bias: ``(Cout,)``, same dtype as ``inputs``.
        strides: ``(sh, sw)``.
        padding: ``"same"`` or ``"valid"``.

    Returns:
        ``(N, H', W', Cout)``; the gradient with respect to ``kernel`` is computed as a swapped
        forward convolution when `set_filter_gradient` says so.
    """
    if _swapped(inputs, kernel, strides, padding):
        return _conv_swapped_filter_grad(inputs, kernel, bias)
    # BiasAdd (not a broadcast +): its gradient fuses into oneDNN's filter gradient.
    # A broadcast add, not tf.nn.bias_add: TF 2.21's CPU graph optimizer fuses
    # leaky_relu(bias_add(conv2d(x, k), b) + r) — a residual block's last convolution — into
    # one oneDNN op that computes wrong values (scripts/tf_fusion_bug.py); with AddV2 it does not.
    outputs = ops.conv(inputs, kernel, strides=strides, padding=padding)
    return _add_bias(outputs, bias) if _mode["bias_gradient"] == "bias_add_grad" else outputs + bias


def _swapped(inputs, kernel, strides, padding) -> bool:
    mode = _mode["filter_gradient"]
    if mode == "native":
        return False
    kh, kw = kernel.shape[0], kernel.shape[1]
    if tuple(strides) != (1, 1) or padding != "same" or kh is None or kw is None or not (kh % 2 and kw % 2):
        return False
    if mode == "swapped":
        return True
    h, w = inputs.shape[1], inputs.shape[2]
    limit = SWAPPED_FILTER_GRAD_MAX_PIXELS.get(tf.as_dtype(inputs.dtype).name, 0)
    return h is not None and w is not None and h * w <= limit


def swapped_filter_gradient(inputs, out_grad, kernel_size):
    """``∂L/∂W`` of a stride-1 ``"same"`` convolution as a forward convolution.

    Args:
        inputs: ``(N, H, W, Cin)``, the convolution's input.
        out_grad: ``(N, H, W, Cout)``, ``∂L/∂output``.
        kernel_size: ``(kh, kw)``, both odd.

    Returns:
        ``(kh, kw, Cin, Cout)`` in the dtype of ``inputs`` (accumulated in float32 by oneDNN).
    """
    kh, kw = kernel_size
    n, h, w = inputs.shape[0], inputs.shape[1], inputs.shape[2]
    chunk = max(1, SWAPPED_CHUNK_PIXELS // (h * w)) if None not in (n, h, w) else None
    if chunk is not None and n > chunk:
        # Several swapped convolutions over slices of the batch, summed in float32: oneDNN
        # runs a "filter" of more than ~10k pixels·images markedly slower (measured).
        parts = [
            tf.cast(
                swapped_filter_gradient(inputs[i : i + chunk], out_grad[i : i + chunk], kernel_size),
                tf.float32,
            )
            for i in range(0, n, chunk)
        ]
        return tf.cast(tf.add_n(parts), inputs.dtype)
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
        d_kernel = swapped_filter_gradient(inputs, out_grad, kernel.shape[:2])
        d_bias = tf.raw_ops.BiasAddGrad(out_backprop=out_grad)
        return d_inputs, d_kernel, d_bias

    return outputs, grad


@tf.custom_gradient
def _add_bias(outputs, bias):
    """``outputs + bias`` whose bias gradient is BiasAddGrad: 2-3× faster than the reduce_sum
    TensorFlow derives for a broadcast add (one pass over a 32×32×64 map of 640 images: 8 vs
    16 ms in bfloat16, 6 vs 18 ms in float32)."""

    def grad(out_grad):
        return out_grad, tf.raw_ops.BiasAddGrad(out_backprop=out_grad)

    return outputs + bias, grad
