"""`conv2d`: the convolution of `ScaleShiftConv2D`, with cheaper gradients on CPUs.

``keras.ops.conv(...) + bias`` on every backend. On TensorFlow, where the CPU gradient plan
(`mtl_keras.tensorflow_backend.gradient_plan`) says a gradient is cheaper as a forward
convolution or as shifted matrix products on this CPU, the convolution runs with those
gradients (`mtl_keras.tensorflow_backend.conv`). On JAX on a CPU, the kernel's gradient of a
stride-1 ``"same"`` convolution on maps of 16 pixels a side or more is one im2col matrix product
(`mtl_keras.jax_backend.conv`: XLA:CPU's own ran 2-5x slower there); everywhere else the backend
differentiates it.
"""

from __future__ import annotations

import keras
from keras import ops


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
        ``(N, H', W', Cout)``; on the TensorFlow backend the gradients with respect to
        ``kernel`` and ``inputs`` are computed as
        `mtl_keras.tensorflow_backend.gradient_plan.gradient_methods` says (on a GPU:
        TensorFlow's own gradients); on the JAX backend on a CPU the kernel's gradient is
        `mtl_keras.jax_backend.conv.im2col_filter_gradient` where `im2col_applies`.
    """
    if keras.backend.backend() == "tensorflow":
        from mtl_keras.tensorflow_backend.gradient_plan import gradient_methods

        filter_method, swap_input = gradient_methods(inputs, kernel, strides, padding, dilation_rate)
        if filter_method != "native" or swap_input:
            from mtl_keras.tensorflow_backend.conv import conv_with_forward_gradients

            return conv_with_forward_gradients(filter_method, swap_input)(inputs, kernel, bias)
    if keras.backend.backend() == "jax":
        from mtl_keras.jax_backend.conv import conv_im2col_gradient, im2col_applies

        if im2col_applies(inputs, kernel, strides, padding, dilation_rate):
            return conv_im2col_gradient(inputs, kernel) + bias
    # A broadcast add, not TensorFlow's bias_add: TF 2.21's CPU graph optimizer fuses
    # leaky_relu(bias_add(conv2d(x, k), b) + r) — a residual block's last convolution — into
    # one oneDNN op that computes wrong values (benchmarks/probes/tf_fusion_bug.py); with AddV2 it does not.
    return ops.conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate) + bias
