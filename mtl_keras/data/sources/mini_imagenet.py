"""miniImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017): 64/16/20 classes.

Four on-disk layouts are recognised:

* **CSV layout** (Ravi & Larochelle)::

      root/train.csv  root/val.csv  root/test.csv   # header "filename,label"
      root/images/n0153282900000005.jpg ...

  Images may also sit in per-class folders ``root/images/<label>/<filename>``.
* **Folder layout**::

      root/train/n01532829/*.jpg  root/val/<wnid>/*.jpg  root/test/<wnid>/*.jpg

  These two are file-backed: images are decoded (and resized to ``image_size``) by
  the input pipeline, not here.
* **MetaOptNet pickles** (Gidaris & Komodakis' files, used by MetaOptNet and many PyTorch
  codebases): ``root/miniImageNet_category_split_{train_phase_train,val,test}.pickle``, each a
  dict ``data (n, 84, 84, 3) uint8``, ``labels (n,)``, ``catname2label {wnid: label}``.
* **learn2learn caches**: ``root/mini-imagenet-cache-{train,validation,test}.pkl``, each a dict
  ``image_data (n, 84, 84, 3) uint8``, ``class_dict {wnid: [indices]}``.

  The pickle layouts are read into memory (1.3 GB at 84×84) and only with
  ``allow_pickle=True`` (unpickling can run code; even then only NumPy's array
  constructors are accepted in the files).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtl_keras.data.sources._common import (
    SPLIT_NAMES,
    SplitParts,
    Verify,
    build_splits,
    check_class_disjoint,
    drop_files,
    find_split_dir,
    load_folder_tree,
    normalize_image_size,
    read_split_csv,
    require_file,
    resize_images,
    resolve_root,
    verify_images,
    warn_class_counts,
)
from mtl_keras.data.sources._pickles import field, opt_in_error, read_numpy_pickle, text
from mtl_keras.data.split import ClassSplit

BENCHMARK = "mini_imagenet"
#: Classes per split in the published benchmark.
EXPECTED_CLASSES = {"train": 64, "val": 16, "test": 20}

_HINT = (
    "Pass root= the folder holding train.csv, val.csv, test.csv and images/, "
    "or train/, val/, test/ with one folder per class, or the MetaOptNet / learn2learn pickles."
)

#: The pickle layouts: name → (file of each split, in SPLIT_NAMES order).
PICKLE_FILES = {
    "metaoptnet": tuple(
        f"miniImageNet_category_split_{s}.pickle" for s in ("train_phase_train", "val", "test")
    ),
    "learn2learn": tuple(f"mini-imagenet-cache-{s}.pkl" for s in ("train", "validation", "test")),
}
_PICKLE_FIX = "Download the file again."


def detect_layout(root: str | os.PathLike) -> str:
    """``"csv"``, ``"folders"``, ``"metaoptnet"`` or ``"learn2learn"``: which layout ``root`` holds.

    Raises:
        FileNotFoundError: ``root`` holds neither layout.
    """
    root = resolve_root(root, BENCHMARK, _HINT)
    if any((root / f"{split}.csv").is_file() for split in SPLIT_NAMES):
        return "csv"
    if any(find_split_dir(root, split) is not None for split in SPLIT_NAMES):
        return "folders"
    for layout, files in PICKLE_FILES.items():
        if any((root / f).is_file() for f in files):
            return layout
    raise FileNotFoundError(
        f"{BENCHMARK}: '{root}' holds neither split CSVs (train.csv, val.csv, test.csv "
        "beside images/) nor split folders (train/, val/, test/) nor the MetaOptNet or "
        "learn2learn pickles. Point root at the folder that contains them."
    )


def load(
    root: str | os.PathLike | None = None,
    image_size: int | Sequence[int] = 84,
    verify: Verify = "header",
    workers: int | None = None,
    allow_pickle: bool = False,
    unreadable: str = "raise",
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load miniImageNet's train/val/test class splits.

    Args:
        root: dataset folder in one of the layouts of the module doc; the layout is
            detected (CSV, then folders, then pickles).
        image_size: ``H`` or ``(H, W)`` the pipeline resizes images to (default 84).
        verify: image check at load time. ``"header"`` (default) opens every file
            and reads only its header, catching non-images and truncated headers
            cheaply; ``"full"`` decodes every image (slow, catches corrupt pixel
            data); ``"none"`` skips the check.
        workers: threads for the image check (default ``min(32, 4 * cpu_count)``).
        allow_pickle: read the pickle layouts (files from a source you trust only).
        unreadable: ``"raise"`` (default): an unreadable image file stops the load, named;
            ``"skip"``: such files are left out and listed in a warning (CSV and folder
            layouts; the pickle layouts hold decoded arrays, which the pickle check covers).

    Returns:
        ``(train, val, test)``: file-backed `ClassSplit`s with ``paths (n,)``,
        ``image_size (H, W)`` and ``channels=3`` (CSV and folder layouts), or in-memory
        ones with ``images (n, H, W, 3) uint8`` (pickle layouts, resized to ``image_size``);
        class names are the wnids; class ids are unique across the splits (train first,
        then val, then test).

    Raises:
        FileNotFoundError: root, a split CSV, ``images/``, a split folder, an image
            listed in a CSV, or one of the three pickles is missing.
        ValueError: a malformed CSV, an empty class folder, a class in two splits,
            an unreadable image, pickles without ``allow_pickle``, or a pickle that
            is not the layout's dict (each message names the file).

    Warns:
        UserWarning: when the class counts are not the standard 64/16/20.
    """
    size = normalize_image_size(image_size, BENCHMARK)
    layout = detect_layout(root)
    root = Path(root).expanduser()
    if layout == "folders":
        return load_folder_tree(
            root, BENCHMARK, size, 3, verify, EXPECTED_CLASSES, workers, unreadable=unreadable
        )
    if layout in PICKLE_FILES:
        return _load_pickles(root, layout, size, allow_pickle)
    parts = [_read_csv_split(root, split) for split in SPLIT_NAMES]
    check_class_disjoint(parts, BENCHMARK)
    warn_class_counts(parts, EXPECTED_CLASSES, BENCHMARK)
    skipped = verify_images([p for part in parts for p in part.paths], verify, BENCHMARK, workers, unreadable)
    parts = drop_files(parts, {path for path, _ in skipped}, BENCHMARK)
    return build_splits(parts, BENCHMARK, size, 3)  # type: ignore[return-value]


