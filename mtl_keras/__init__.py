"""mtl_keras: meta-transfer learning (Sun et al., CVPR 2019) for Keras 3, on TensorFlow or JAX.

Public API (flat)::

    ScaleShiftConv2D, set_phase          # layers
    ScaleShiftDepthwiseConv2D, ScaleShiftDense
    enable_scale_shift                   # convert any pretrained Keras CNN
    save_scale_shift_weights, load_scale_shift_weights   # Φ-only files
    resnet12, conv4, resnet18            # backbones
    PretrainModel, MetaTransferModel     # models
    ClassSplit, load_benchmark, list_benchmarks, make_episodes, pretrain_dataset
    episode_source, EpisodeSource       # episodes without TensorFlow (any backend)
    pretrain_source                      # pretraining batches without TensorFlow (any backend)
    evaluate_episodes, EvaluationResult
    evaluate_nearest_centroid, base_feature_mean   # the SimpleShot baseline on the same episodes

Backends: the layers, backbones, models and evaluation run on Keras's TensorFlow and JAX
backends (``KERAS_BACKEND``, read by Keras at its first import). On JAX ``import mtl_keras``
imports no TensorFlow; the tf.data pipelines and SavedModel export need it (export from JAX runs
in a TensorFlow subprocess), `episode_source` and `pretrain_source` give the same data without it.

This package is the library. The experiment application built on it (the ``mtl-keras``
command, presets, the workflow, the ablation, plots, Keras Tuner search, tf.distribute
strategies) is the sibling package `mtl_keras_app`; nothing here imports it. Importing
mtl_keras changes neither the environment nor the process' file descriptors; to silence
TensorFlow's start-up lines on a CPU machine, call
``mtl_keras_app.quiet.quiet_tensorflow_startup()`` before importing Keras.
"""

__version__ = "0.1.0"

from mtl_keras import backbones, callbacks, data, layers, models  # noqa: F401
from mtl_keras.backbones import conv4, resnet12, resnet18
from mtl_keras.data import (
    ClassSplit,
    EpisodeSource,
    HardTaskPool,
    episode_source,
    list_benchmarks,
    load_benchmark,
    make_episodes,
    pretrain_dataset,
    pretrain_source,
)
from mtl_keras.evaluation import (
    EvaluationResult,
    base_feature_mean,
    evaluate_episodes,
    evaluate_nearest_centroid,
)
from mtl_keras.layers import (
    ScaleShiftConv2D,
    ScaleShiftDense,
    ScaleShiftDepthwiseConv2D,
    enable_scale_shift,
    load_scale_shift_weights,
    save_scale_shift_weights,
    set_phase,
)
from mtl_keras.models import LinearBaseLearner, MetaTransferModel, PretrainModel

__all__ = [
    "ClassSplit",
    "EpisodeSource",
    "EvaluationResult",
    "HardTaskPool",
    "LinearBaseLearner",
    "MetaTransferModel",
    "PretrainModel",
    "ScaleShiftConv2D",
    "ScaleShiftDense",
    "ScaleShiftDepthwiseConv2D",
    "conv4",
    "base_feature_mean",
    "enable_scale_shift",
    "episode_source",
    "evaluate_episodes",
    "evaluate_nearest_centroid",
    "list_benchmarks",
    "load_benchmark",
    "load_scale_shift_weights",
    "make_episodes",
    "pretrain_dataset",
    "pretrain_source",
    "resnet12",
    "resnet18",
    "save_scale_shift_weights",
    "set_phase",
]
