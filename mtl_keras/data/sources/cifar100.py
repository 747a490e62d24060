"""FC100 and CIFAR-FS: the two few-shot benchmarks cut from CIFAR-100.

Both read the CIFAR-100 python archive (``cifar-100-python.tar.gz``, extracted)::

    root/cifar-100-python/train   # 50,000 images
    root/cifar-100-python/test    # 10,000 images
    root/cifar-100-python/meta    # fine / coarse label names

(``root`` may also be the ``cifar-100-python`` folder itself.) The archive's
train and test images are merged, so every class has 600 images, as FC100 and
CIFAR-FS do. The class lists are in `mtl_keras.data.sources._cifar_splits`:

* ``variant="fc100"`` (Oreshkin et al. 2018): split by superclass, 12/4/4
  superclasses = 60/20/20 classes.
* ``variant="cifar_fs"`` (Bertinetto et al. 2019): split by class, 64/16/20.

The three files are Python pickles, and unpickling a file can run arbitrary code,
so `load` refuses them unless called with ``allow_pickle=True``. Even then only
the NumPy array constructors the archive needs are allowed during unpickling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtl_keras.data.sources._cifar_splits import CIFAR_FS_CLASSES, FC100_SUPERCLASSES
from mtl_keras.data.sources._common import (
    SPLIT_NAMES,
    SplitParts,
    build_splits,
    normalize_image_size,
    require_file,
    resize_images,
    resolve_root,
)
from mtl_keras.data.sources._pickles import field, opt_in_error, read_numpy_pickle, text
from mtl_keras.data.split import ClassSplit

ARCHIVE_FOLDER = "cifar-100-python"
VARIANTS = ("fc100", "cifar_fs")

_FIX = "Re-extract cifar-100-python.tar.gz."
_HINT = (
    "Download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
    "extract it, and pass root= the folder that holds cifar-100-python/."
)


def resolve_archive(root: str | os.PathLike | None, benchmark: str = "cifar100") -> Path:
    """The ``cifar-100-python`` folder under (or at) ``root``, with its three files.

    Raises:
        ValueError: ``root`` is ``None``.
        FileNotFoundError: the folder or one of ``train``, ``test``, ``meta`` is missing.
    """
    path = resolve_root(root, benchmark, _HINT)
    if (path / ARCHIVE_FOLDER).is_dir():
        path = path / ARCHIVE_FOLDER
    elif not any((path / f).exists() for f in ("train", "test", "meta")):
        tarball = path / f"{ARCHIVE_FOLDER}.tar.gz"
        fix = f"Extract it first: tar -xzf '{tarball}' -C '{path}'." if tarball.is_file() else _HINT
        raise FileNotFoundError(f"{benchmark}: folder '{path / ARCHIVE_FOLDER}' is missing. {fix}")
    for name in ("train", "test", "meta"):
        require_file(
            path / name,
            benchmark,
            "The CIFAR-100 python archive has train, test and meta; re-extract it.",
        )
    return path


def load(
    root: str | os.PathLike | None = None,
    variant: str = "fc100",
    image_size: int | Sequence[int] = 32,
    allow_pickle: bool = False,
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load FC100 or CIFAR-FS as in-memory `ClassSplit`s.

    Args:
        root: folder holding ``cifar-100-python/`` (or that folder itself).
        variant: ``"fc100"`` (split by superclass, 60/20/20 classes) or
            ``"cifar_fs"`` (split by class, 64/16/20 classes).
        image_size: ``H`` or ``(H, W)``; images are 32x32 and are resized with PIL
            (bilinear) when another size is asked for.
        allow_pickle: the archive's files are Python pickles, and unpickling can
            execute code; pass ``True`` only for files you trust (e.g. downloaded
            from the official site). Even then only NumPy array globals are resolved.

    Returns:
        ``(train, val, test)``: in-memory `ClassSplit`s with ``images (n, H, W, 3)
        uint8`` (600 images per class: archive train + test), class names the
        CIFAR-100 fine label names, classes sorted by name within a split, and
        class ids unique across the splits (train, then val, then test).

    Raises:
        ValueError: unknown ``variant``, ``allow_pickle`` not set, or the files do
            not have the CIFAR-100 structure (names, shapes, labels).
        FileNotFoundError: the archive folder or one of its files is missing.
    """
    key = variant.lower().replace("-", "_")
    key = {"cifarfs": "cifar_fs"}.get(key, key)
    if key not in VARIANTS:
        raise ValueError(f"cifar100: unknown variant {variant!r}; use 'fc100' or 'cifar_fs'.")
    size = normalize_image_size(image_size, key)
    folder = resolve_archive(root, key)
    if not allow_pickle:
        raise opt_in_error(key, f"'{folder / 'train'}' (and test, meta)")
    meta = _read_pickle(folder / "meta", key)
    fine_names = _names(meta, "fine_label_names", folder / "meta", 100, key)
    coarse_names = _names(meta, "coarse_label_names", folder / "meta", 20, key)
    images, fine, coarse = _read_images(folder, key)
    fine_to_coarse = _fine_to_coarse(fine, coarse, fine_names, key)

    if key == "fc100":
        split_classes = {}
        for split, supers in FC100_SUPERCLASSES.items():
            wanted = {_index(coarse_names, s, "superclass", folder / "meta", key) for s in supers}
            split_classes[split] = [fine_names[f] for f in range(100) if fine_to_coarse[f] in wanted]
    else:
        split_classes = {s: list(CIFAR_FS_CLASSES[s]) for s in SPLIT_NAMES}

    parts = []
    for split in SPLIT_NAMES:
        class_names = sorted(split_classes[split])
        fine_ids = [_index(fine_names, c, "class", folder / "meta", key) for c in class_names]
        local = np.full(100, -1, dtype=np.int64)
        local[fine_ids] = np.arange(len(fine_ids))
        mask = local[fine] >= 0
        split_images = resize_images(images[mask], size)
        parts.append(SplitParts(split, class_names, local[fine[mask]], images=split_images))
    return build_splits(parts, key)  # type: ignore[return-value]


