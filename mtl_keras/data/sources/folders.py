"""Any few-shot benchmark stored as ``root/{train,val,test}/<class>/<image>``.

Images may be JPEG, PNG, BMP, GIF or WebP (by extension, case-insensitive); other
files are skipped with a warning, hidden files silently. The splits are
file-backed: images are decoded (and resized to ``image_size``) by the pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mtl_keras.data.sources._common import (
    SPLIT_NAMES,
    Verify,
    check_channels,
    image_header,
    list_image_files,
    list_subdirs,
    load_folder_tree,
    normalize_image_size,
    require_split_dir,
    resolve_root,
)
from mtl_keras.data.split import ClassSplit

BENCHMARK = "folders"

_HINT = "Pass root= a folder holding train/, val/ and test/, each with one sub-folder of images per class."


def load(
    root: str | os.PathLike | None = None,
    image_size: int | Sequence[int] | None = None,
    channels: int = 3,
    verify: Verify = "auto",
    benchmark: str = BENCHMARK,
    workers: int | None = None,
    unreadable: str = "raise",
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load a ``root/{train,val,test}/<class>/<image>`` tree as file-backed `ClassSplit`s.

    Args:
        root: folder holding ``train/``, ``val/`` (or ``valid/``, ``validation/``)
            and ``test/``, each with one sub-folder of images per class. The three
            splits must not share class names.
        image_size: ``H`` or ``(H, W)`` the pipeline resizes images to; ``None``
            takes the size of the first image of the first train class.
        channels: 3 (RGB, default) or 1 (grayscale); images of any mode are
            converted to it when decoded.
        verify: image check at load time. ``"full"`` decodes every image and names JPEGs
            whose data libjpeg calls corrupt (about a second per few thousand files);
            ``"header"`` opens every file and reads only its header, catching non-images and
            truncated headers; ``"auto"`` (default): ``"full"`` up to 50,000 files, else
            ``"header"``; ``"none"`` skips the check.
        unreadable: ``"raise"`` (default): an unreadable file stops the load, named;
            ``"skip"``: such files are left out and listed in a warning.
        benchmark: name stored in the splits' ``benchmark`` field.
        workers: threads for the image check (default ``min(32, 4 * cpu_count)``).

    Returns:
        ``(train, val, test)``: file-backed `ClassSplit`s with ``paths (n,)``,
        ``image_size (H, W)`` and ``channels``; class names are the folder names;
        class ids are unique across the splits (train, then val, then test).

    Raises:
        FileNotFoundError: root or a split folder is missing.
        ValueError: an empty split or class folder, a class in two splits, an
            unreadable image, or bad ``image_size``/``channels``.
    """
    channels = check_channels(channels, benchmark)
    path = resolve_root(root, benchmark, _HINT)
    if image_size is None:
        size = _first_image_size(path, benchmark)
    else:
        size = normalize_image_size(image_size, benchmark)
    return load_folder_tree(path, benchmark, size, channels, verify, None, workers, unreadable=unreadable)


def _first_image_size(root, benchmark: str) -> tuple[int, int]:
    """``(H, W)`` of the first image (sorted) of the first train class."""
    split_dir = require_split_dir(root, SPLIT_NAMES[0], benchmark)
    for class_dir in list_subdirs(split_dir):
        images, _ = list_image_files(class_dir)
        if images:
            height, width, _ = image_header(images[0], benchmark)
            return height, width
    # No image at all: let the full scan raise its precise message.
    return (1, 1)
