"""tieredImageNet (Ren et al. 2018): 351/97/160 classes from 34 ImageNet categories.

`load` reads class folders (the layout of the MTL authors' tiered-imagenet-tools, or
any per-class export)::

    root/train/<class>/*.jpg   root/val/<class>/*.jpg   root/test/<class>/*.jpg

The splits are file-backed: images are decoded (and resized to ``image_size``) by
the input pipeline, not here.

The dataset as Ren et al. distribute it is Python pickles instead::

    src/train_images_png.pkl   # list of PNG-encoded 84×84 images (cv2.imencode)
    src/train_labels.pkl       # dict: label_specific (n,), label_specific_str (C,), ...
    src/val_…  src/test_…      # (or {split}_images.npz, key "images", from their decompress)

`convert_pickles` (``mtl-keras prepare tiered_imagenet SRC OUT --allow-pickle``) writes
those once as the class-folder tree `load` reads. `load` pointed at the pickles says so.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mtl_keras.data.sources._common import (
    SPLIT_NAMES,
    Verify,
    find_split_dir,
    list_subdirs,
    load_folder_tree,
    resolve_root,
)
from mtl_keras.data.sources._pickles import field, read_numpy_pickle, text
from mtl_keras.data.split import ClassSplit

BENCHMARK = "tiered_imagenet"
#: Classes per split in the published benchmark.
EXPECTED_CLASSES = {"train": 351, "val": 97, "test": 160}

_HINT = "Pass root= the folder holding train/, val/ and test/, with one folder per class."


def load(
    root: str | os.PathLike | None = None,
    image_size: int | Sequence[int] = 84,
    verify: Verify = "header",
    workers: int | None = None,
    unreadable: str = "raise",
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load tieredImageNet's train/val/test class splits as file-backed `ClassSplit`s.

    Args:
        root: folder holding ``train/``, ``val/`` (or ``valid/``) and ``test/``, each
            with one sub-folder of images per class.
        image_size: ``H`` or ``(H, W)`` the pipeline resizes images to (default 84).
        verify: image check at load time. ``"header"`` (default) opens every file
            and reads only its header, catching non-images and truncated headers
            (about a minute for the ~780k images); ``"full"`` decodes every image
            (slow); ``"none"`` skips the check.
        workers: threads for the image check (default ``min(32, 4 * cpu_count)``).
        unreadable: ``"raise"`` (default): an unreadable image file stops the load, named;
            ``"skip"``: such files are left out and listed in a warning.

    Returns:
        ``(train, val, test)``: file-backed `ClassSplit`s with ``paths (n,)``,
        ``image_size (H, W)`` and ``channels=3``; class names are the folder names
        (wnids, or ``"{index} {name}"`` in a tree `convert_pickles` wrote); class ids are
        unique across the splits (train, then val, then test).

    Raises:
        FileNotFoundError: root or a split folder is missing.
        ValueError: an empty class folder, a class in two splits, or an unreadable image.

    Warns:
        UserWarning: when the class counts are not the standard 351/97/160.
    """
    if root is not None and Path(root).is_dir() and find_split_dir(Path(root), "train") is None:
        pickles = sorted(p.name for p in Path(root).glob("*_labels.pkl"))
        if pickles:
            raise FileNotFoundError(
                f"{BENCHMARK}: '{root}' holds the original pickles ({', '.join(pickles)}), not class "
                "folders. Convert them once: mtl-keras prepare tiered_imagenet "
                f"'{root}' OUT --allow-pickle (or tiered_imagenet.convert_pickles), then pass root=OUT."
            )
    return load_folder_tree(
        root, BENCHMARK, image_size, 3, verify, EXPECTED_CLASSES, workers, hint=_HINT, unreadable=unreadable
    )


_PICKLE_FIX = "Download Ren et al.'s tiered-imagenet.tar again and extract it."
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PARTIAL = ".partial-{split}"


