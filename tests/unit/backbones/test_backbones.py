import numpy as np
import pytest

from mtl_keras import ScaleShiftConv2D, conv4, resnet12, resnet18, set_phase
from mtl_keras.backbones import get_backbone
from mtl_keras.layers.phase import iter_layers


def _count_ss(model):
    return sum(isinstance(layer, ScaleShiftConv2D) for layer in iter_layers(model))


def test_resnet12_structure_and_output():
    model = resnet12((32, 32, 3), widths=(4, 8, 12, 16))
    assert model.output_shape == (None, 16)
    assert _count_ss(model) == 12  # 4 blocks × 3 convs; the 1×1 residuals are plain Conv2D
    out = model(np.zeros((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 16)


@pytest.mark.backends
def test_conv4_and_resnet18_shapes():
    assert conv4((32, 32, 1), filters=8).output_shape == (None, 8 * 2 * 2)
    r18 = resnet18((32, 32, 3), widths=(4, 8, 8, 8))
    assert r18.output_shape == (None, 8)
    assert _count_ss(r18) == 1 + 16


@pytest.mark.backends
def test_meta_phase_leaves_only_phi_trainable():
    model = resnet12((16, 16, 1), widths=(4, 4, 4, 4))
    set_phase(model, "meta")
    names = {w.name for w in model.trainable_weights}
    assert names == {"scale", "shift"}
    assert len(model.trainable_weights) == 24


@pytest.mark.backends
def test_backbone_rejects_too_small_images():
    with pytest.raises(ValueError, match="too small"):
        resnet12((8, 8, 3))
    with pytest.raises(ValueError, match="Unknown backbone"):
        get_backbone("vgg", (32, 32, 3))