# --------------------------------------------------------------------------- helpers
def _read_pickle(path: Path, benchmark: str) -> dict:
    return read_numpy_pickle(path, benchmark, "CIFAR-100", _FIX, expect=(dict, "the CIFAR-100 dict"))


def _field(obj: dict, key: str, path: Path, benchmark: str) -> Any:
    return field(obj, key, path, benchmark, f"It is not a CIFAR-100 python file. {_FIX}")


def _names(meta: dict, key: str, path: Path, count: int, benchmark: str) -> list[str]:
    names = [text(n) for n in _field(meta, key, path, benchmark)]
    if len(names) != count:
        raise ValueError(
            f"{benchmark}: '{path}' lists {len(names)} {key}, expected {count}. "
            "Re-extract cifar-100-python.tar.gz."
        )
    return names


def _index(names: list[str], name: str, what: str, path: Path, benchmark: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise ValueError(
            f"{benchmark}: {what} '{name}' of the {benchmark} split is not in '{path}'. "
            "Use the original CIFAR-100 python archive."
        ) from None


def _read_images(folder: Path, benchmark: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merged archive train + test: ``(n, 32, 32, 3) uint8``, ``(n,)`` fine and coarse labels."""
    images, fine, coarse = [], [], []
    for name in ("train", "test"):
        path = folder / name
        obj = _read_pickle(path, benchmark)
        data = np.asarray(_field(obj, "data", path, benchmark))
        f = np.asarray(_field(obj, "fine_labels", path, benchmark), dtype=np.int64).reshape(-1)
        c = np.asarray(_field(obj, "coarse_labels", path, benchmark), dtype=np.int64).reshape(-1)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
            raise ValueError(
                f"{benchmark}: '{path}' data must be (n, 3072) uint8, got "
                f"{data.shape} {data.dtype}. Re-extract cifar-100-python.tar.gz."
            )
        if not len(f) == len(c) == len(data):
            raise ValueError(
                f"{benchmark}: '{path}' has {len(data)} images but {len(f)} fine and "
                f"{len(c)} coarse labels. Re-extract cifar-100-python.tar.gz."
            )
        if len(f) and (f.min() < 0 or f.max() > 99 or c.min() < 0 or c.max() > 19):
            raise ValueError(
                f"{benchmark}: '{path}' has labels outside fine 0..99 / coarse 0..19. "
                "Re-extract cifar-100-python.tar.gz."
            )
        # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        fine.append(f)
        coarse.append(c)
    return (
        np.ascontiguousarray(np.concatenate(images)),
        np.concatenate(fine),
        np.concatenate(coarse),
    )


def _fine_to_coarse(
    fine: np.ndarray, coarse: np.ndarray, fine_names: list[str], benchmark: str
) -> np.ndarray:
    """``(100,)``: the superclass of each fine class; every class must have images."""
    mapping = np.full(100, -1, dtype=np.int64)
    for f in range(100):
        supers = np.unique(coarse[fine == f])
        if len(supers) == 0:
            raise ValueError(
                f"{benchmark}: class '{fine_names[f]}' has no images in the archive. "
                "Re-extract cifar-100-python.tar.gz."
            )
        if len(supers) > 1:
            raise ValueError(
                f"{benchmark}: class '{fine_names[f]}' has images under superclasses "
                f"{supers.tolist()}; CIFAR-100 gives each class one. Re-extract the archive."
            )
        mapping[f] = supers[0]
    return mapping
