"""Benchmark loaders of `mtl_keras.data.sources`, each on a tiny fixture in its real
on-disk format (split CSVs + images/, class folders, the CIFAR-100 python pickles,
Omniglot alphabet folders)."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl_keras.data.registry import load_benchmark
from mtl_keras.data.sources import arrays, cifar100, folders, mini_imagenet, omniglot, tiered_imagenet
from mtl_keras.data.sources._cifar_splits import (
    CIFAR100_COARSE_LABEL_NAMES,
    CIFAR_FS_CLASSES,
    FC100_SUPERCLASS_INDICES,
    FC100_SUPERCLASSES,
)

# Tiny fixtures never have the published class counts; that warning is tested once.
pytestmark = pytest.mark.filterwarnings("ignore:.*standard benchmark:UserWarning")

WNIDS = {
    "train": ["n01532829", "n01558993", "n01704323"],
    "val": ["n01855672", "n02091244", "n02114548"],
    "test": ["n01930112", "n01981276", "n02099601"],
}

# CIFAR-100's superclass -> classes table (cs.toronto.edu/~kriz/cifar.html), written
# out independently of the package so the fixture checks the package's split lists.
CIFAR100_TABLE = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}


# --------------------------------------------------------------------------- fixtures
def write_image(path: Path, size=(8, 8), value: int = 128, mode: str = "RGB") -> Path:
    """A tiny real image file; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.full((size[0], size[1], channels), value, np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)
    return path