def _read_csv_split(root: Path, split: str) -> SplitParts:
    """One split of the CSV layout, every listed image checked to exist."""
    csv_path = require_file(
        root / f"{split}.csv",
        BENCHMARK,
        f"The CSV layout needs train.csv, val.csv and test.csv (header "
        f"'filename,label') beside images/; restore {split}.csv.",
    )
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"{BENCHMARK}: folder '{images_dir}' is missing; the CSV layout keeps "
            "every image there. Extract the images into it."
        )
    rows = read_split_csv(csv_path, BENCHMARK)
    flat = set(os.listdir(images_dir))
    class_names = sorted({label for _, _, label in rows})
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels = [], []
    for line, filename, label in rows:
        if filename in flat:
            path = images_dir / filename
        elif (images_dir / label / filename).is_file():
            path = images_dir / label / filename
        else:
            raise FileNotFoundError(
                f"{BENCHMARK}: '{csv_path}' line {line} lists '{filename}' but "
                f"'{images_dir / filename}' does not exist. Restore the image or delete "
                "the row."
            )
        paths.append(str(path))
        labels.append(index[label])
    return SplitParts(split, class_names, np.asarray(labels, dtype=np.int64), paths=paths)


def _load_pickles(root: Path, layout: str, size: tuple[int, int], allow_pickle: bool):
    """The MetaOptNet or learn2learn pickles as in-memory splits."""
    paths = [root / name for name in PICKLE_FILES[layout]]
    if not allow_pickle:
        raise opt_in_error(BENCHMARK, f"'{paths[0]}' (and the val and test files)")
    parts = []
    for split, path in zip(SPLIT_NAMES, paths):
        require_file(path, BENCHMARK, f"The {layout} layout has one file per split; restore it.")
        obj = read_numpy_pickle(
            path, BENCHMARK, f"miniImageNet ({layout})", _PICKLE_FIX, expect=(dict, "a dict")
        )
        if layout == "metaoptnet":
            images = field(obj, "data", path, BENCHMARK, _PICKLE_FIX)
            labels = np.asarray(field(obj, "labels", path, BENCHMARK, _PICKLE_FIX)).reshape(-1)
            names = {
                int(v): text(k) for k, v in field(obj, "catname2label", path, BENCHMARK, _PICKLE_FIX).items()
            }
        else:
            images = field(obj, "image_data", path, BENCHMARK, _PICKLE_FIX)
            labels = np.full(len(images), -1, dtype=np.int64)
            names = {}
            class_dict = field(obj, "class_dict", path, BENCHMARK, _PICKLE_FIX)
            for c, (name, indices) in enumerate(sorted(class_dict.items(), key=lambda kv: text(kv[0]))):
                indices = np.asarray(indices, dtype=np.int64)
                if len(indices) and (indices.min() < 0 or indices.max() >= len(labels)):
                    raise ValueError(
                        f"{BENCHMARK}: '{path}': class '{text(name)}' lists image indices outside "
                        f"0..{len(labels) - 1}. {_PICKLE_FIX}"
                    )
                labels[indices] = c
                names[c] = text(name)
            if (labels < 0).any():
                raise ValueError(
                    f"{BENCHMARK}: '{path}': image {int(np.argmax(labels < 0))} is in no class of "
                    f"class_dict. {_PICKLE_FIX}"
                )
        images = np.asarray(images)
        if (
            images.ndim != 4
            or images.shape[-1] != 3
            or images.dtype != np.uint8
            or len(images) != len(labels)
        ):
            raise ValueError(
                f"{BENCHMARK}: '{path}' must hold (n, H, W, 3) uint8 images and n labels, got images "
                f"{images.shape} {images.dtype} and {len(labels)} labels. {_PICKLE_FIX}"
            )
        classes = np.unique(labels)
        by_name = sorted(classes.tolist(), key=lambda c: names.get(int(c), str(c)))  # classes sorted by name
        rank = {c: i for i, c in enumerate(by_name)}
        local = np.asarray([rank[c] for c in labels.tolist()], dtype=np.int64)
        class_names = [names.get(int(c), str(c)) for c in by_name]
        parts.append(SplitParts(split, class_names, local, images=resize_images(images, size)))
    check_class_disjoint(parts, BENCHMARK)
    warn_class_counts(parts, EXPECTED_CLASSES, BENCHMARK)
    return build_splits(parts, BENCHMARK)  # type: ignore[return-value]
