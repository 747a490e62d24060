"""Omniglot (Lake et al. 2015): 1,623 handwritten characters from 50 alphabets.

On-disk layout (the official ``images_background.zip`` / ``images_evaluation.zip``
extracted side by side; torchvision's ``omniglot-py/`` folder also works)::

    root/images_background/<Alphabet>/character01/*.png   # 30 alphabets, 964 characters
    root/images_evaluation/<Alphabet>/character01/*.png   # 20 alphabets, 659 characters

A class is one character of one alphabet, named ``"<Alphabet>/<characterNN>"``.
Splits (alphabet-disjoint):

* train: the background alphabets minus the validation ones;
* val: by default the **last 5 background alphabets in sorted order** - with the
  official data Ojibwe_(Canadian_Aboriginal_Syllabics), Sanskrit,
  Syriac_(Estrangelo), Tagalog and Tifinagh (151 characters, leaving 813 for
  train) - or the alphabets named in ``val_alphabets``;
* test: all evaluation alphabets.

Omniglot is small, so images are loaded into memory: ``(n, H, W, 1) uint8``,
resized with PIL (Lanczos) from 105x105. Pixels are kept as stored: black (0)
strokes on a white (255) background.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mtl_keras.data.sources._common import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    SplitParts,
    build_splits,
    list_image_files,
    list_subdirs,
    normalize_image_size,
    resolve_root,
)
from mtl_keras.data.split import ClassSplit

BENCHMARK = "omniglot"
BACKGROUND = "images_background"
EVALUATION = "images_evaluation"

_HINT = (
    "Extract images_background.zip and images_evaluation.zip from "
    "https://github.com/brendenlake/omniglot into one folder and pass root= that folder."
)


def load(
    root: str | os.PathLike | None = None,
    image_size: int | Sequence[int] = 28,
    rotations: bool | Sequence[str] = False,
    val_alphabets: int | Sequence[str] = 5,
    workers: int | None = None,
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load Omniglot's train/val/test class splits into memory.

    Args:
        root: folder holding ``images_background/`` and ``images_evaluation/``
            (directly or inside ``omniglot-py/``).
        image_size: ``H`` or ``(H, W)`` images are resized to (default 28).
        rotations: add each character rotated by 90, 180 and 270 degrees as three
            extra classes (Santoro et al. 2016, Vinyals et al. 2016), named
            ``"<Alphabet>/<character>/rot90"`` etc. ``True`` applies it to all three
            splits, a sequence such as ``("train",)`` to the named splits only. It
            multiplies memory by 4 (28x28: ~100 MB for all of Omniglot).
        val_alphabets: held-out background alphabets for validation: an ``int``
            ``k`` takes the last ``k`` in sorted order (default 5), a sequence names
            them.
        workers: threads used to decode the PNGs (default ``min(32, 4 * cpu_count)``).

    Returns:
        ``(train, val, test)``: in-memory `ClassSplit`s with ``images (n, H, W, 1)
        uint8`` and class ids unique across the splits (train, then val, then test).

    Raises:
        FileNotFoundError: root, ``images_background/`` or ``images_evaluation/``
            is missing.
        ValueError: an alphabet with no character folders, a character folder with
            no images, an unreadable image, an unknown validation alphabet, or
            validation taking every background alphabet.
    """
    size = normalize_image_size(image_size, BENCHMARK)
    base = resolve_root(root, BENCHMARK, _HINT)
    background = _find_part(base, BACKGROUND)
    evaluation = _find_part(base, EVALUATION)
    rotate = _rotated_splits(rotations)
    if rotate and size[0] != size[1]:
        raise ValueError(f"{BENCHMARK}: rotations need square images, got image_size={size}.")

    bg_alphabets = list_subdirs(background)
    if not bg_alphabets:
        raise ValueError(f"{BENCHMARK}: '{background}' has no alphabet folders. {_HINT}")
    names = [a.name for a in bg_alphabets]
    if isinstance(val_alphabets, (int, np.integer)):
        count = int(val_alphabets)
        if not 1 <= count < len(names):
            raise ValueError(
                f"{BENCHMARK}: val_alphabets={count} but '{background}' has "
                f"{len(names)} alphabets; hold out between 1 and {len(names) - 1}."
            )
        val_names = names[-count:]
    else:
        val_names = [str(v) for v in val_alphabets]
        for name in val_names:
            if name not in names:
                raise ValueError(
                    f"{BENCHMARK}: validation alphabet '{name}' is not a folder of "
                    f"'{background}'. Pick from: {', '.join(names)}."
                )
        if not val_names or len(set(val_names)) == len(names):
            raise ValueError(
                f"{BENCHMARK}: val_alphabets must name at least one and not all of the "
                f"{len(names)} background alphabets, got {list(val_names)}."
            )
    alphabets = {
        "train": [a for a in bg_alphabets if a.name not in val_names],
        "val": [a for a in bg_alphabets if a.name in val_names],
        "test": list_subdirs(evaluation),
    }
    if not alphabets["test"]:
        raise ValueError(f"{BENCHMARK}: '{evaluation}' has no alphabet folders. {_HINT}")

    parts = []
    for split in SPLIT_NAMES:
        class_names, paths, labels = _scan_characters(alphabets[split])
        images = _decode_all(paths, size, workers)
        if split in rotate:
            class_names, labels, images = _add_rotations(class_names, labels, images)
        parts.append(SplitParts(split, class_names, labels, images=images))
    return build_splits(parts, BENCHMARK)  # type: ignore[return-value]


