"""A keras-hub CNN backbone meta-transferred. Needs the optional extra (``pip install -e .[hub]``):
skipped where keras_hub is not installed, as in CI, which installs ``.[dev]`` only."""

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from mtl_keras import MetaTransferModel, enable_scale_shift  # noqa: E402
from mtl_keras.layers import ScaleShiftConv2D, phi_weights  # noqa: E402
from tests.helpers import randomise_backbone  # noqa: E402


def _resnet_backbone():
    """A small randomly initialised keras-hub ResNet (no preset, nothing downloaded)."""
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 64],  # keras-hub requires 64 first
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(32, 32, 3),
    )


def test_keras_hub_resnet_backbone_converts_exactly_and_meta_trains_phi():
    hub = _resnet_backbone()
    randomise_backbone(hub, np.random.default_rng(0))
    convs = [layer.name for layer in hub.layers if type(layer).__name__ == "Conv2D"]
    backbone = enable_scale_shift(hub)
    assert [layer.name for layer in backbone.layers if isinstance(layer, ScaleShiftConv2D)] == convs
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    expected = np.asarray(hub(x, training=False))
    np.testing.assert_allclose(np.asarray(backbone(x, training=False)), expected, rtol=1e-5, atol=1e-6)
    assert expected.ndim == 4  # a feature map: MetaTransferModel pools it
    model = MetaTransferModel(backbone, ways=3)
    np.testing.assert_allclose(model.embed(x), expected.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    assert {id(v) for v in model.backbone.trainable_variables} == {id(v) for v in phi_weights(backbone)}
    with pytest.raises(ValueError, match="enable_scale_shift"):
        MetaTransferModel(_resnet_backbone(), ways=3)
