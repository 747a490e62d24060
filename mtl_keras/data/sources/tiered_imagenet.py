"""tieredImageNet (Ren et al. 2018): 351/97/160 classes from 34 ImageNet categories.

On-disk layout (the per-class JPEG export, not the original ``*_images_png.pkl``
pickles)::

    root/train/<wnid>/*.jpg   root/val/<wnid>/*.jpg   root/test/<wnid>/*.jpg

The splits are file-backed: images are decoded (and resized to ``image_size``) by
the input pipeline, not here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mtl_keras.data.sources._common import Verify, load_folder_tree
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

    Returns:
        ``(train, val, test)``: file-backed `ClassSplit`s with ``paths (n,)``,
        ``image_size (H, W)`` and ``channels=3``; class names are the folder names
        (wnids); class ids are unique across the splits (train, then val, then test).

    Raises:
        FileNotFoundError: root or a split folder is missing.
        ValueError: an empty class folder, a class in two splits, or an unreadable image.

    Warns:
        UserWarning: when the class counts are not the standard 351/97/160.
    """
    return load_folder_tree(root, BENCHMARK, image_size, 3, verify, EXPECTED_CLASSES, workers, hint=_HINT)
