"""`ScaleShiftLayer`: the phase logic shared by every scale-and-shift layer."""

from __future__ import annotations

import keras

PHASES = ("pretrain", "meta")


class ScaleShiftLayer(keras.layers.Layer):
    """Base of the layers with pretrained weights Θ (``kernel``, ``bias``) and meta-learned Φ
    (``scale``, ``shift``): `ScaleShiftConv2D`, `ScaleShiftDepthwiseConv2D`, `ScaleShiftDense`.

    A subclass creates ``kernel``, ``bias`` (or ``None``), ``scale`` and ``shift`` in ``build``
    and calls ``self._apply_phase()`` at its end. `mtl_keras.set_phase`, `phi_weights`,
    `fold_batch_norm`, `enable_scale_shift` and the Φ files recognise layers by this class.

    Args:
        phase: ``"pretrain"`` (Θ trains, Φ stays at 1 / 0) or ``"meta"`` (Φ trains, Θ frozen).
        activation: applied after the shift, as in the Keras layer the subclass replaces
            (``None``: linear).
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, phase: str = "pretrain", activation=None, **kwargs):
        super().__init__(**kwargs)
        _check_phase(phase)
        self.phase = phase
        self.activation = keras.activations.get(activation)

    @property
    def theta(self) -> list:
        """The pretrained weights Θ: ``[kernel, bias]`` (bias only if there is one)."""
        return [self.kernel] + ([self.bias] if self.bias is not None else [])

    @property
    def phi(self) -> list:
        """The meta-transfer weights Φ: ``[scale, shift]``."""
        return [self.scale, self.shift]

    @property
    def has_activation(self) -> bool:
        """Whether an activation other than the identity follows the shift."""
        return self.activation not in (None, keras.activations.linear)

    def set_phase(self, phase: str) -> None:
        """Switch which weights train: ``"pretrain"`` (Θ) or ``"meta"`` (Φ)."""
        _check_phase(phase)
        self.phase = phase
        if self.built:
            self._apply_phase()

    def _apply_phase(self):
        for v in self.theta:
            v.trainable = self.phase == "pretrain"
        for v in self.phi:
            v.trainable = self.phase == "meta"

    def _activate(self, outputs):
        return self.activation(outputs) if self.has_activation else outputs

    def get_config(self):
        config = super().get_config()
        config.update(phase=self.phase, activation=keras.activations.serialize(self.activation))
        return config


def _check_phase(phase):
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")


def common_conversion_problems(layer) -> list[str]:
    """What keeps a built Keras layer from becoming a scale-and-shift layer, whatever its type."""
    problems = []
    if not layer.built:
        problems.append("not built (call it on data first)")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        problems.append(f"data_format={layer.data_format}")
    if getattr(layer, "quantization_mode", None):
        problems.append(f"quantized ({layer.quantization_mode})")
    return problems
