"""`ScaleShiftDepthwiseConv2D`: a depthwise convolution with frozen weights Θ and meta-learned Φ."""

from __future__ import annotations

import keras
from keras import ops

from mtl_keras.layers.scale_shift_conv2d import _pair, conv_output_shape
from mtl_keras.layers.scale_shift_layer import ScaleShiftLayer, common_conversion_problems


@keras.saving.register_keras_serializable(package="mtl_keras")
class ScaleShiftDepthwiseConv2D(ScaleShiftLayer):
    """Depthwise 2-D convolution with per-kernel scaling and per-channel shifting.

    Computes ``activation(depthwise_conv(x, kernel * scale) + bias + shift)`` where the
    pretrained ``kernel`` ``(kh, kw, Cin, M)`` (``M = depth_multiplier``) and ``bias``
    ``(Cin*M,)`` are Θ and the ``scale`` ``(1, 1, Cin, M)`` (one scalar per k×k kernel,
    which for a depthwise convolution is one per output channel; init 1) and ``shift``
    ``(Cin*M,)`` (init 0) are Φ — the scaling and shifting of `ScaleShiftConv2D`, for the
    depthwise convolutions of MobileNets and EfficientNets. Output channel ``c*M + m``
    comes from input channel ``c``, as in `keras.layers.DepthwiseConv2D`.

    Phases as in `ScaleShiftConv2D`: ``"pretrain"`` trains Θ, ``"meta"`` trains Φ.

    Args:
        kernel_size: int or ``(kh, kw)``.
        strides: int or ``(sh, sw)``.
        padding: ``"same"`` or ``"valid"``.
        depth_multiplier: ``M``, output channels per input channel.
        dilation_rate: int or ``(dh, dw)``.
        use_bias: whether Θ holds a bias (the shift Φ2 is always there).
        activation: applied after the shift (``None``: linear).
        phase: ``"pretrain"`` or ``"meta"``.
        kernel_initializer: initializer of Θ's kernel.
        bias_initializer: initializer of Θ's bias.

    Input shape: ``(batch, H, W, Cin)``. Output shape: ``(batch, H', W', Cin*M)``.

    Example:
        >>> dw = keras.layers.DepthwiseConv2D(3, padding="same")
        >>> y = dw(np.zeros((2, 16, 16, 8), "float32"))
        >>> ss = ScaleShiftDepthwiseConv2D.from_depthwise_conv2d(dw)  # same output at Φ = (1, 0)
    """

    def __init__(
        self,
        kernel_size=3,
        strides=1,
        padding: str = "same",
        depth_multiplier: int = 1,
        dilation_rate=1,
        use_bias: bool = True,
        activation=None,
        phase: str = "pretrain",
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(phase=phase, activation=activation, **kwargs)
        self.kernel_size = _pair(kernel_size)
        self.strides = _pair(strides)
        self.padding = padding.lower()
        self.depth_multiplier = int(depth_multiplier)
        self.dilation_rate = _pair(dilation_rate)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        cin = int(input_shape[-1])
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        # autocast=False for the reason given in ScaleShiftConv2D.build (Φ ⊙ Θ formed in float32).
        self.kernel = self.add_weight(
            name="kernel", shape=(kh, kw, cin, m), initializer=self.kernel_initializer, autocast=False
        )
        self.bias = (
            self.add_weight(name="bias", shape=(cin * m,), initializer=self.bias_initializer, autocast=False)
            if self.use_bias
            else None
        )
        self.scale = self.add_weight(name="scale", shape=(1, 1, cin, m), initializer="ones", autocast=False)
        self.shift = self.add_weight(name="shift", shape=(cin * m,), initializer="zeros", autocast=False)
        self._apply_phase()

    def call(self, inputs):
        kernel = ops.cast(self.kernel * self.scale, inputs.dtype)
        offset = self.shift if self.bias is None else self.bias + self.shift
        outputs = ops.depthwise_conv(
            inputs, kernel, strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate
        )
        return self._activate(outputs + ops.cast(offset, inputs.dtype))

    def compute_output_shape(self, input_shape):
        filters = None if input_shape[-1] is None else int(input_shape[-1]) * self.depth_multiplier
        return conv_output_shape(
            input_shape, filters, self.kernel_size, self.strides, self.padding, self.dilation_rate
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            depth_multiplier=self.depth_multiplier,
            dilation_rate=self.dilation_rate,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config

    @staticmethod
    def conversion_problems(conv) -> list[str]:
        """Why `from_depthwise_conv2d` cannot convert ``conv`` (empty when it can)."""
        problems = common_conversion_problems(conv)
        if type(conv) is not keras.layers.DepthwiseConv2D:
            problems.append(f"a {type(conv).__name__}, not a keras.layers.DepthwiseConv2D")
        return problems

    @classmethod
    def from_depthwise_conv2d(cls, conv: keras.layers.DepthwiseConv2D, phase: str = "meta", **kwargs):
        """Wrap a built, trained `keras.layers.DepthwiseConv2D`: its kernel/bias become Θ (copied).

        Args:
            conv: the trained depthwise convolution (``channels_last``).
            phase: phase of the new layer (default ``"meta"``).
            **kwargs: passed to the constructor (e.g. ``name``; default ``"ss_" + conv.name``).

        Returns:
            A built `ScaleShiftDepthwiseConv2D` with ``scale=1``, ``shift=0`` whose output
            equals ``conv``'s.
        """
        problems = cls.conversion_problems(conv)
        if problems:
            raise ValueError(f"Cannot wrap DepthwiseConv2D '{conv.name}': {'; '.join(problems)}.")
        layer = cls(
            kernel_size=conv.kernel_size,
            strides=conv.strides,
            padding=conv.padding,
            depth_multiplier=conv.depth_multiplier,
            dilation_rate=conv.dilation_rate,
            use_bias=conv.use_bias,
            activation=conv.activation,
            phase=phase,
            name=kwargs.pop("name", f"ss_{conv.name}"),
            dtype=conv.dtype_policy,
            **kwargs,
        )
        layer.build((None, None, None, conv.kernel.shape[2]))
        layer.kernel.assign(conv.kernel)
        if conv.use_bias:
            layer.bias.assign(conv.bias)
        return layer
