"""The CPU gradient plan of `mtl_keras.layers.conv.conv2d` on TensorFlow: which convolution
gradients run as forward convolutions (or shifted matrix products), per instruction set.

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
CPUs, where oneDNN's backward-data kernel runs well below its forward one.

On AMX CPUs a third formulation wins on small maps: nine matrix products, one per kernel tap,
``∂W[i, j] = X_(i, j)ᵀ · G`` over the ``N·H·W`` pixels of the zero-padded input shifted by the
tap (`shifted_matmul_filter_gradient`), which oneDNN runs on AMX tiles.

Where each pays depends on the instruction set: `conv2d` follows the plan of the CPU it runs on
(`FORWARD_GRADIENT_MAX_PIXELS`, chosen at trace time from `mtl_keras.hardware.isa_level`) and
is ``keras.ops.conv(...) + bias`` with TensorFlow's gradients everywhere else.

The forward-convolution gradients are TensorFlow kernels (`mtl_keras.tensorflow_backend.conv`,
imported only on that backend); on every other Keras backend `conv2d` is
``keras.ops.conv(...) + bias`` and the backend differentiates it (JAX: XLA's own kernels). The measurements
behind the limits (per-kernel rates: `benchmarks/probes/conv_kernel_benchmark.py`,
`benchmarks/probes/input_gradient_alternatives.py`; whole steps: `benchmarks/probes/step_ab.py`)
are in `benchmarks/RESULTS.md`.

This module is TensorFlow/oneDNN knowledge, so it lives with the TensorFlow kernels
(`mtl_keras.tensorflow_backend.conv`); it imports no TensorFlow itself.
"""

from __future__ import annotations

import functools

import keras

#: Which gradients of a plain convolution (stride 1, ``"same"`` padding, odd kernel, neither
#: grouped nor dilated) the ``"auto"`` mode computes as forward convolutions, per instruction set
#: oneDNN runs on (`mtl_keras.hardware.isa_level`): for the filter gradient (``"filter"``) and the
#: input gradient (``"input"``), the largest feature map (H·W) per compute dtype (absent: never,
#: TensorFlow's kernel; ``None``: any size). ``"AVX-512"``'s entry also serves AVX512-BF16,
#: older and unknown CPUs; AMX-BF16 CPUs have their own. Why these limits: on AVX-512 the
#: filter gradient pays as a forward convolution on small maps only and TF's input gradient runs
#: at the forward rate; on AVX2 oneDNN's backward-data kernel is much slower than its forward
#: one, so there both gradients run as forward convolutions (the measurements, per ISA and map
#: size: ``benchmarks/RESULTS.md``; ``benchmarks/probes/input_gradient_alternatives.py``).
FORWARD_GRADIENT_MAX_PIXELS = {
    "AVX-512": {"filter": {"bfloat16": 100, "float16": 100, "float32": 16}, "input": {}},
    "AVX2": {"filter": {"float32": 100}, "input": {"float32": None}},
    # AMX (oneDNN's avx10_1_512_amx kernels): TF's bf16 filter gradient runs on AMX tiles at
    # 0.3-0.8x the forward rate, faster than the swapped one on maps of 8x8 and up; on maps of at
    # most 10x10 nine shifted matmuls (`SHIFTED_MATMUL_MAX_PIXELS`) beat both. float32 gets no AMX
    # and neither its 4x4 swap nor the matmuls pay there.
    "AMX-BF16": {"filter": {}, "input": {}},
}

#: The largest feature map (H·W) per compute dtype whose filter gradient the ``"auto"`` mode
#: computes as nine shifted matrix products (`shifted_matmul_filter_gradient`), per instruction
#: set; where it applies it takes precedence over the swapped convolution. Absent: never.
#: On AMX CPUs (bf16 GFLOP/s of one filter gradient over 160 images, TF's kernel / swapped
#: convolution / shifted matmuls: 10x10x512 691 / 341 / 1095, 8x8x256 472 / 332 / 723, 4x4x512
#: 191 / 581 / 937; whole bf16 steps 2.4-9.1% faster than the swapped 4x4 plan). float16 is not
#: measured: it follows bfloat16. Elsewhere the swapped convolution is faster (AVX-512) or the
#: matmuls are not measured (AVX2).
SHIFTED_MATMUL_MAX_PIXELS = {"AVX-512": {}, "AVX2": {}, "AMX-BF16": {"bfloat16": 100, "float16": 100}}

#: The filter-gradient limits of AVX-512 CPUs (`FORWARD_GRADIENT_MAX_PIXELS`), by their old name.
SWAPPED_FILTER_GRAD_MAX_PIXELS = FORWARD_GRADIENT_MAX_PIXELS["AVX-512"]["filter"]

#: Most images × pixels per swapped convolution, per compute dtype: oneDNN runs a larger swapped
#: "filter" markedly slower (``benchmarks/RESULTS.md``), so larger batches are split into equal slices.
SWAPPED_SLICE_PIXELS = {"bfloat16": 160 * 64, "float16": 160 * 64, "float32": 160 * 16}

