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
maps. Likewise the input gradient is a forward convolution of ``∂Y`` with the kernel's taps
reversed and its channel axes swapped (`swapped_input_gradient`), which matters on AVX2-only
CPUs, where oneDNN's backward-data kernel runs well below its forward one (issue 19).

Where each pays depends on the instruction set: `conv2d` follows the plan of the CPU it runs on
(`FORWARD_GRADIENT_MAX_PIXELS`, chosen at trace time from `mtl_keras.hardware.isa_level`) and
is ``keras.ops.conv(...) + bias`` with TensorFlow's gradients everywhere else. The measurements
behind the limits (per-kernel rates: `benchmarks/probes/conv_kernel_benchmark.py`,
`benchmarks/probes/input_gradient_alternatives.py`; whole steps: `benchmarks/probes/step_ab.py`)
are in `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

#: Which gradients of a plain convolution (stride 1, ``"same"`` padding, odd kernel, neither
#: grouped nor dilated) the ``"auto"`` mode computes as forward convolutions, per instruction set
#: oneDNN runs on (`mtl_keras.hardware.isa_level`): for the filter gradient (``"filter"``) and the
#: input gradient (``"input"``), the largest feature map (H·W) per compute dtype (absent: never,
#: TensorFlow's kernel; ``None``: any size). ``"AVX-512"``'s entry also serves AVX512-BF16,
#: older and unknown CPUs. Why these limits: on AVX-512 the filter gradient pays as a forward
#: convolution on small maps only and TF's input gradient runs at the forward rate; on AVX2
#: oneDNN's backward-data kernel is much slower than its forward one, so there both gradients run
#: as forward convolutions (the measurements, per ISA and map size: ``benchmarks/RESULTS.md``;
#: ``benchmarks/probes/input_gradient_alternatives.py``).
FORWARD_GRADIENT_MAX_PIXELS = {
    "AVX-512": {"filter": {"bfloat16": 100, "float16": 100, "float32": 16}, "input": {}},
    "AVX2": {"filter": {"float32": 100}, "input": {"float32": None}},
}

#: The filter-gradient limits of AVX-512 CPUs (`FORWARD_GRADIENT_MAX_PIXELS`), by their old name.
SWAPPED_FILTER_GRAD_MAX_PIXELS = FORWARD_GRADIENT_MAX_PIXELS["AVX-512"]["filter"]

#: Most images × pixels per swapped convolution, per compute dtype: oneDNN runs a larger swapped
#: "filter" markedly slower (``benchmarks/RESULTS.md``), so larger batches are split into equal slices.
SWAPPED_SLICE_PIXELS = {"bfloat16": 160 * 64, "float16": 160 * 64, "float32": 160 * 16}

_mode = {"filter_gradient": "auto", "isa": None}
FILTER_GRADIENT_MODES = ("auto", "native", "swapped")


def set_filter_gradient(mode: str) -> None:
    """Choose how `conv2d` computes its gradients (for benchmarks and tests).

    Args:
        mode: ``"auto"`` (default: as `gradient_plan` says for this CPU), ``"native"``
            (TensorFlow's kernels always) or ``"swapped"`` (both gradients as forward
            convolutions wherever they apply: stride 1, ``"same"`` padding, odd kernel, neither
            grouped nor dilated).

    Takes effect for functions traced afterwards.
    """
    if mode not in FILTER_GRADIENT_MODES:
        raise ValueError(f"filter gradient mode must be one of {FILTER_GRADIENT_MODES}, got {mode!r}.")
    _mode["filter_gradient"] = mode


def set_gradient_isa(isa: str | None) -> None:
    """Use the ``"auto"`` plan of instruction set ``isa`` (a key of `FORWARD_GRADIENT_MAX_PIXELS`)
    instead of the CPU's own (``None``, the default): for A/B benchmarks and tests.

    Takes effect for functions traced afterwards.
    """
    if isa is not None and isa not in FORWARD_GRADIENT_MAX_PIXELS:
        raise ValueError(
            f"gradient ISA must be None or one of {sorted(FORWARD_GRADIENT_MAX_PIXELS)}, got {isa!r}."
        )
    _mode["isa"] = isa


def gradient_plan() -> tuple[str, dict]:
    """``(isa, limits)``: the `FORWARD_GRADIENT_MAX_PIXELS` entry the ``"auto"`` mode uses here
    (the CPU's, as `mtl_keras.hardware.isa_level` reads it, unless `set_gradient_isa` chose one)."""
    isa = _mode["isa"]
    if isa is None:
        from mtl_keras import hardware

        isa = hardware.isa_level(hardware.cpu_flags())
    if isa not in FORWARD_GRADIENT_MAX_PIXELS:
        isa = "AVX-512"
    return isa, FORWARD_GRADIENT_MAX_PIXELS[isa]


def conv2d(inputs, kernel, bias, strides=(1, 1), padding: str = "same", dilation_rate=(1, 1)):
    """``keras.ops.conv(inputs, kernel, strides, padding, dilation_rate) + bias`` (NHWC), with
    gradients as forward convolutions where they are faster on this CPU.

    Args:
        inputs: ``(N, H, W, Cin)``.
        kernel: ``(kh, kw, Cin / groups, Cout)``, same dtype as ``inputs`` (``groups > 1``: a
            grouped convolution, as `keras.ops.conv` infers it).
        bias: ``(Cout,)``, same dtype as ``inputs``.
        strides: ``(sh, sw)``.
        padding: ``"same"`` or ``"valid"``.
        dilation_rate: ``(dh, dw)``.

    Returns:
        ``(N, H', W', Cout)``; the gradients with respect to ``kernel`` and ``inputs`` are
        computed as forward convolutions where `forward_gradients` says so.
    """
    swap_filter, swap_input = forward_gradients(inputs, kernel, strides, padding, dilation_rate)
    if swap_filter or swap_input:
        return _CONV_WITH_FORWARD_GRADIENTS[swap_filter, swap_input](inputs, kernel, bias)
    # A broadcast add, not tf.nn.bias_add: TF 2.21's CPU graph optimizer fuses
    # leaky_relu(bias_add(conv2d(x, k), b) + r) — a residual block's last convolution — into
    # one oneDNN op that computes wrong values (benchmarks/probes/tf_fusion_bug.py); with AddV2 it does not.
    return ops.conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate) + bias


def forward_gradients(inputs, kernel, strides, padding, dilation_rate=(1, 1)) -> tuple[bool, bool]:
    """``(filter, input)``: whether `conv2d` computes the filter gradient and the input gradient
    of this convolution as forward convolutions (the mode of `set_filter_gradient`; in ``"auto"``,
    `gradient_plan`'s limits for the compute dtype and the map size)."""
    mode = _mode["filter_gradient"]
    if mode == "native":
        return False, False
    kh, kw = kernel.shape[0], kernel.shape[1]
    if tuple(strides) != (1, 1) or padding != "same" or kh is None or kw is None or not (kh % 2 and kw % 2):
        return False, False
    if tuple(dilation_rate) != (1, 1) or kernel.shape[2] != inputs.shape[-1]:  # dilated or grouped
        return False, False
    if mode == "swapped":
        return True, True
    h, w = inputs.shape[1], inputs.shape[2]
    if h is None or w is None:
        return False, False
    dtype = tf.as_dtype(inputs.dtype).name
    _, limits = gradient_plan()

    def applies(kind):
        per_dtype = limits[kind]
        return dtype in per_dtype and (per_dtype[dtype] is None or h * w <= per_dtype[dtype])

    return applies("filter"), applies("input")


def _swapped(inputs, kernel, strides, padding, dilation_rate=(1, 1)) -> bool:
    """Whether the filter gradient runs as a forward convolution (`forward_gradients`)."""
    return forward_gradients(inputs, kernel, strides, padding, dilation_rate)[0]


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


def _swapped_conv(inputs, out_grad, kernel_size):
    kh, kw = kernel_size
    x_t = tf.transpose(inputs, [3, 1, 2, 0])  # (Cin, H, W, N): channels as batch, batch as channels
    g_t = tf.transpose(out_grad, [1, 2, 0, 3])  # (H, W, N, Cout): the "filter"
    pad = [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]]
    grad = tf.nn.conv2d(x_t, g_t, strides=1, padding=pad)  # (Cin, kh, kw, Cout)
    return tf.transpose(grad, [1, 2, 0, 3])


def _conv_with_forward_gradients(swap_filter: bool, swap_input: bool):
    """A stride-1 ``"same"`` convolution plus bias whose filter and/or input gradient is a forward
    convolution (`swapped_filter_gradient`, `swapped_input_gradient`)."""

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
            if swap_filter:
                with tf.name_scope("swapped_filter_gradient"):
                    d_kernel = swapped_filter_gradient(inputs, out_grad, kernel.shape[:2])
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


_CONV_WITH_FORWARD_GRADIENTS = {
    (f, i): _conv_with_forward_gradients(f, i) for f in (False, True) for i in (False, True) if f or i
}
