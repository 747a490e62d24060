"""`ScaleShiftConv2D`: a convolution with frozen weights Θ and meta-learned Φ."""

from __future__ import annotations

import keras
from keras import ops

from mtl_keras.layers.conv import conv2d
from mtl_keras.layers.scale_shift_layer import PHASES, ScaleShiftLayer, common_conversion_problems

__all__ = ["PHASES", "ScaleShiftConv2D"]


@keras.saving.register_keras_serializable(package="mtl_keras")
class ScaleShiftConv2D(ScaleShiftLayer):
    """2-D convolution with per-kernel scaling and per-channel shifting.

    Computes ``activation(conv(x, kernel * scale) + bias + shift)`` where the
    pretrained ``kernel`` ``(kh, kw, Cin / groups, Cout)`` and ``bias`` ``(Cout,)``
    are Θ and the ``scale`` ``(1, 1, Cin / groups, Cout)`` (one scalar per k×k
    kernel, init 1) and ``shift`` ``(Cout,)`` (init 0) are Φ, the
    scaling-and-shifting (SS) operations of meta-transfer learning.

    The ``phase`` decides which weights train: ``"pretrain"`` trains Θ only
    (Φ stays at 1 / 0, so the layer is an ordinary `Conv2D`); ``"meta"`` trains
    Φ only. Use `mtl_keras.set_phase` to switch a whole model.

    Args:
        filters: ``Cout``.
        kernel_size: int or ``(kh, kw)``.
        strides: int or ``(sh, sw)``.
        padding: ``"same"`` or ``"valid"``.
        use_bias: whether Θ holds a bias (the shift Φ2 is always there).
        phase: ``"pretrain"`` or ``"meta"``.
        kernel_initializer: initializer of Θ's kernel.
        bias_initializer: initializer of Θ's bias.
        kernel_regularizer: optional regularizer of the kernel.
        dilation_rate: int or ``(dh, dw)``.
        groups: as `keras.layers.Conv2D`'s: ``Cin`` and ``Cout`` divisible by it.
        activation: applied after the shift (``None``: linear), so that a `Conv2D` with a
            fused activation converts exactly.

    Input shape: ``(batch, H, W, Cin)``. Output shape: ``(batch, H', W', Cout)``.

    Example:
        >>> layer = ScaleShiftConv2D(64, 3, padding="same")
        >>> y = layer(np.zeros((2, 32, 32, 3), "float32"))  # (2, 32, 32, 64)

    Reference:
        Sun et al., "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019, §4.2.
    """

    def __init__(
        self,
        filters: int,
        kernel_size=3,
        strides=1,
        padding: str = "same",
        use_bias: bool = True,
        phase: str = "pretrain",
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        dilation_rate=1,
        groups: int = 1,
        activation=None,
        **kwargs,
    ):
        super().__init__(phase=phase, activation=activation, **kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.strides = _pair(strides)
        self.padding = padding.lower()
        self.use_bias = bool(use_bias)
        self.dilation_rate = _pair(dilation_rate)
        self.groups = int(groups)
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be divisible by groups ({self.groups}).")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        cin = int(input_shape[-1])
        if cin % self.groups:
            raise ValueError(
                f"ScaleShiftConv2D '{self.name}': {cin} input channels are not divisible by groups={self.groups}."
            )
        cin //= self.groups
        kh, kw = self.kernel_size
        # autocast=False: under a mixed policy (e.g. "mixed_bfloat16") `call` forms kernel * scale
        # and bias + shift in the variables' float32 and casts the *result* once; autocasting
        # would round the scale to bfloat16 first (1.003 → 1.0: meta-learned changes lost).
        self.kernel = self.add_weight(
            name="kernel",
            shape=(kh, kw, cin, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            autocast=False,
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer, autocast=False
            )
            if self.use_bias
            else None
        )
        self.scale = self.add_weight(
            name="scale", shape=(1, 1, cin, self.filters), initializer="ones", autocast=False
        )
        self.shift = self.add_weight(name="shift", shape=(self.filters,), initializer="zeros", autocast=False)
        self._apply_phase()

    # ------------------------------------------------------------------ compute
    def call(self, inputs):
        # Θ ⊙ Φ in float32, then one cast to the compute dtype (bfloat16 under mixed precision).
        kernel = ops.cast(self.kernel * self.scale, inputs.dtype)
        offset = self.shift if self.bias is None else self.bias + self.shift
        outputs = conv2d(
            inputs,
            kernel,
            ops.cast(offset, inputs.dtype),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )
        return self._activate(outputs)

    def compute_output_shape(self, input_shape):
        return conv_output_shape(
            input_shape, self.filters, self.kernel_size, self.strides, self.padding, self.dilation_rate
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            dilation_rate=self.dilation_rate,
            groups=self.groups,
        )
        return config

    @staticmethod
    def conversion_problems(conv) -> list[str]:
        """Why `from_conv2d` cannot convert ``conv`` (empty when it can)."""
        problems = common_conversion_problems(conv)
        if type(conv) is not keras.layers.Conv2D:
            problems.append(f"a {type(conv).__name__}, not a keras.layers.Conv2D")
        return problems

    @classmethod
    def from_conv2d(cls, conv: keras.layers.Conv2D, phase: str = "meta", **kwargs):
        """Wrap a built, trained `keras.layers.Conv2D`: its kernel/bias become Θ (copied).

        Strides, padding, dilation, groups and a fused activation carry over; a
        ``channels_first`` or quantized convolution, or a subclass of `Conv2D` (whose
        ``call`` may differ), raises.

        Args:
            conv: the trained convolution.
            phase: phase of the new layer (default ``"meta"``).
            **kwargs: passed to the constructor (e.g. ``name``; default ``"ss_" + conv.name``).

        Returns:
            A built `ScaleShiftConv2D` with ``scale=1``, ``shift=0`` whose output
            equals ``conv``'s.
        """
        problems = cls.conversion_problems(conv)
        if problems:
            raise ValueError(f"Cannot wrap Conv2D '{conv.name}': {'; '.join(problems)}.")
        layer = cls(
            filters=conv.filters,
            kernel_size=conv.kernel_size,
            strides=conv.strides,
            padding=conv.padding,
            use_bias=conv.use_bias,
            phase=phase,
            dilation_rate=conv.dilation_rate,
            groups=conv.groups,
            activation=conv.activation,
            name=kwargs.pop("name", f"ss_{conv.name}"),
            dtype=conv.dtype_policy,
            **kwargs,
        )
        kernel = conv.kernel
        layer.build((None, None, None, kernel.shape[2] * conv.groups))
        layer.kernel.assign(kernel)
        if conv.use_bias:
            layer.bias.assign(conv.bias)
        return layer


def conv_output_shape(input_shape, filters, kernel_size, strides, padding, dilation_rate=(1, 1)) -> tuple:
    """``(batch, H', W', filters)`` of a channels-last 2-D convolution of ``input_shape``."""
    out = []
    for size, k, s, d in zip(input_shape[1:3], kernel_size, strides, dilation_rate):
        if size is None:
            out.append(None)
        elif padding == "same":
            out.append((size + s - 1) // s)
        else:
            out.append((size - (k - 1) * d - 1) // s + 1)
    return (input_shape[0], *out, filters)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"Expected an int or a pair, got {value}.")
    return value
