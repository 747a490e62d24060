"""Layers of mtl_keras."""

from mtl_keras.layers.folding import fold_batch_norm
from mtl_keras.layers.phase import phi_weights, set_phase, theta_weights
from mtl_keras.layers.scale_shift_conv2d import ScaleShiftConv2D

__all__ = ["ScaleShiftConv2D", "fold_batch_norm", "set_phase", "phi_weights", "theta_weights"]