def convert_pickles(
    src: str | os.PathLike,
    out: str | os.PathLike,
    allow_pickle: bool = False,
    splits: Sequence[str] = SPLIT_NAMES,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, int]:
    """Write tieredImageNet's original pickles as the ``out/{train,val,test}/<class>/*.png`` tree `load` reads.

    For each split, reads ``src/{split}_labels.pkl`` (``label_specific (n,)`` class index
    of each image, ``label_specific_str (C,)`` class names) and the images: ``{split}_images_png.pkl``
    (a list of ``n`` PNG files, written out byte for byte) or, failing that, ``{split}_images.npz``
    (``images (n, 84, 84, 3) uint8`` as Ren et al.'s ``decompress`` wrote them with OpenCV: BGR,
    so channels are reversed to RGB before encoding as PNG). Image ``i`` of class ``c`` becomes
    ``out/{split}/{c:03d} {name}/{i:06d}.png`` (``/`` in names becomes ``_``).

    Nothing half-written is ever a split folder: a split is written into
    ``out/.partial-{split}`` and renamed when complete. Splits whose folder already exists are
    skipped, so after a crash or Ctrl-C the same call resumes with the unfinished split.

    Args:
        src: folder holding the pickles.
        out: folder to write the tree into (created if needed).
        allow_pickle: the files are Python pickles, and unpickling can run code; set to
            ``True`` only for files from a source you trust. Even then only NumPy's array
            constructors may appear in them.
        splits: which splits to convert.
        progress: called as ``progress(split, done, total)`` while images are written
            (default: a line per 10% on stderr).

    Returns:
        ``{split: images written}`` (0 for a split skipped because its folder exists).

    Raises:
        ValueError: ``allow_pickle`` not set; a file that is not the expected pickle, an entry
            that is not a PNG, class indices outside the names, or counts of images and labels
            that differ (each message names the file).
        FileNotFoundError: ``src`` or a split's labels or images file is missing.

    Memory: a pickle is read whole (train: several GB), one split at a time.
    """
    source = resolve_root(
        src, BENCHMARK, "Pass the folder holding train_labels.pkl, train_images_png.pkl, val_… and test_…."
    )
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown:
        raise ValueError(f"{BENCHMARK}: unknown split(s) {unknown}; choose from {list(SPLIT_NAMES)}.")
    if not allow_pickle:
        raise ValueError(
            f"{BENCHMARK}: the files in '{source}' are Python pickles, and unpickling can run code. "
            "If you trust their source, pass allow_pickle=True (mtl-keras prepare: --allow-pickle)."
        )
    target = Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    report = progress or _print_progress
    written = {}
    for split in splits:
        if (target / split).is_dir():
            written[split] = 0
            continue
        labels, names, images, images_path = _read_split(source, split)
        partial = target / _PARTIAL.format(split=split)
        if partial.exists():
            shutil.rmtree(partial)  # an interrupted earlier conversion of this split
        folders = _class_folders(names, split, target)
        present = np.unique(labels)
        empty = sorted(set(range(len(names))) - set(present.tolist()))
        if empty:
            warnings.warn(
                f"{BENCHMARK}: {len(empty)} class(es) of {split} have no images and get no folder, "
                f"e.g. '{names[empty[0]]}'.",
                UserWarning,
                stacklevel=2,
            )
        partial.mkdir()
        for c in present:
            (partial / folders[c]).mkdir()
        total = len(labels)
        for i, (label, image) in enumerate(zip(labels, images)):
            data = _png_bytes(image, images_path, i)
            (partial / folders[label] / f"{i:06d}.png").write_bytes(data)
            if (i + 1) % max(1, total // 10) == 0 or i + 1 == total:
                report(split, i + 1, total)
        partial.rename(target / split)
        written[split] = total
    return written


def _print_progress(split: str, done: int, total: int) -> None:
    print(f"{BENCHMARK} {split}: {done}/{total} images written", file=sys.stderr, flush=True)


def _read_split(source: Path, split: str):
    """``(labels (n,) int64, class names (C,), images (n entries), images file)`` of one split."""
    labels_path = source / f"{split}_labels.pkl"
    png_path = source / f"{split}_images_png.pkl"
    npz_path = source / f"{split}_images.npz"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{BENCHMARK}: file '{labels_path}' is missing. {_PICKLE_FIX}")
    meta = read_numpy_pickle(
        labels_path, BENCHMARK, "tieredImageNet labels", _PICKLE_FIX, expect=(dict, "the labels dict")
    )
    labels = np.asarray(field(meta, "label_specific", labels_path, BENCHMARK, _PICKLE_FIX)).reshape(-1)
    names = [text(n) for n in field(meta, "label_specific_str", labels_path, BENCHMARK, _PICKLE_FIX)]
    if labels.dtype.kind not in "iu" or (len(labels) and (labels.min() < 0 or labels.max() >= len(names))):
        raise ValueError(
            f"{BENCHMARK}: '{labels_path}': label_specific must be integers in 0..{len(names) - 1} "
            f"(one per name in label_specific_str), got {labels.dtype} in "
            f"{labels.min() if len(labels) else '-'}..{labels.max() if len(labels) else '-'}. {_PICKLE_FIX}"
        )
    if png_path.is_file():
        images = read_numpy_pickle(
            png_path,
            BENCHMARK,
            "tieredImageNet images",
            _PICKLE_FIX,
            expect=((list, tuple, np.ndarray), "a list of PNG images"),
        )
        images_path = png_path
    elif npz_path.is_file():
        images_path = npz_path
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                images = data["images"]
        except Exception as err:
            raise ValueError(
                f"{BENCHMARK}: '{npz_path}' is not a readable .npz with an 'images' array "
                f"({type(err).__name__}: {err}). {_PICKLE_FIX}"
            ) from err
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{BENCHMARK}: '{npz_path}' images must be (n, H, W, 3) uint8, got {images.shape} "
                f"{images.dtype}. {_PICKLE_FIX}"
            )
        images = images[..., ::-1]  # OpenCV's BGR → RGB
    else:
        raise FileNotFoundError(f"{BENCHMARK}: neither '{png_path}' nor '{npz_path}' exists. {_PICKLE_FIX}")
    if len(images) != len(labels):
        raise ValueError(
            f"{BENCHMARK}: '{images_path}' holds {len(images)} images but '{labels_path}' has "
            f"{len(labels)} labels. {_PICKLE_FIX}"
        )
    return labels.astype(np.int64), names, images, images_path


