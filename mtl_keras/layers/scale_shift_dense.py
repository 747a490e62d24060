"""`ScaleShiftDense`: a dense layer with frozen weights Θ and meta-learned Φ."""

from __future__ import annotations

import keras
from keras import ops

from mtl_keras.layers.scale_shift_layer import ScaleShiftLayer, common_conversion_problems


@keras.saving.register_keras_serializable(package="mtl_keras")
class ScaleShiftDense(ScaleShiftLayer):
    """Dense layer with element-wise scaling of the kernel and per-unit shifting.

    Computes ``activation(x @ (kernel * scale) + bias + shift)`` with the pretrained
    ``kernel`` ``(Din, units)`` and ``bias`` ``(units,)`` as Θ and ``scale`` ``(Din, units)``
    (init 1) and ``shift`` ``(units,)`` (init 0) as Φ. A dense layer on the channel axis is a
    1×1 convolution, whose "one scale per kernel" of `ScaleShiftConv2D` is one scale per
    weight: the same Φ as a 1×1 `ScaleShiftConv2D`, so as many scales as Θ has weights
    (ConvNeXt's pointwise layers are `Dense`). Only converted when asked for
    (``enable_scale_shift(model, layers=(..., "Dense"))``).

    Args:
        units: ``units``.
        use_bias: whether Θ holds a bias (the shift is always there).
        activation: applied after the shift (``None``: linear).
        phase: ``"pretrain"`` or ``"meta"``.
        kernel_initializer: initializer of Θ's kernel.
        bias_initializer: initializer of Θ's bias.

    Input shape: ``(..., Din)``. Output shape: ``(..., units)``.
    """

    def __init__(
        self,
        units: int,
        use_bias: bool = True,
        activation=None,
        phase: str = "pretrain",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(phase=phase, activation=activation, **kwargs)
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        din = int(input_shape[-1])
        # autocast=False for the reason given in ScaleShiftConv2D.build (Φ ⊙ Θ formed in float32).
        self.kernel = self.add_weight(
            name="kernel", shape=(din, self.units), initializer=self.kernel_initializer, autocast=False
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer, autocast=False
            )
            if self.use_bias
            else None
        )
        self.scale = self.add_weight(
            name="scale", shape=(din, self.units), initializer="ones", autocast=False
        )
        self.shift = self.add_weight(name="shift", shape=(self.units,), initializer="zeros", autocast=False)
        self._apply_phase()

    def call(self, inputs):
        kernel = ops.cast(self.kernel * self.scale, inputs.dtype)
        offset = self.shift if self.bias is None else self.bias + self.shift
        return self._activate(ops.matmul(inputs, kernel) + ops.cast(offset, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config

    @staticmethod
    def conversion_problems(dense) -> list[str]:
        """Why `from_dense` cannot convert ``dense`` (empty when it can)."""
        problems = common_conversion_problems(dense)
        if type(dense) is not keras.layers.Dense:
            problems.append(f"a {type(dense).__name__}, not a keras.layers.Dense")
        return problems

    @classmethod
    def from_dense(cls, dense: keras.layers.Dense, phase: str = "meta", **kwargs):
        """Wrap a built, trained `keras.layers.Dense`: its kernel/bias become Θ (copied).

        Args:
            dense: the trained layer (a LoRA-enabled one contributes its merged kernel).
            phase: phase of the new layer (default ``"meta"``).
            **kwargs: passed to the constructor (e.g. ``name``; default ``"ss_" + dense.name``).

        Returns:
            A built `ScaleShiftDense` with ``scale=1``, ``shift=0`` whose output equals ``dense``'s.
        """
        problems = cls.conversion_problems(dense)
        if problems:
            raise ValueError(f"Cannot wrap Dense '{dense.name}': {'; '.join(problems)}.")
        layer = cls(
            units=dense.units,
            use_bias=dense.use_bias,
            activation=dense.activation,
            phase=phase,
            name=kwargs.pop("name", f"ss_{dense.name}"),
            dtype=dense.dtype_policy,
            **kwargs,
        )
        kernel = dense.kernel
        layer.build((None, kernel.shape[0]))
        layer.kernel.assign(kernel)
        if dense.use_bias:
            layer.bias.assign(dense.bias)
        return layer
