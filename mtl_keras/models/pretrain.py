"""`PretrainModel`: the backbone trained as an ordinary classifier on base classes."""

from __future__ import annotations

import copy

import keras
import numpy as np

from mtl_keras import hardware, keras_private
from mtl_keras.layers.phase import set_phase


class _KerasSteps:
    """On another backend: Keras's own steps, unchanged."""


def _backend_steps():
    """The mixin with `PretrainModel`'s steps for the Keras backend in use."""
    if keras.backend.backend() == "tensorflow":
        from mtl_keras.tensorflow_backend.pretrain_steps import TensorFlowPretrainSteps

        return TensorFlowPretrainSteps
    if keras.backend.backend() == "jax":
        from mtl_keras.jax_backend.pretrain_steps import JaxPretrainSteps

        return JaxPretrainSteps
    return _KerasSteps


@keras.saving.register_keras_serializable(package="mtl_keras")
class PretrainModel(
    _backend_steps(),
    keras_private.SymbolicBuildFromZeros,
    keras.Model,
):
    """Backbone + optional augmentation + dropout + ``Dense(num_classes)``.

    Trained with ordinary ``compile``/``fit`` on ``(images, labels)`` batches
    (``images (batch, H, W, C) float32 in [0, 1]``, ``labels (batch,) int``). The
    backbone is put in the ``pretrain`` phase: its `ScaleShiftConv2D` layers train
    Θ with Φ fixed at (1, 0). Afterwards hand it to
    `MetaTransferModel.from_pretrained`.

    Args:
        backbone: `keras.Model` ``images → (batch, D)``.
        num_classes: number of base classes.
        augmentation: optional layer applied to the images in training only
            (e.g. `mtl_keras.data.augment.pretrain_augmentation`).
        dropout: dropout rate before the classifier.

    Call: ``images (batch, H, W, C) → logits (batch, num_classes)``.

    Under a `tf.distribute` strategy with more than one replica, batch norm normalises
    with each replica's own batch statistics (as Keras and PyTorch DDP do by default), and
    after every step the moving statistics are averaged over the replicas (one batched
    all-reduce), so every replica and worker holds the same model — the moving averages of
    the global batch means. (Keras 3 alone updates each replica's moving statistics from its
    own shard only: the saved model held replica 0's, and two workers ended with different
    models.) For batch statistics over the global batch, i.e. training equal to one device,
    call `synchronize_batch_norm(model.backbone)` — several all-reduces per layer and step,
    costly across processes (docs/distributed.md).

    Example:
        >>> model = PretrainModel(resnet12((32, 32, 1)), num_classes=64)
        >>> model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        >>> model.fit(pretrain_dataset(train, batch_size=128), epochs=10)
    """

    def __init__(self, backbone, num_classes: int, augmentation=None, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = set_phase(backbone, "pretrain")
        self.num_classes = int(num_classes)
        self.augmentation = augmentation
        self.dropout_rate = float(dropout)
        self.dropout = keras.layers.Dropout(self.dropout_rate) if dropout else None
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        self.classifier.build((None, backbone.output_shape[-1]))

    def compile(self, *args, **kwargs):
        """`keras.Model.compile`, after warning when the dtype policy is ``mixed_bfloat16`` on a
        CPU that would emulate it (`mtl_keras.hardware.warn_if_emulated_bfloat16`)."""
        hardware.warn_if_emulated_bfloat16(self.dtype_policy.name, "PretrainModel.compile")
        super().compile(*args, **kwargs)

    def compile_from_config(self, config):
        """Compile from a `.keras` file's compile config, as `keras.Model.compile_from_config` does
        (Keras skips it for a model whose ``compile`` is overridden, which would load the model
        without its optimizer)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def build(self, input_shape):
        """Build the augmentation and dropout for ``input_shape`` ``(B, H, W, C)`` (the backbone
        and classifier are built already), so that a call or `load_weights` before `fit` builds
        the model without Keras's "unbuilt state" warning."""
        if self.augmentation is not None and not self.augmentation.built:
            self.augmentation.build(tuple(input_shape))
        if self.dropout is not None and not self.dropout.built:
            self.dropout.build((None, self.backbone.output_shape[-1]))
        self.built = True

    def _symbolic_build_batch(self):
        # `keras_private.SymbolicBuildFromZeros`: under a tf.distribute strategy Keras 3.15's TF
        # trainer peeks one batch of the (distributed) dataset to build the model: the batch is
        # never trained, and under MultiWorkerMirroredStrategy reducing it fails ("PerReplica
        # ... to a Tensor"). Build from a one-image zero batch of the right shapes instead.
        shape = tuple(self.backbone.input_shape[1:])
        return np.zeros((1, *shape), "float32"), np.zeros((1,), "int32")

    def _average_moving_statistics(self):
        """Set every replica's BN moving statistics to their mean over the replicas."""
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return
        stats = [
            v
            for layer in keras_private.all_layers(self.backbone)
            if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized
            for v in (layer.moving_mean, layer.moving_variance)
        ]
        if stats:  # ordered after this step's BN updates by TF's automatic control dependencies
            # One flat SUM: a list, or MEAN, fails under MultiWorkerMirroredStrategy in a graph
            # ("destinations can not be empty", TF 2.21), as all_gather does (see meta_transfer).
            flat = tf.concat([tf.reshape(tf.convert_to_tensor(v.value), [-1]) for v in stats], 0)
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, flat)
            means = tf.split(total / context.num_replicas_in_sync, [int(v.shape[0]) for v in stats])
            for variable, mean in zip(stats, means):
                variable.assign(mean)  # replica context, aggregation NONE: this replica's copy

    def call(self, images, training=False):
        if self.augmentation is not None and training:
            images = self.augmentation(images, training=True)
        features = self.backbone(images, training=training)
        if self.dropout is not None:
            features = self.dropout(features, training=training)
        return self.classifier(features)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes,
            augmentation=keras.saving.serialize_keras_object(self.augmentation)
            if self.augmentation is not None
            else None,
            dropout=self.dropout_rate,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Keras empties the nested configs it deserializes
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)


def synchronize_batch_norm(model: keras.layers.Layer, synchronized: bool = True) -> int:
    """Set ``synchronized`` on every `keras.layers.BatchNormalization` inside ``model``.

    Synchronized layers compute batch statistics over all replicas of the current
    `tf.distribute` strategy: training equals a one-device run on the same global batches.
    Keras does three all-reduces per layer in the forward pass and more in the backward
    pass, which costs little on one machine's devices and a lot across worker processes
    (measured with `benchmarks/probes/sync_bn_cost.py`: `benchmarks/RESULTS.md`). Takes effect
    for functions traced afterwards. Returns the number of layers set.
    """
    layers = [
        layer
        for layer in keras_private.all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.synchronized = bool(synchronized)
    return len(layers)
