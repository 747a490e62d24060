"""Layers of mtl_keras: the scale-and-shift layers, phases, BN folding, model conversion."""

from mtl_keras.layers.batch_statistics import batch_statistics_view, reestimate_batch_norm
from mtl_keras.layers.conversion import enable_scale_shift
from mtl_keras.layers.folding import fold_batch_norm
from mtl_keras.layers.phase import phi_weights, set_phase, theta_weights
from mtl_keras.layers.scale_shift_conv2d import ScaleShiftConv2D
from mtl_keras.layers.scale_shift_dense import ScaleShiftDense
from mtl_keras.layers.scale_shift_depthwise_conv2d import ScaleShiftDepthwiseConv2D
from mtl_keras.layers.scale_shift_layer import ScaleShiftLayer
from mtl_keras.layers.scale_shift_weights import load_scale_shift_weights, save_scale_shift_weights

__all__ = [
    "ScaleShiftConv2D",
    "ScaleShiftDense",
    "ScaleShiftDepthwiseConv2D",
    "ScaleShiftLayer",
    "batch_statistics_view",
    "reestimate_batch_norm",
    "enable_scale_shift",
    "fold_batch_norm",
    "load_scale_shift_weights",
    "phi_weights",
    "save_scale_shift_weights",
    "set_phase",
    "theta_weights",
]