def _class_folders(names: list[str], split: str, target: Path) -> list[str]:
    """Folder names ``"{c:03d} {name}"``, unique also against the class folders of other splits."""
    taken = set()
    for other in SPLIT_NAMES:
        if other != split and (target / other).is_dir():
            taken.update(p.name for p in list_subdirs(target / other))
    folders = []
    for c, name in enumerate(names):
        safe = re.sub(r"[/\\\x00]", "_", name).strip() or "class"
        folder = f"{c:03d} {safe}"[:200]
        if folder in taken:
            folder = f"{folder} ({split})"
        folders.append(folder)
    return folders


def _png_bytes(image, path: Path, index: int) -> bytes:
    """The PNG file of one entry: PNG bytes as they are, or an (H, W, 3) uint8 array encoded."""
    if isinstance(image, np.ndarray) and image.ndim == 3:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
        return buffer.getvalue()
    data = image.tobytes() if isinstance(image, np.ndarray) else image
    if not isinstance(data, bytes) or not data.startswith(_PNG_MAGIC):
        raise ValueError(
            f"{BENCHMARK}: entry {index} of '{path}' is not a PNG image "
            f"({type(image).__name__}, starts {bytes(data[:8]) if isinstance(data, bytes) else '-'}). "
            f"{_PICKLE_FIX}"
        )
    return data
