"""miniImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017): 64/16/20 classes.

Two on-disk layouts are recognised:

* **CSV layout** (Ravi & Larochelle)::

      root/train.csv  root/val.csv  root/test.csv   # header "filename,label"
      root/images/n0153282900000005.jpg ...

  Images may also sit in per-class folders ``root/images/<label>/<filename>``.
* **Folder layout**::

      root/train/n01532829/*.jpg  root/val/<wnid>/*.jpg  root/test/<wnid>/*.jpg

The splits are file-backed: images are decoded (and resized to ``image_size``) by
the input pipeline, not here.
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
    find_split_dir,
    load_folder_tree,
    normalize_image_size,
    read_split_csv,
    require_file,
    resolve_root,
    verify_images,
    warn_class_counts,
)
from mtl_keras.data.split import ClassSplit

BENCHMARK = "mini_imagenet"
#: Classes per split in the published benchmark.
EXPECTED_CLASSES = {"train": 64, "val": 16, "test": 20}

_HINT = (
    "Pass root= the folder holding train.csv, val.csv, test.csv and images/, "
    "or train/, val/, test/ with one folder per class."
)


def detect_layout(root: str | os.PathLike) -> str:
    """``"csv"`` or ``"folders"``: which miniImageNet layout ``root`` holds.

    Raises:
        FileNotFoundError: ``root`` holds neither layout.
    """
    root = resolve_root(root, BENCHMARK, _HINT)
    if any((root / f"{split}.csv").is_file() for split in SPLIT_NAMES):
        return "csv"
    if any(find_split_dir(root, split) is not None for split in SPLIT_NAMES):
        return "folders"
    raise FileNotFoundError(
        f"{BENCHMARK}: '{root}' holds neither split CSVs (train.csv, val.csv, test.csv "
        "beside images/) nor split folders (train/, val/, test/). Point root at the "
        "folder that contains them."
    )


def load(
    root: str | os.PathLike | None = None,
    image_size: int | Sequence[int] = 84,
    verify: Verify = "header",
    workers: int | None = None,
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load miniImageNet's train/val/test class splits as file-backed `ClassSplit`s.

    Args:
        root: dataset folder in the CSV layout or the folder layout (see module doc);
            the layout is detected, the CSV layout winning when both are present.
        image_size: ``H`` or ``(H, W)`` the pipeline resizes images to (default 84).
        verify: image check at load time. ``"header"`` (default) opens every file
            and reads only its header, catching non-images and truncated headers
            cheaply; ``"full"`` decodes every image (slow, catches corrupt pixel
            data); ``"none"`` skips the check.
        workers: threads for the image check (default ``min(32, 4 * cpu_count)``).

    Returns:
        ``(train, val, test)``: file-backed `ClassSplit`s with ``paths (n,)``,
        ``image_size (H, W)`` and ``channels=3``; class names are the wnids; class
        ids are unique across the splits (train first, then val, then test).

    Raises:
        FileNotFoundError: root, a split CSV, ``images/``, a split folder, or an
            image listed in a CSV is missing.
        ValueError: a malformed CSV, an empty class folder, a class in two splits,
            or an unreadable image.

    Warns:
        UserWarning: when the class counts are not the standard 64/16/20.
    """
    size = normalize_image_size(image_size, BENCHMARK)
    layout = detect_layout(root)
    root = Path(root).expanduser()
    if layout == "folders":
        return load_folder_tree(root, BENCHMARK, size, 3, verify, EXPECTED_CLASSES, workers)
    parts = [_read_csv_split(root, split) for split in SPLIT_NAMES]
    check_class_disjoint(parts, BENCHMARK)
    warn_class_counts(parts, EXPECTED_CLASSES, BENCHMARK)
    verify_images([p for part in parts for p in part.paths], verify, BENCHMARK, workers)
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
