"""`ScaleShiftConv2D`: a convolution with frozen weights Θ and meta-learned Φ."""

from __future__ import annotations

import keras
from keras import ops

from mtl_keras.layers.conv import conv2d

PHASES = ("pretrain", "meta")


@keras.saving.register_keras_serializable(package="mtl_keras")
class ScaleShiftConv2D(keras.layers.Layer):
    """2-D convolution with per-kernel scaling and per-channel shifting.

    Computes ``conv(x, kernel * scale) + bias + shift`` where the pretrained
    ``kernel`` ``(kh, kw, Cin, Cout)`` and ``bias`` ``(Cout,)`` are Θ and the
    ``scale`` ``(1, 1, Cin, Cout)`` (one scalar per k×k kernel, init 1) and
    ``shift`` ``(Cout,)`` (init 0) are Φ, the scaling-and-shifting (SS)
    operations of meta-transfer learning.

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
        kernel_initializer, bias_initializer: initializers of Θ.
        kernel_regularizer: optional regularizer of the kernel.

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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.strides = _pair(strides)
        self.padding = padding.lower()
        self.use_bias = bool(use_bias)
        self.phase = phase
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        cin = int(input_shape[-1])
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

    # ------------------------------------------------------------------ phases
    @property
    def theta(self) -> list:
        """The pretrained weights Θ: ``[kernel, bias]`` (bias only if ``use_bias``)."""
        return [self.kernel] + ([self.bias] if self.bias is not None else [])

    @property
    def phi(self) -> list:
        """The meta-transfer weights Φ: ``[scale, shift]``."""
        return [self.scale, self.shift]

    def set_phase(self, phase: str) -> None:
        """Switch which weights train: ``"pretrain"`` (Θ) or ``"meta"`` (Φ)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
        self.phase = phase
        if self.built:
            self._apply_phase()

    def _apply_phase(self):
        for v in self.theta:
            v.trainable = self.phase == "pretrain"
        for v in self.phi:
            v.trainable = self.phase == "meta"

    # ------------------------------------------------------------------ compute
    def call(self, inputs):
        # Θ ⊙ Φ in float32, then one cast to the compute dtype (bfloat16 under mixed precision).
        kernel = ops.cast(self.kernel * self.scale, inputs.dtype)
        offset = self.shift if self.bias is None else self.bias + self.shift
        return conv2d(
            inputs, kernel, ops.cast(offset, inputs.dtype), strides=self.strides, padding=self.padding
        )

    def compute_output_shape(self, input_shape):
        out = []
        for size, k, s in zip(input_shape[1:3], self.kernel_size, self.strides):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append((size + s - 1) // s)
            else:
                out.append((size - k) // s + 1)
        return (input_shape[0], *out, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            use_bias=self.use_bias,
            phase=self.phase,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config

    @classmethod
    def from_conv2d(cls, conv: keras.layers.Conv2D, phase: str = "meta", **kwargs):
        """Wrap a built, trained `keras.layers.Conv2D`: its kernel/bias become Θ.

        Only ``groups=1``, ``dilation_rate=1``, ``data_format="channels_last"``
        convolutions without activation can be wrapped; anything else raises.

        Args:
            conv: the trained convolution.
            phase: phase of the new layer (default ``"meta"``).

        Returns:
            A built `ScaleShiftConv2D` with ``scale=1``, ``shift=0`` whose output
            equals ``conv``'s.
        """
        if not conv.built:
            raise ValueError(f"Conv2D '{conv.name}' is not built: call it on data first.")
        problems = []
        if getattr(conv, "groups", 1) != 1:
            problems.append(f"groups={conv.groups}")
        if tuple(conv.dilation_rate) != (1, 1):
            problems.append(f"dilation_rate={conv.dilation_rate}")
        if conv.data_format != "channels_last":
            problems.append(f"data_format={conv.data_format}")
        if conv.activation not in (None, keras.activations.linear):
            problems.append(f"activation={conv.activation.__name__}")
        if problems:
            raise ValueError(
                f"Cannot wrap Conv2D '{conv.name}': unsupported {', '.join(problems)}. "
                "Move the activation to its own layer and use plain convolutions."
            )
        layer = cls(
            filters=conv.filters,
            kernel_size=conv.kernel_size,
            strides=conv.strides,
            padding=conv.padding,
            use_bias=conv.use_bias,
            phase=phase,
            name=kwargs.pop("name", f"ss_{conv.name}"),
            dtype=conv.dtype_policy,
            **kwargs,
        )
        cin = conv.kernel.shape[2]
        layer.build((None, None, None, cin))
        layer.kernel.assign(conv.kernel)
        if conv.use_bias:
            layer.bias.assign(conv.bias)
        return layer


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"Expected an int or a pair, got {value}.")
    return value
