"""Class-disjoint train/val/test splits from in-memory arrays, for notebooks.

Not a registry benchmark (there is no ``root``): call `split_arrays` directly::

    from mtl_keras.data.sources.arrays import split_arrays
    train, val, test = split_arrays(images, labels, val_fraction=0.2, test_fraction=0.2)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from mtl_keras.data.sources._common import SPLIT_NAMES, SplitParts, build_splits
from mtl_keras.data.split import ClassSplit


def split_arrays(
    images: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    val_fraction: float = 0.16,
    test_fraction: float = 0.2,
    seed: int = 0,
    splits: tuple[Sequence[Hashable], Sequence[Hashable], Sequence[Hashable]] | None = None,
    benchmark: str = "arrays",
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Split images into three class-disjoint in-memory `ClassSplit`s.

    Args:
        images: ``(n, H, W)`` or ``(n, H, W, C) uint8`` pixels, ``C`` 1 or 3.
        labels: ``(n,)`` class of each image, any hashable values (ints, strings).
        val_fraction: share of the classes held out for validation (at least one).
        test_fraction: share of the classes held out for test (at least one).
        seed: seed of the class shuffle, so the same inputs give the same splits.
        splits: explicit ``(train_classes, val_classes, test_classes)`` label values;
            overrides the fractions and the shuffle. Labels not listed are dropped.
        benchmark: name stored in the splits' ``benchmark`` field.

    Returns:
        ``(train, val, test)``: in-memory `ClassSplit`s; class names are
        ``str(label)``, classes sorted by label within a split, class ids unique
        across the splits (train, then val, then test).

    Raises:
        ValueError: fewer than 3 classes, fractions leaving a split empty, images and
            labels of different lengths, classes listed in two splits or absent from
            ``labels``, or images that are not uint8.

    Example:
        >>> x = np.zeros((30, 8, 8, 1), np.uint8); y = np.repeat(np.arange(10), 3)
        >>> train, val, test = split_arrays(x, y, val_fraction=0.2, test_fraction=0.2)
        >>> train.num_classes, val.num_classes, test.num_classes
        (6, 2, 2)
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{benchmark}: labels must be (n,) with n = {len(images)} images, got shape {labels.shape}."
        )
    classes = np.unique(labels)
    if splits is None:
        chosen = _random_class_split(classes, val_fraction, test_fraction, seed, benchmark)
    else:
        chosen = _explicit_class_split(classes, splits, benchmark)

    parts = []
    for name, members in zip(SPLIT_NAMES, chosen):
        members = np.sort(np.asarray(members, dtype=classes.dtype))
        mask = np.isin(labels, members)
        local = np.searchsorted(members, labels[mask])
        parts.append(SplitParts(name, [str(m) for m in members], local, images=images[mask]))
    return build_splits(parts, benchmark)  # type: ignore[return-value]


def _random_class_split(
    classes: np.ndarray, val_fraction: float, test_fraction: float, seed: int, benchmark: str
) -> list[np.ndarray]:
    count = len(classes)
    if count < 3:
        raise ValueError(
            f"{benchmark}: need at least 3 classes for class-disjoint train/val/test splits, got {count}."
        )
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"{benchmark}: val_fraction and test_fraction must be in (0, 1) with a sum "
            f"below 1, got {val_fraction} and {test_fraction}."
        )
    num_val = max(1, round(count * val_fraction))
    num_test = max(1, round(count * test_fraction))
    if num_val + num_test >= count:
        raise ValueError(
            f"{benchmark}: {count} classes leave none for train with {num_val} val and "
            f"{num_test} test classes. Lower the fractions or add classes."
        )
    order = np.random.default_rng(seed).permutation(count)
    shuffled = classes[order]
    return [
        shuffled[num_val + num_test :],
        shuffled[:num_val],
        shuffled[num_val : num_val + num_test],
    ]


def _explicit_class_split(
    classes: np.ndarray, splits: Sequence[Sequence[Hashable]], benchmark: str
) -> list[np.ndarray]:
    if len(splits) != 3:
        raise ValueError(
            f"{benchmark}: splits must be (train_classes, val_classes, test_classes), "
            f"got {len(splits)} lists."
        )
    known = set(classes.tolist())
    seen: dict[Hashable, str] = {}
    out = []
    for name, members in zip(SPLIT_NAMES, splits):
        members = list(members)
        if not members:
            raise ValueError(f"{benchmark}: the {name} split lists no classes.")
        for m in members:
            if m not in known:
                raise ValueError(f"{benchmark}: {name} class {m!r} does not occur in labels.")
            if m in seen:
                raise ValueError(
                    f"{benchmark}: class {m!r} is in both the {seen[m]} and the {name} "
                    "split; splits must be class-disjoint."
                )
            seen[m] = name
        out.append(np.asarray(members))
    return out