def _find_part(base: Path, name: str) -> Path:
    for candidate in (base / name, base / "omniglot-py" / name):
        if candidate.is_dir():
            return candidate
    zipped = base / f"{name}.zip"
    fix = f"Extract '{zipped}' there." if zipped.is_file() else _HINT
    raise FileNotFoundError(f"{BENCHMARK}: folder '{base / name}' is missing. {fix}")


def _rotated_splits(rotations: bool | Sequence[str]) -> set[str]:
    if isinstance(rotations, bool):
        return set(SPLIT_NAMES) if rotations else set()
    chosen = {str(r) for r in rotations}
    unknown = chosen - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(
            f"{BENCHMARK}: rotations must be a bool or split names among "
            f"{SPLIT_NAMES}, got {sorted(unknown)}."
        )
    return chosen


def _scan_characters(alphabets: list[Path]) -> tuple[list[str], list[str], np.ndarray]:
    """``(class_names, paths, labels)`` over the character folders of ``alphabets``."""
    class_names: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    for alphabet in alphabets:
        characters = list_subdirs(alphabet)
        if not characters:
            raise ValueError(
                f"{BENCHMARK}: alphabet folder '{alphabet}' has no character folders. "
                "Re-extract it or delete it."
            )
        for character in characters:
            images, _ = list_image_files(character)
            if not images:
                raise ValueError(
                    f"{BENCHMARK}: character folder '{character}' has no image files "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Re-extract it or delete it."
                )
            label = len(class_names)
            class_names.append(f"{alphabet.name}/{character.name}")
            paths.extend(str(p) for p in images)
            labels.extend([label] * len(images))
    return class_names, paths, np.asarray(labels, dtype=np.int64)


def _decode_gray(path: str, size: tuple[int, int]) -> np.ndarray:
    """``(H, W) uint8`` grayscale pixels of ``path`` resized to ``size``."""
    height, width = size
    try:
        with Image.open(path) as im:
            gray = im.convert("L")
            if gray.size != (width, height):
                gray = gray.resize((width, height), Image.Resampling.LANCZOS)
            return np.asarray(gray, dtype=np.uint8)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise ValueError(
            f"{BENCHMARK}: '{path}' is not a readable image ({type(err).__name__}: {err}). "
            "Re-extract it or delete it."
        ) from err


def _decode_all(paths: list[str], size: tuple[int, int], workers: int | None) -> np.ndarray:
    """``(n, H, W, 1) uint8``: every image of ``paths``, decoded in a thread pool."""
    out = np.empty((len(paths), *size, 1), dtype=np.uint8)
    workers = workers or min(32, 4 * (os.cpu_count() or 1))

    def fill(i: int) -> None:
        out[i, ..., 0] = _decode_gray(paths[i], size)

    if len(paths) < 256:
        for i in range(len(paths)):
            fill(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fill, range(len(paths))))
    return out


def _add_rotations(
    class_names: list[str], labels: np.ndarray, images: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Append 90/180/270-degree (counter-clockwise) copies of every class as new classes."""
    num = len(class_names)
    names = list(class_names)
    all_labels = [labels]
    all_images = [images]
    for k in (1, 2, 3):
        names += [f"{name}/rot{90 * k}" for name in class_names]
        all_labels.append(labels + k * num)
        all_images.append(np.ascontiguousarray(np.rot90(images, k, axes=(1, 2))))
    return names, np.concatenate(all_labels), np.concatenate(all_images)
