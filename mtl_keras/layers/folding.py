"""`fold_batch_norm`: an inference view of a backbone with batch norm folded into the convolutions."""

from __future__ import annotations

import keras
from keras import ops

from mtl_keras.layers.conv import conv2d
from mtl_keras.layers.scale_shift_conv2d import ScaleShiftConv2D
from mtl_keras.layers.scale_shift_depthwise_conv2d import ScaleShiftDepthwiseConv2D


class FoldedConvBatchNorm(keras.layers.Layer):
    """``norm(conv(x))`` as one convolution, for batch normalisation in inference mode.

    With ``a = γ / √(σ² + ε)`` per output channel and ``W`` the convolution's kernel
    (``Θ ⊙ Φ_scale`` for a `ScaleShiftConv2D` or `ScaleShiftDepthwiseConv2D`, a plain
    `Conv2D`'s or `DepthwiseConv2D`'s kernel otherwise; a depthwise kernel ``(kh, kw, Cin, M)``
    is scaled by ``a`` reshaped to ``(Cin, M)``, output channel ``c*M + m``),
    ``BN(conv(x, W) + c) = conv(x, W ⊙ a) + (c − μ)·a + β``: the same function of the same
    variables (gradients reach Φ exactly as before), one convolution instead of a
    convolution, a multiply and an add, and under ``mixed_bfloat16`` none of the float32
    round trips of the activations that Keras' BN makes. The folded kernel and offset are
    formed in float32 and cast once to the compute dtype. Built by `fold_batch_norm`; it
    owns no variables.
    """

    def __init__(self, conv, norm: keras.layers.BatchNormalization, **kwargs):
        kwargs.setdefault("name", f"{conv.name}_{norm.name}_folded")
        # autocast=False: read every variable in float32 (inputs are cast by hand in `call`).
        super().__init__(dtype=conv.dtype_policy, autocast=False, **kwargs)
        self.conv = conv
        self.norm = norm
        self.built = True

    def call(self, inputs):
        conv, norm = self.conv, self.norm
        inputs = ops.cast(inputs, self.compute_dtype)
        a = ops.rsqrt(norm.moving_variance + norm.epsilon)
        if norm.scale:
            a = a * norm.gamma
        scale_shift = isinstance(conv, (ScaleShiftConv2D, ScaleShiftDepthwiseConv2D))
        kernel = conv.kernel * conv.scale if scale_shift else conv.kernel
        offset = -norm.moving_mean
        if conv.bias is not None:
            offset = offset + conv.bias
        if scale_shift:
            offset = offset + conv.shift
        offset = offset * a
        if norm.center:
            offset = offset + norm.beta
        dtype = self.compute_dtype
        if _depthwise(conv):
            kernel = kernel * ops.reshape(a, kernel.shape[2:])
            outputs = ops.depthwise_conv(
                inputs,
                ops.cast(kernel, dtype),
                strides=conv.strides,
                padding=conv.padding,
                dilation_rate=conv.dilation_rate,
            )
            return outputs + ops.cast(offset, dtype)
        return conv2d(
            inputs,
            ops.cast(kernel * a, dtype),
            ops.cast(offset, dtype),
            strides=conv.strides,
            padding=conv.padding,
            dilation_rate=conv.dilation_rate,
        )

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


def _depthwise(layer) -> bool:
    return isinstance(layer, ScaleShiftDepthwiseConv2D) or type(layer) is keras.layers.DepthwiseConv2D


def _foldable_conv(layer) -> bool:
    """A convolution without activation whose output BN can fold into (channels last)."""
    if isinstance(layer, (ScaleShiftConv2D, ScaleShiftDepthwiseConv2D)):
        return not layer.has_activation
    return (
        type(layer) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
        and layer.data_format == "channels_last"
        and not getattr(layer, "quantization_mode", None)
        and layer.activation in (None, keras.activations.linear)
    )


def _foldable(norm) -> bool:
    axis = norm.axis if isinstance(norm.axis, int) else (norm.axis[0] if len(norm.axis) == 1 else None)
    return axis in (-1, 3) and not getattr(norm, "renorm", False)


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A view of functional ``model`` with each BN that directly follows a convolution folded in.

    Folded: a `Conv2D`, `DepthwiseConv2D`, `ScaleShiftConv2D` or `ScaleShiftDepthwiseConv2D`
    without activation (any strides, dilation, groups), channels last, whose output feeds
    a batch norm on the last axis. Every other layer is called as it is (so a BN after
    any other layer stays a BN).

    The view shares every layer and variable with ``model`` (nothing is copied: training Φ
    through the view trains ``model``) and computes the same function **as long as batch
    normalisation runs in inference mode** (``training=False``: pretrained statistics, as in
    meta-training with frozen BN). Call ``model`` itself whenever BN must use batch statistics.

    Args:
        model: a functional `keras.Model` (e.g. `mtl_keras.backbones.resnet12`).

    Returns:
        A functional `keras.Model` with the same inputs and outputs; ``model`` itself when it
        has nothing to fold.
    """
    produced_by = {}  # id(output tensor) -> (conv, args, kwargs) of a foldable convolution call
    folded = []

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.BatchNormalization) and _foldable(layer) and args:
            source = produced_by.get(id(args[0]))
            if source is not None:
                conv, conv_args, conv_kwargs = source
                folded.append(layer.name)
                return FoldedConvBatchNorm(conv, layer)(*conv_args, **conv_kwargs)
        output = layer(*args, **kwargs)
        if _foldable_conv(layer):
            produced_by[id(output)] = (layer, args, kwargs)
        return output

    view = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call_function)
    return view if folded else model
