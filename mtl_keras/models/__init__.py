"""Models: pretraining classifier, linear base learner, meta-transfer model."""

from mtl_keras.models.base_learner import LinearBaseLearner, inner_loop
from mtl_keras.models.meta_transfer import MetaTransferModel
from mtl_keras.models.pretrain import PretrainModel

__all__ = ["LinearBaseLearner", "MetaTransferModel", "PretrainModel", "inner_loop"]
