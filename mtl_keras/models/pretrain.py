"""`PretrainModel`: the backbone trained as an ordinary classifier on base classes."""

from __future__ import annotations

import keras

from mtl_keras.layers.phase import set_phase


@keras.saving.register_keras_serializable(package="mtl_keras")
class PretrainModel(keras.Model):
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

    def fit(self, x=None, y=None, *args, shuffle: bool = False, **kwargs):
        """`keras.Model.fit`; ``shuffle`` defaults to False (`pretrain_dataset` shuffles)."""
        return super().fit(x, y, *args, shuffle=shuffle, **kwargs)

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
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)
