"""Backbones: functional builders mapping images to feature vectors."""

from mtl_keras.backbones.conv4_backbone import conv4
from mtl_keras.backbones.resnet12_backbone import resnet12
from mtl_keras.backbones.resnet18_backbone import resnet18

BACKBONES = {"resnet12": resnet12, "conv4": conv4, "resnet18": resnet18}


def get_backbone(name: str, input_shape, **kwargs):
    """Build a backbone by name (``resnet12``, ``conv4``, ``resnet18``)."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone '{name}'. Known: {', '.join(BACKBONES)}.")
    return BACKBONES[name](input_shape, **kwargs)


__all__ = ["resnet12", "conv4", "resnet18", "get_backbone", "BACKBONES"]
