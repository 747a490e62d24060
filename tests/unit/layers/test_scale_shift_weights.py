"""Φ-only weights files: a stock pretrained model + the file reproduce the meta-trained model."""

import os

import keras
import numpy as np
import pytest

from mtl_keras import (
    MetaTransferModel,
    enable_scale_shift,
    load_scale_shift_weights,
    make_episodes,
    resnet12,
    save_scale_shift_weights,
)
from mtl_keras.layers import phi_weights
from tests.conftest import make_prototype_split
from tests.helpers import calibrate_batch_norm, randomise_backbone

SHAPE = (32, 32, 3)


def _stock(seed):
    """A "pretrained" MobileNetV2: random weights of ``seed``, BN statistics of some images."""
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(SHAPE, alpha=0.35, include_top=False, weights=None, pooling="avg")
    return calibrate_batch_norm(model, np.random.default_rng(seed).random((16, *SHAPE)).astype("float32"))


def _episodes(batches=1, seed=0):
    split = make_prototype_split(num_classes=6, per_class=6, size=32, channels=3, seed=seed)
    return make_episodes(split, 3, 1, 2, meta_batch_size=1, num_batches=batches, seed=seed)


def _meta_model(stock):
    return MetaTransferModel(enable_scale_shift(stock), ways=3, inner_steps=2, eval_inner_steps=3)


def test_stock_model_plus_phi_file_reproduces_the_meta_trained_model(tmp_path):
    stock = _stock(seed=0)
    pretrained = stock.get_weights()  # what weights="imagenet" would load
    trained = _meta_model(stock)
    trained.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    trained.fit(_episodes(), epochs=1, verbose=0)
    inputs, _ = next(iter(_episodes(seed=4)))
    expected = trained(inputs).numpy()
    path = save_scale_shift_weights(trained, str(tmp_path / "mobilenet.phi.npz"))

    # Elsewhere: the same stock architecture and pretrained weights, converted, plus the file.
    other_stock = _stock(seed=1)
    other_stock.set_weights(pretrained)
    fresh = _meta_model(other_stock)
    assert not np.allclose(fresh(inputs).numpy(), expected)  # Φ = (1, 0), head zero: not the same
    load_scale_shift_weights(fresh, path)
    np.testing.assert_array_equal(fresh(inputs).numpy(), expected)

    # The file holds Φ and the head, nothing else: float32 bytes of exactly those, plus zip headers.
    with np.load(path) as data:
        keys = set(data.files)
        assert keys == {"format", "head/kernel", "head/bias"} | {
            f"phi/{layer.name}/{w}"
            for layer in trained.backbone.layers
            if hasattr(layer, "phi")
            for w in ("scale", "shift")
        }
    phi_bytes = sum(v.numpy().nbytes for v in phi_weights(trained.backbone)) + 4 * (1280 * 3 + 3)
    size = os.path.getsize(path)
    assert phi_bytes <= size < phi_bytes + 300 * len(keys)
    trained.backbone.save_weights(tmp_path / "full.weights.h5")
    print(
        f"Φ file {size / 1e3:.0f} kB, full weights {os.path.getsize(tmp_path / 'full.weights.h5') / 1e3:.0f} kB"
    )


def test_phi_file_of_a_3x3_backbone_is_a_small_fraction_of_its_weights(tmp_path):
    model = MetaTransferModel(resnet12((32, 32, 3), widths=(16, 32, 64, 128)), ways=5)
    path = save_scale_shift_weights(model, str(tmp_path / "phi.npz"))
    model.save_weights(tmp_path / "full.weights.h5")
    ratio = os.path.getsize(path) / os.path.getsize(tmp_path / "full.weights.h5")
    assert ratio < 0.15, ratio  # one scale per 3×3 kernel: about a ninth of Θ


def test_loading_names_missing_layers_shapes_and_other_files(tmp_path):
    trained = _meta_model(_stock(seed=0))
    randomise_backbone(trained.backbone, np.random.default_rng(0))
    path = save_scale_shift_weights(trained, str(tmp_path / "phi.npz"))

    other_targets = MetaTransferModel(enable_scale_shift(_stock(seed=0), layers=("Conv2D",)), ways=3)
    before = [v.numpy().copy() for v in phi_weights(other_targets.backbone)]
    with pytest.raises(
        ValueError, match=r"17 in the file but not in the model: expanded_conv_depthwise, block_1_"
    ):
        load_scale_shift_weights(other_targets, path)
    for b, v in zip(before, phi_weights(other_targets.backbone)):  # nothing assigned
        np.testing.assert_array_equal(b, v.numpy())

    other_ways = MetaTransferModel(enable_scale_shift(_stock(seed=0)), ways=4)
    with pytest.raises(
        ValueError, match=r"head/kernel \(1280, 3\) in the file, \(1280, 4\) in the model.*same ways"
    ):
        load_scale_shift_weights(other_ways, path)

    backbone_only = save_scale_shift_weights(trained.backbone, str(tmp_path / "backbone.npz"))
    with pytest.raises(ValueError, match="1 missing from the file: head"):
        load_scale_shift_weights(_meta_model(_stock(seed=0)), backbone_only)

    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a scale-and-shift weights file"):
        load_scale_shift_weights(trained, str(tmp_path / "other.npz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scale_shift_weights(trained, str(tmp_path / "nope.npz"))


def test_backbone_only_files_and_head_entries_ignored_by_a_bare_backbone(tmp_path):
    trained = _meta_model(_stock(seed=0))
    randomise_backbone(trained.backbone, np.random.default_rng(1))
    path = save_scale_shift_weights(trained, str(tmp_path / "phi.npz"))
    bare = enable_scale_shift(_stock(seed=0))
    load_scale_shift_weights(bare, path)  # Φ only: a backbone has no head
    for a, b in zip(phi_weights(bare), phi_weights(trained.backbone)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    fresh = _meta_model(_stock(seed=0))
    load_scale_shift_weights(fresh, path, include_head=False)
    np.testing.assert_array_equal(fresh.head.kernel.numpy(), 0.0)


def test_saving_a_model_without_phi_names_enable_scale_shift(tmp_path):
    with pytest.raises(ValueError, match=r"no scale-and-shift layers.*enable_scale_shift"):
        save_scale_shift_weights(_stock(seed=0), str(tmp_path / "x.npz"))
    assert not os.listdir(tmp_path)
