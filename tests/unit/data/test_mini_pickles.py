"""miniImageNet in the two pickle layouts that circulate: MetaOptNet's (Python 2 pickles of
Gidaris & Komodakis) and learn2learn's caches (Python 3 pickles), on tiny fixtures written in
those formats."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mtl_keras.data.registry import load_benchmark
from mtl_keras.data.sources import mini_imagenet
from mtl_keras_app import cli
from tests.helpers import py2_pickle

pytestmark = pytest.mark.filterwarnings("ignore:.*standard benchmark:UserWarning")

WNIDS = {"train": ["n0300", "n0100", "n0200"], "val": ["n0500", "n0400"], "test": ["n0700", "n0600"]}


def images_of(split: str, wnid: str, count: int = 3) -> np.ndarray:
    """(count, 12, 12, 3) images whose pixels say which class and split they come from."""
    pixels = np.zeros((count, 12, 12, 3), np.uint8)
    pixels[..., 0] = int(wnid[1:]) // 100
    pixels[..., 1] = {"train": 1, "val": 2, "test": 3}[split]
    pixels[..., 2] = np.arange(count)[:, None, None]
    return pixels


def write_metaoptnet(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = dict(zip(("train", "val", "test"), mini_imagenet.PICKLE_FILES["metaoptnet"]))
    label = 0  # global labels across splits, as in the original files
    for split, wnids in WNIDS.items():
        data, labels, catname2label = [], [], {}
        for wnid in wnids:
            catname2label[wnid] = label
            data.append(images_of(split, wnid))
            labels += [label] * 3
            label += 1
        order = np.random.default_rng(0).permutation(len(labels))  # images not grouped by class
        record = {
            "data": np.concatenate(data)[order],
            "labels": [labels[i] for i in order],
            "catname2label": catname2label,
        }
        (root / files[split]).write_bytes(py2_pickle(record))
    return root


def write_learn2learn(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = dict(zip(("train", "val", "test"), mini_imagenet.PICKLE_FILES["learn2learn"]))
    for split, wnids in WNIDS.items():
        data = np.concatenate([images_of(split, w) for w in wnids])
        class_dict = {w: list(range(3 * i, 3 * i + 3)) for i, w in enumerate(wnids)}
        (root / files[split]).write_bytes(pickle.dumps({"image_data": data, "class_dict": class_dict}))
    return root


@pytest.mark.parametrize("write", [write_metaoptnet, write_learn2learn])
def test_pickle_layouts_load_in_memory_with_names_and_pixels(tmp_path, write):
    root = write(tmp_path / "mini")
    train, val, test = load_benchmark("mini_imagenet", str(root), image_size=12, allow_pickle=True)
    for split in (train, val, test):
        assert split.class_names == sorted(WNIDS[split.name])
        assert not split.is_file_backed and split.images.shape[1:] == (12, 12, 3)
        for image, label in zip(split.images, split.labels):
            wnid = split.class_names[label]
            assert image[0, 0, 0] == int(wnid[1:]) // 100  # the image is labelled with its class
            assert image[0, 0, 1] == {"train": 1, "val": 2, "test": 3}[split.name]
        assert np.bincount(split.labels).tolist() == [3] * split.num_classes
    np.testing.assert_array_equal(val.class_ids, [3, 4])  # unique across splits
    small = mini_imagenet.load(root, image_size=6, allow_pickle=True)[0]
    assert small.images.shape[1:] == (6, 6, 3)


def test_pickle_layouts_need_the_opt_in_and_name_a_missing_file(tmp_path):
    root = write_metaoptnet(tmp_path / "mini")
    with pytest.raises(
        ValueError, match=r"train_phase_train.pickle' .* are Python pickles.*allow_pickle=True"
    ):
        mini_imagenet.load(root, image_size=12)
    os.remove(root / mini_imagenet.PICKLE_FILES["metaoptnet"][2])
    with pytest.raises(FileNotFoundError, match=r"miniImageNet_category_split_test.pickle' is missing"):
        mini_imagenet.load(root, image_size=12, allow_pickle=True)


def test_a_pickle_naming_other_globals_is_refused(tmp_path):
    root = write_learn2learn(tmp_path / "mini")
    (root / mini_imagenet.PICKLE_FILES["learn2learn"][1]).write_bytes(pickle.dumps(os.system))
    with pytest.raises(ValueError, match=r"validation.pkl' is not a readable .* global '(posix|nt).system'"):
        mini_imagenet.load(root, image_size=12, allow_pickle=True)


def test_cli_reads_the_pickles_with_allow_pickle(tmp_path, capsys):
    root = write_metaoptnet(tmp_path / "mini")
    command = ["pretrain", "--config", "paper-mini_imagenet-1shot", "--root", str(root), "--quiet"]
    command += [
        "--no-tensorboard",
        "--set",
        "widths=4,4,4,4",
        "--set",
        "pretrain_epochs=1",
        "--set",
        "image_size=16",
    ]
    assert cli.main([*command, "--run-dir", str(tmp_path / "refused")]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert cli.main([*command, "--allow-pickle", "--run-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "pretrained_backbone.weights.h5").is_file()


def test_a_learn2learn_class_listing_missing_images_is_named(tmp_path):
    root = write_learn2learn(tmp_path / "mini")
    path = root / mini_imagenet.PICKLE_FILES["learn2learn"][2]
    record = pickle.loads(path.read_bytes())
    record["class_dict"]["n0600"] = [4, 5, 99]
    path.write_bytes(pickle.dumps(record))
    with pytest.raises(ValueError, match=r"test.pkl': class 'n0600' lists image indices outside 0..5"):
        mini_imagenet.load(root, image_size=12, allow_pickle=True)
