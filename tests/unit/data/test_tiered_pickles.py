"""tieredImageNet as Ren et al. distribute it (Python 2 pickles) → the class folders `load` reads.

Fixtures are written the way the original files were: Python 2 pickles (protocol 2, ``str``
as byte strings, NumPy arrays under ``numpy.core.multiarray``), PNGs as OpenCV's ``imencode``
returns them (``(k, 1) uint8`` arrays), and ``{split}_images.npz`` in OpenCV's BGR order.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl_keras.data.sources import tiered_imagenet
from mtl_keras_app import cli
from tests.helpers import py2_pickle

pytestmark = pytest.mark.filterwarnings("ignore:.*standard benchmark:UserWarning")

NAMES = {
    "train": ["house finch", "robin, American robin", "crane"],
    "val": ["crane", "AC/DC adapter"],
    "test": ["goldfish", "tench"],
}


def image(split: str, label: int, i: int) -> np.ndarray:
    """An 8×8 RGB image whose pixels encode where it came from."""
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0] = {"train": 10, "val": 20, "test": 30}[split]
    pixels[..., 1] = label
    pixels[..., 2] = i
    pixels[0, 0] = (255, 0, 0)  # one red pixel: catches swapped channels
    return pixels


def png(pixels: np.ndarray, column: bool) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = np.frombuffer(buffer.getvalue(), np.uint8)
    return data.reshape(-1, 1) if column else data  # cv2.imencode's (k, 1) or a flat array


def write_pickles(
    src: Path, npz_splits=(), names_of=NAMES, per_class: int = 2
) -> dict[str, list[np.ndarray]]:
    """Ren et al.'s files for the three splits; returns each split's images in file order."""
    src.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, names in names_of.items():
        labels = np.repeat(np.arange(len(names), dtype=np.int32), per_class)[::-1].copy()  # not sorted
        images = [image(split, int(c), i) for i, c in enumerate(labels)]
        meta = {
            "label_specific": labels,
            "label_general": np.zeros_like(labels),
            "label_specific_str": list(names),
            "label_general_str": ["category"],
        }
        (src / f"{split}_labels.pkl").write_bytes(py2_pickle(meta))
        if split in npz_splits:
            np.savez(src / f"{split}_images.npz", images=np.stack(images)[..., ::-1])  # BGR
        else:
            entries = [png(x, column=i % 2 == 0) for i, x in enumerate(images)]
            (src / f"{split}_images_png.pkl").write_bytes(py2_pickle(entries))
        written[split] = images
    return written


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_pickles_convert_to_class_folders_that_load_with_the_same_pixels(tmp_path):
    images = write_pickles(tmp_path / "src", npz_splits=("test",))
    reported = []
    written = tiered_imagenet.convert_pickles(
        tmp_path / "src", tmp_path / "out", allow_pickle=True, progress=lambda *a: reported.append(a)
    )
    assert written == {"train": 6, "val": 4, "test": 4}
    assert reported[-1] == ("test", 4, 4)

    train, val, test = tiered_imagenet.load(tmp_path / "out", image_size=8)
    assert train.class_names == ["000 house finch", "001 robin, American robin", "002 crane"]
    # "/" cannot be in a folder name; "crane" is in train and val, as different classes.
    assert val.class_names == ["000 crane", "001 AC_DC adapter"]
    assert [s.num_classes for s in (train, val, test)] == [3, 2, 2]
    for split in (train, val, test):
        for path, label in zip(split.paths, split.labels):
            index = int(Path(path).stem)
            original = images[split.name][index]
            np.testing.assert_array_equal(read_png(Path(path)), original)  # npz: BGR was undone
            assert original[1, 1, 1] == label  # the image sits in its class's folder


def test_names_clash_with_a_split_converted_earlier(tmp_path):
    write_pickles(tmp_path / "src", names_of={**NAMES, "train": ["crane", "house finch"]})
    tiered_imagenet.convert_pickles(tmp_path / "src", tmp_path / "out", allow_pickle=True, splits=["train"])
    tiered_imagenet.convert_pickles(tmp_path / "src", tmp_path / "out", allow_pickle=True, progress=print)
    assert sorted(os.listdir(tmp_path / "out" / "val")) == ["000 crane (val)", "001 AC_DC adapter"]
    tiered_imagenet.load(tmp_path / "out", image_size=8)  # no class in two splits


def test_refuses_pickles_without_opt_in_and_writes_nothing(tmp_path):
    write_pickles(tmp_path / "src")
    with pytest.raises(ValueError, match=r"are Python pickles.*allow_pickle=True"):
        tiered_imagenet.convert_pickles(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_opt_in_still_refuses_a_pickle_that_names_other_globals(tmp_path):
    write_pickles(tmp_path / "src")
    (tmp_path / "src" / "val_labels.pkl").write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(ValueError, match=r"val_labels.pkl' is not a readable .* global '(posix|nt).system'"):
        tiered_imagenet.convert_pickles(tmp_path / "src", tmp_path / "out", allow_pickle=True)
    assert (tmp_path / "out" / "train").is_dir() and not (tmp_path / "out" / "val").exists()


def test_a_bad_entry_leaves_no_split_folder_and_a_rerun_resumes(tmp_path):
    write_pickles(tmp_path / "src")
    good = (tmp_path / "src" / "val_images_png.pkl").read_bytes()
    entries = pickle.loads(good, encoding="bytes")
    entries[3] = np.frombuffer(b"GIF89a-not-a-png", np.uint8)
    (tmp_path / "src" / "val_images_png.pkl").write_bytes(py2_pickle(entries))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"entry 3 of '.*val_images_png.pkl' is not a PNG image"):
        tiered_imagenet.convert_pickles(tmp_path / "src", out, allow_pickle=True)
    assert sorted(os.listdir(out)) == [".partial-val", "train"]  # train done, val unfinished

    (tmp_path / "src" / "val_images_png.pkl").write_bytes(good)
    written = tiered_imagenet.convert_pickles(tmp_path / "src", out, allow_pickle=True)
    assert written == {"train": 0, "val": 4, "test": 4}  # train kept, not rewritten
    assert sorted(os.listdir(out)) == ["test", "train", "val"]
    assert sum(len(files) for _, _, files in os.walk(out / "val")) == 4


def test_counts_that_disagree_name_both_files(tmp_path):
    write_pickles(tmp_path / "src")
    entries = pickle.loads((tmp_path / "src" / "test_images_png.pkl").read_bytes(), encoding="bytes")
    (tmp_path / "src" / "test_images_png.pkl").write_bytes(py2_pickle(entries[:-1]))
    with pytest.raises(
        ValueError, match=r"test_images_png.pkl' holds 3 images but '.*test_labels.pkl' has 4"
    ):
        tiered_imagenet.convert_pickles(tmp_path / "src", tmp_path / "out", allow_pickle=True)


def test_missing_images_file_is_named(tmp_path):
    write_pickles(tmp_path / "src")
    (tmp_path / "src" / "val_images_png.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=r"neither '.*val_images_png.pkl' nor '.*val_images.npz'"):
        tiered_imagenet.convert_pickles(tmp_path / "src", tmp_path / "out", allow_pickle=True)


def test_load_on_the_pickles_says_how_to_convert_them(tmp_path):
    write_pickles(tmp_path / "src")
    with pytest.raises(
        FileNotFoundError, match=r"holds the original pickles .*mtl-keras prepare tiered_imagenet"
    ):
        tiered_imagenet.load(tmp_path / "src")


def test_cli_prepare(tmp_path, capsys):
    write_pickles(tmp_path / "src")
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    assert cli.main(["prepare", "tiered_imagenet", src, out]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert cli.main(["prepare", "tiered_imagenet", src, out, "--allow-pickle"]) == 0
    printed = capsys.readouterr().out
    assert "train: " in printed and "(6 images written)" in printed
    assert f"--benchmark tiered_imagenet --root {out}" in printed
    assert tiered_imagenet.load(out, image_size=8)[0].num_classes == 3