def write_mini_csv_layout(root: Path, per_class: int = 4, nested: bool = False) -> Path:
    """miniImageNet as Ravi & Larochelle ship it: {train,val,test}.csv + images/."""
    for split, wnids in WNIDS.items():
        lines = ["filename,label"]
        for wnid in wnids:
            for i in range(per_class):
                name = f"{wnid}{i + 1:08d}.jpg"
                folder = root / "images" / (wnid if nested else "")
                write_image(folder / name)
                lines.append(f"{name},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_class_tree(root: Path, classes: dict[str, list[str]], per_class: int = 3, ext: str = "jpg") -> Path:
    """root/<split>/<class>/<image>."""
    for split, names in classes.items():
        for c, name in enumerate(names):
            for i in range(per_class):
                write_image(root / split / name / f"{i:03d}.{ext}", value=20 * c + i)
    return root


def write_cifar100_archive(root: Path) -> Path:
    """A cifar-100-python/ folder with the real pickle structure: 100 classes x (1 train + 1 test).

    Pixel planes encode provenance: red = fine label, green = 0 (train) / 1 (test),
    blue = 200, so tests can check the row-major plane layout and the merge.
    """
    coarse_names = sorted(CIFAR100_TABLE)
    fine_names = sorted(f for fs in CIFAR100_TABLE.values() for f in fs)
    coarse_of = {f: coarse_names.index(c) for c, fs in CIFAR100_TABLE.items() for f in fs}
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, green in (("train", 0), ("test", 1)):
        fine = list(range(100))
        data = np.empty((100, 3072), np.uint8)
        data[:, :1024] = np.arange(100)[:, None]
        data[:, 1024:2048] = green
        data[:, 2048:] = 200
        record = {
            b"filenames": [f"{fine_names[f]}_{part}.png".encode() for f in fine],
            b"batch_label": f"{part}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [coarse_of[fine_names[f]] for f in fine],
            b"data": data,
        }
        (folder / part).write_bytes(pickle.dumps(record))
    meta = {
        b"fine_label_names": [n.encode() for n in fine_names],
        b"coarse_label_names": [n.encode() for n in coarse_names],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return root


def write_omniglot(root: Path, background=7, evaluation=2, characters=2, drawers=3) -> Path:
    """images_background/ and images_evaluation/ with tiny 1-bit PNGs (black stroke on white)."""
    for part, count, prefix in (
        ("images_background", background, "Bg"),
        ("images_evaluation", evaluation, "Ev"),
    ):
        for a in range(count):
            for c in range(characters):
                for d in range(drawers):
                    pixels = np.full((12, 12), 255, np.uint8)
                    pixels[2:10, 3] = 0  # a vertical stroke, so rotations differ
                    path = root / part / f"{prefix}_Alphabet{a}" / f"character{c + 1:02d}" / f"{d:02d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).convert("1").save(path)
    return root


def assert_benchmark(splits, counts, benchmark):
    """Split names, class counts, class-disjointness and globally unique class ids."""
    assert [s.name for s in splits] == ["train", "val", "test"]
    assert [s.num_classes for s in splits] == list(counts)
    assert all(s.benchmark == benchmark for s in splits)
    names = [n for s in splits for n in s.class_names]
    assert len(set(names)) == len(names)
    ids = np.concatenate([s.class_ids for s in splits])
    np.testing.assert_array_equal(ids, np.arange(sum(counts)))


# --------------------------------------------------------------------------- miniImageNet
def test_mini_imagenet_csv_layout_loads_file_backed_splits_and_warns_on_class_counts(tmp_path):
    root = write_mini_csv_layout(tmp_path)
    with pytest.warns(
        UserWarning, match="3/3/3 train/val/test classes but the standard benchmark has 64/16/20"
    ):
        splits = mini_imagenet.load(root)
    assert_benchmark(splits, (3, 3, 3), "mini_imagenet")
    train = splits[0]
    assert train.is_file_backed and train.image_shape == (84, 84, 3)
    assert train.class_names == WNIDS["train"]
    assert train.num_images == 12 and all(Path(p).is_file() for p in train.paths)
    assert Path(train.paths[0]).name == "n0153282900000001.jpg"


def test_mini_imagenet_csv_layout_reports_missing_image_file(tmp_path):
    root = write_mini_csv_layout(tmp_path)
    (root / "images" / "n0185567200000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.csv' line 4 lists 'n0185567200000003\.jpg'.*Restore"):
        mini_imagenet.load(root)


def test_mini_imagenet_csv_layout_finds_images_in_per_class_subfolders(tmp_path):
    root = write_mini_csv_layout(tmp_path, nested=True)
    train, _, _ = mini_imagenet.load(root, image_size=(32, 40))
    assert Path(train.paths[0]).parent.name == "n01532829"
    assert train.image_size == (32, 40)


def test_mini_imagenet_csv_layout_reports_missing_split_csv_and_bad_header(tmp_path):
    root = write_mini_csv_layout(tmp_path)
    (root / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.csv' is missing"):
        mini_imagenet.load(root)
    (root / "test.csv").write_text("image,class\nx.jpg,n0\n")
    with pytest.raises(ValueError, match=r"test\.csv' line 1 must be the header 'filename,label'"):
        mini_imagenet.load(root)


def test_mini_imagenet_folder_layout_loads_wnid_class_folders(tmp_path):
    root = write_class_tree(tmp_path, WNIDS, per_class=4)
    assert mini_imagenet.detect_layout(root) == "folders"
    splits = mini_imagenet.load(root)
    assert_benchmark(splits, (3, 3, 3), "mini_imagenet")
    assert splits[2].class_names == WNIDS["test"]
    np.testing.assert_array_equal(splits[2].class_counts(), [4, 4, 4])


def test_mini_imagenet_reports_root_without_either_layout_and_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither split CSVs .* nor split folders"):
        mini_imagenet.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"root folder '.*nowhere' does not exist"):
        mini_imagenet.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no `root` given"):
        mini_imagenet.load(None)


# --------------------------------------------------------------------------- tieredImageNet
def test_tiered_imagenet_loads_class_folders_with_unique_ids(tmp_path):
    classes = {"train": ["n1", "n2", "n3", "n4"], "val": ["n5", "n6"], "test": ["n7", "n8", "n9"]}
    splits = tiered_imagenet.load(write_class_tree(tmp_path, classes))
    assert_benchmark(splits, (4, 2, 3), "tiered_imagenet")
    assert splits[1].class_names == ["n5", "n6"]
    np.testing.assert_array_equal(splits[1].class_ids, [4, 5])
    assert splits[0].image_shape == (84, 84, 3)


def test_tiered_imagenet_reports_empty_class_folder(tmp_path):
    root = write_class_tree(tmp_path, WNIDS)
    (root / "val" / "n09999999").mkdir()
    with pytest.raises(
        ValueError, match=r"class folder '.*val/n09999999' has no image files.*Add images or delete"
    ):
        tiered_imagenet.load(root)


def test_tiered_imagenet_reports_missing_split_folder(tmp_path):
    root = write_class_tree(tmp_path, {"train": ["a"], "test": ["b"]})
    with pytest.raises(
        FileNotFoundError, match=r"split folder '.*/val' or '.*/valid' or '.*/validation' is missing"
    ):
        tiered_imagenet.load(root)


# --------------------------------------------------------------------------- generic folders
def test_folders_infers_image_size_from_first_image_and_accepts_grayscale(tmp_path):
    classes = {"train": ["cat", "dog"], "valid": ["fox"], "test": ["owl", "yak"]}
    root = write_class_tree(tmp_path, classes, ext="png")
    write_image(root / "train" / "cat" / "000.png", size=(10, 14))  # first image sets the size
    write_image(root / "train" / "dog" / "extra.BMP")
    write_image(root / "test" / "owl" / "x.webp")
    train, val, test = folders.load(root, channels=1, benchmark="pets")
    assert_benchmark((train, val, test), (2, 1, 2), "pets")
    assert train.image_shape == (10, 14, 1)
    np.testing.assert_array_equal(train.class_counts(), [3, 4])
    assert test.class_counts()[0] == 4


def test_folders_reports_corrupt_image_unless_verify_none(tmp_path):
    root = write_class_tree(tmp_path, {"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    bad = root / "train" / "b" / "001.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(ValueError, match=r"'.*train/b/001\.jpg' is not a readable image .*verify='none'"):
        folders.load(root, image_size=8)
    train, _, _ = folders.load(root, image_size=8, verify="none")
    assert str(bad) in train.paths


def test_folders_full_verify_catches_truncated_image_that_header_check_misses(tmp_path):
    root = write_class_tree(tmp_path, {"train": ["a"], "val": ["b"], "test": ["c"]})
    path = root / "val" / "b" / "big.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    folders.load(root, image_size=8, verify="header")
    with pytest.raises(ValueError, match=r"big\.jpg' is not a readable image"):
        folders.load(root, image_size=8, verify="full")


def _corrupt_jpeg(path: Path) -> Path:
    """A JPEG with garbage in its entropy-coded data: PIL decodes it without a word, libjpeg warns."""
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 40):
        data[i] = 0xFF if i % 2 else 0x00
    path.write_bytes(bytes(data))
    with Image.open(path) as im:
        im.load()  # the fixture is what the test says: PIL alone cannot see it
    return path


def test_folders_full_verify_names_a_jpeg_whose_data_libjpeg_calls_corrupt(tmp_path):
    root = write_class_tree(tmp_path, {"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    bad = _corrupt_jpeg(root / "train" / "b" / "001.jpg")
    folders.load(root, image_size=8, verify="header")  # the header is fine
    with pytest.raises(
        ValueError, match=r"train/b/001\.jpg' is not a readable image \(libjpeg: Corrupt JPEG data"
    ):
        folders.load(root, image_size=8, verify="full")
    assert bad.exists()


def test_folders_skip_unreadable_leaves_the_files_out_and_lists_them(tmp_path):
    root = write_class_tree(tmp_path, {"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    (root / "train" / "a" / "000.jpg").write_bytes(b"not an image")
    for name in ("000.jpg", "001.jpg", "002.jpg"):  # class b: nothing readable is left
        (root / "train" / "b" / name).write_bytes(b"nor this")
    with pytest.warns(UserWarning) as record:
        train, _, _ = folders.load(root, image_size=8, unreadable="skip")
    text = " ".join(str(w.message) for w in record)
    assert "left out 4 unreadable file(s)" in text and "train/a/000.jpg" in text and "train/b/002.jpg" in text
    assert "class(es) b of the 'train' split hold no readable image" in text
    assert train.class_names == ["a"] and train.num_images == 2
    assert all("000.jpg" not in p for p in train.paths)
    np.testing.assert_array_equal(np.unique(train.labels), [0])
    with pytest.raises(ValueError, match="unreadable must be 'raise' or 'skip'"):
        folders.load(root, image_size=8, unreadable="ignore")


def test_mini_and_tiered_imagenet_skip_unreadable_files_as_the_cli_asks(tmp_path):
    """`--set skip_unreadable=true` reaches every file-backed benchmark (it used to be refused
    by name for miniImageNet's CSV layout and tieredImageNet: 'this benchmark takes no unreadable')."""
    mini = write_mini_csv_layout(tmp_path / "mini")
    wnid = WNIDS["train"][0]
    (mini / "images" / f"{wnid}00000002.jpg").write_bytes(b"truncated")
    with pytest.raises(ValueError, match=f"{wnid}00000002.jpg.*skip_unreadable=true"):
        load_benchmark("mini_imagenet", str(mini), image_size=8)
    with pytest.warns(UserWarning, match=f"left out 1 unreadable file.*{wnid}00000002.jpg"):
        train, _, _ = load_benchmark("mini_imagenet", str(mini), image_size=8, unreadable="skip")
    assert train.num_images == 3 * 4 - 1 and not any(p.endswith(f"{wnid}00000002.jpg") for p in train.paths)

    tiered = write_class_tree(tmp_path / "tiered", {"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    (tiered / "train" / "b" / "001.jpg").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="left out 1 unreadable file.*train/b/001.jpg"):
        train, _, _ = load_benchmark("tiered_imagenet", str(tiered), image_size=8, unreadable="skip")
    assert train.num_images == 5


def test_glyphs_refuses_the_image_file_options_by_name():
    with pytest.raises(ValueError, match=r"glyphs: this benchmark takes no verify \(--set verify=...\)"):
        load_benchmark("glyphs", verify="full")


def test_folders_reports_missing_root_missing_split_and_shared_class(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folders.load(tmp_path / "absent", image_size=8)
    root = write_class_tree(tmp_path / "d", {"train": ["a", "b"], "val": ["c"]})
    with pytest.raises(FileNotFoundError, match=r"split folder '.*/test' is missing"):
        folders.load(root, image_size=8)
    write_class_tree(root, {"test": ["b"]})
    with pytest.raises(ValueError, match="class 'b' is in both the 'train' and the 'test' split"):
        folders.load(root, image_size=8)


def test_folders_skips_non_image_files_with_a_warning(tmp_path):
    root = write_class_tree(tmp_path, {"train": ["a"], "val": ["b"], "test": ["c"]})
    (root / "train" / "a" / "notes.txt").write_text("hi")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(UserWarning, match="skipped 1 non-image file"):
        train, _, _ = folders.load(root, image_size=8)
    assert train.num_images == 3


def test_folders_loaded_through_the_registry(tmp_path):
    root = write_class_tree(tmp_path, {"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    bench = load_benchmark("folders", str(root), image_size=16)
    assert bench.train.image_size == (16, 16) and bench.test.class_ids.tolist() == [3]


# --------------------------------------------------------------------------- CIFAR-100
def test_cifar100_refuses_pickle_files_without_opt_in(tmp_path):
    root = write_cifar100_archive(tmp_path)
    with pytest.raises(ValueError, match=r"are Python pickles.*allow_pickle=True"):
        cifar100.load(root, variant="fc100")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_benchmark("cifar_fs", root)


def test_fc100_splits_by_superclass_into_60_20_20_classes(tmp_path):
    root = write_cifar100_archive(tmp_path)
    splits = load_benchmark("fc100", root, allow_pickle=True)
    assert_benchmark(splits, (60, 20, 20), "fc100")
    expected = {
        split: sorted(f for s in FC100_SUPERCLASSES[split] for f in CIFAR100_TABLE[s])
        for split in ("train", "val", "test")
    }
    assert splits.test.class_names == expected["test"]
    assert {"whale", "bee", "fox", "baby"} <= set(splits.test.class_names)
    assert {"leopard", "camel", "crab", "hamster"} <= set(splits.val.class_names)
    assert splits.val.class_names == expected["val"]
    # 1 archive-train + 1 archive-test image per class, merged.
    np.testing.assert_array_equal(splits.train.class_counts(), np.full(60, 2))


def test_cifar_fs_uses_the_bertinetto_64_16_20_classes_and_merges_train_test(tmp_path):
    root = write_cifar100_archive(tmp_path)
    train, val, test = cifar100.load(root, variant="cifar_fs", allow_pickle=True)
    assert_benchmark((train, val, test), (64, 16, 20), "cifar_fs")
    assert test.class_names == sorted(CIFAR_FS_CLASSES["test"])
    assert test.images.shape == (40, 32, 32, 3) and test.images.dtype == np.uint8
    fine_names = sorted(f for fs in CIFAR100_TABLE.values() for f in fs)
    for c, name in enumerate(test.class_names):
        items = test.items_of(c)
        # red plane = fine label, green = archive part: planes decoded row-major to HWC.
        assert set(test.images[items, 5, 7, 0].tolist()) == {fine_names.index(name)}
        assert sorted(test.images[items, 0, 0, 1].tolist()) == [0, 1]
        assert (test.images[items, ..., 2] == 200).all()


def test_cifar100_accepts_the_archive_folder_itself_and_resizes(tmp_path):
    root = write_cifar100_archive(tmp_path) / "cifar-100-python"
    train, _, _ = cifar100.load(root, variant="cifar-fs", image_size=16, allow_pickle=True)
    assert train.images.shape == (128, 16, 16, 3)


def test_cifar100_reports_missing_archive_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python' is missing"):
        cifar100.load(tmp_path, allow_pickle=True)
    root = write_cifar100_archive(tmp_path)
    (root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python/meta' is missing"):
        cifar100.load(root, allow_pickle=True)


def test_cifar100_opt_in_still_refuses_pickles_with_non_numpy_globals(tmp_path):
    root = write_cifar100_archive(tmp_path)
    (root / "cifar-100-python" / "meta").write_bytes(pickle.dumps({b"fine_label_names": OrderedDict()}))
    with pytest.raises(
        ValueError, match=r"meta' is not a readable CIFAR-100 pickle .*collections\.OrderedDict"
    ):
        cifar100.load(root, allow_pickle=True)


def test_cifar_split_constants_match_cifar100_names():
    for split, indices in FC100_SUPERCLASS_INDICES.items():
        assert tuple(CIFAR100_COARSE_LABEL_NAMES[i] for i in indices) == FC100_SUPERCLASSES[split]
    assert list(CIFAR100_COARSE_LABEL_NAMES) == sorted(CIFAR100_TABLE)
    fs = [set(CIFAR_FS_CLASSES[s]) for s in ("train", "val", "test")]
    assert [len(s) for s in fs] == [64, 16, 20]
    assert set.union(*fs) == {f for fs_ in CIFAR100_TABLE.values() for f in fs_}


# --------------------------------------------------------------------------- Omniglot
def test_omniglot_holds_out_last_background_alphabets_for_val(tmp_path):
    root = write_omniglot(tmp_path)
    train, val, test = omniglot.load(root)
    assert_benchmark((train, val, test), (4, 10, 4), "omniglot")
    assert {n.split("/")[0] for n in val.class_names} == {f"Bg_Alphabet{a}" for a in range(2, 7)}
    assert train.class_names[0] == "Bg_Alphabet0/character01"
    assert test.images.shape == (12, 28, 28, 1) and test.images.dtype == np.uint8
    assert test.images.max() == 255 and test.images.min() < 128  # white page, dark stroke


def test_omniglot_rotations_add_three_rotated_classes_per_character(tmp_path):
    root = write_omniglot(tmp_path)
    train, val, test = omniglot.load(
        root, image_size=12, rotations=("train",), val_alphabets=["Bg_Alphabet0"]
    )
    assert_benchmark((train, val, test), (48, 2, 4), "omniglot")  # 6 alphabets x 2 characters x 4
    assert train.class_names[12] == "Bg_Alphabet1/character01/rot90"
    first, rotated = train.images[train.items_of(0)[0]], train.images[train.items_of(12)[0]]
    np.testing.assert_array_equal(np.rot90(first, 1, axes=(0, 1)), rotated)


def test_omniglot_reports_missing_evaluation_folder_empty_character_and_bad_png(tmp_path):
    root = write_omniglot(tmp_path)
    empty = root / "images_evaluation" / "Ev_Alphabet0" / "character09"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"character folder '.*Ev_Alphabet0/character09' has no image files"):
        omniglot.load(root)
    empty.rmdir()
    (root / "images_background" / "Bg_Alphabet1" / "character02" / "01.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(ValueError, match=r"character02/01\.png' is not a readable image"):
        omniglot.load(root)
    with pytest.raises(ValueError, match="validation alphabet 'Klingon' is not a folder"):
        omniglot.load(root, val_alphabets=["Klingon"])
    other = write_omniglot(tmp_path / "o", evaluation=0)
    with pytest.raises(FileNotFoundError, match="images_evaluation' is missing"):
        omniglot.load(other)


# --------------------------------------------------------------------------- arrays
def test_split_arrays_makes_seeded_class_disjoint_splits():
    images = np.arange(50 * 4 * 4, dtype=np.uint8).reshape(50, 4, 4)
    labels = np.repeat([f"c{i}" for i in range(10)], 5)
    train, val, test = arrays.split_arrays(images, labels, val_fraction=0.2, test_fraction=0.3, seed=3)
    assert_benchmark((train, val, test), (5, 2, 3), "arrays")
    assert train.image_shape == (4, 4, 1)
    again = arrays.split_arrays(images, labels, val_fraction=0.2, test_fraction=0.3, seed=3)
    assert again[2].class_names == test.class_names
    c = test.class_names[0]
    np.testing.assert_array_equal(test.images[test.items_of(0), ..., 0], images[labels == c])


def test_split_arrays_with_explicit_classes_rejects_overlap():
    images = np.zeros((12, 4, 4, 3), np.uint8)
    labels = np.repeat([0, 1, 2, 3], 3)
    train, val, test = arrays.split_arrays(images, labels, splits=([3, 0], [1], [2]))
    assert train.class_names == ["0", "3"] and val.class_ids.tolist() == [2]
    with pytest.raises(ValueError, match="class 1 is in both the train and the test split"):
        arrays.split_arrays(images, labels, splits=([0, 1], [2], [1]))
    with pytest.raises(ValueError, match="need at least 3 classes"):
        arrays.split_arrays(images[:6], labels[:6])