_mode = {"filter_gradient": "auto", "isa": None}
FILTER_GRADIENT_MODES = ("auto", "native", "swapped", "matmul")
#: How `conv2d` computes a filter gradient: TensorFlow's kernel, a swapped forward convolution,
#: or nine shifted matrix products.
FILTER_METHODS = ("native", "swapped", "matmul")


def set_filter_gradient(mode: str) -> None:
    """Choose how `conv2d` computes its gradients (for benchmarks and tests).

    Args:
        mode: ``"auto"`` (default: as `gradient_plan` says for this CPU), ``"native"``
            (TensorFlow's kernels always), ``"swapped"`` (both gradients as forward
            convolutions wherever they apply: stride 1, ``"same"`` padding, odd kernel, neither
            grouped nor dilated) or ``"matmul"`` (the filter gradient as nine shifted matrix
            products and the input gradient as a forward convolution, wherever they apply).

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
    """``(isa, limits)``: the plan the ``"auto"`` mode uses here (the CPU's, as
    `mtl_keras.hardware.isa_level` reads it, unless `set_gradient_isa` chose one): that
    instruction set's `FORWARD_GRADIENT_MAX_PIXELS` entry (``"filter"``, ``"input"``) with its
    `SHIFTED_MATMUL_MAX_PIXELS` entry as ``"filter_matmul"`` (the same dicts: editing them edits
    the plan)."""
    isa = _mode["isa"]
    if isa is None:
        from mtl_keras import hardware

        isa = hardware.isa_level(hardware.cpu_flags())
    if isa not in FORWARD_GRADIENT_MAX_PIXELS:
        isa = "AVX-512"
    return isa, {**FORWARD_GRADIENT_MAX_PIXELS[isa], "filter_matmul": SHIFTED_MATMUL_MAX_PIXELS[isa]}


def gradient_methods(inputs, kernel, strides, padding, dilation_rate=(1, 1)) -> tuple[str, bool]:
    """``(filter_method, swap_input)``: how `conv2d` computes this convolution's filter gradient
    (one of `FILTER_METHODS`) and whether its input gradient is a forward convolution — the mode
    of `set_filter_gradient`; in ``"auto"``, `gradient_plan`'s limits for the compute dtype and
    the map size. Only stride-1 ``"same"`` convolutions with odd kernels, neither grouped nor
    dilated, placed on a CPU (`placed_on_cpu`: the plan is oneDNN knowledge), get anything but
    TensorFlow's kernels.

    Args:
        inputs: ``(N, H, W, Cin)`` (a tensor or anything with ``shape`` and ``dtype``).
        kernel: ``(kh, kw, Cin, Cout)``.
    """
    mode = _mode["filter_gradient"]
    if mode == "native" or not placed_on_cpu(inputs):
        return "native", False
    kh, kw = kernel.shape[0], kernel.shape[1]
    if tuple(strides) != (1, 1) or padding != "same" or kh is None or kw is None or not (kh % 2 and kw % 2):
        return "native", False
    if tuple(dilation_rate) != (1, 1) or kernel.shape[2] != inputs.shape[-1]:  # dilated or grouped
        return "native", False
    if mode in ("swapped", "matmul"):
        return mode, True
    h, w = inputs.shape[1], inputs.shape[2]
    if h is None or w is None:
        return "native", False
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    _, limits = gradient_plan()

    def applies(kind):
        per_dtype = limits[kind]
        return dtype in per_dtype and (per_dtype[dtype] is None or h * w <= per_dtype[dtype])

    filter_method = "matmul" if applies("filter_matmul") else "swapped" if applies("filter") else "native"
    return filter_method, applies("input")


def forward_gradients(inputs, kernel, strides, padding, dilation_rate=(1, 1)) -> tuple[bool, bool]:
    """``(filter, input)``: whether `conv2d` computes the filter gradient and the input gradient
    of this convolution as forward convolutions (`gradient_methods`; a filter gradient of nine
    shifted matrix products counts as not)."""
    filter_method, swap_input = gradient_methods(inputs, kernel, strides, padding, dilation_rate)
    return filter_method == "swapped", swap_input


def _swapped(inputs, kernel, strides, padding, dilation_rate=(1, 1)) -> bool:
    """Whether the filter gradient runs as a forward convolution (`forward_gradients`)."""
    return forward_gradients(inputs, kernel, strides, padding, dilation_rate)[0]


@functools.cache
def gpus_visible() -> bool:
    """Whether TensorFlow sees a GPU (its logical devices are fixed once it has started)."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def placed_on_cpu(tensor) -> bool:
    """Whether TensorFlow runs the ops on ``tensor`` on a CPU: the plan is CPU (oneDNN) knowledge,
    so a convolution placed on a GPU keeps TensorFlow's own gradients.

    The tensor's device where TensorFlow has one (eager tensors; graph ops under ``tf.device`` or a
    `tf.distribute` replica's scope); otherwise the default placement, a GPU whenever one is visible.
    """
    device = getattr(tensor, "device", None) or ""
    if device:  # "/job:localhost/replica:0/task:0/device:CPU:0", "/CPU:0", "/device:GPU:1"...
        return "CPU" in device.upper().rsplit("/", 1)[-1].split(":")
    return not gpus_visible()
