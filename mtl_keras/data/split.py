"""`ClassSplit`: the classes of one split (train, val or test) and their images.

A split holds either the pixels themselves (an in-memory ``uint8`` array) or
references to image files (paths), never both. Episode samplers only ever see
per-class index lists, so the same sampler serves both kinds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class ClassSplit:
    """The classes of one split and their images.

    Args:
        name: split name, e.g. ``"train"``, ``"val"``, ``"test"``.
        class_names: one human-readable name per class, length ``C``.
        labels: ``(n,) int`` local class index of each item, in ``0..C-1``.
        images: ``(n, H, W, C) uint8`` pixels, or ``None`` when ``paths`` is given.
        paths: ``(n,) str`` image file paths, or ``None`` when ``images`` is given.
        image_size: ``(H, W)`` that every image has (arrays) or is resized to (files).
        channels: 1 (grayscale) or 3 (RGB).
        class_ids: ``(C,) int`` global class id of each class, unique across the
            splits of one benchmark (used by the hard-task pool). Defaults to
            ``0..C-1``.
        benchmark: name of the benchmark this split comes from.

    Raises:
        ValueError: when the fields disagree (shapes, label ranges, empty classes);
            the message names the split and the class at fault.
    """

    name: str
    class_names: list[str]
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: np.ndarray | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    class_ids: np.ndarray | None = None
    benchmark: str = ""

    def __post_init__(self):
        self.class_names = [str(c) for c in self.class_names]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        num_classes = len(self.class_names)
        if (self.images is None) == (self.paths is None):
            raise ValueError(
                f"ClassSplit '{self.name}': give exactly one of `images` (pixels) or `paths` (files)."
            )
        if self.images is not None:
            if isinstance(self.images, (list, tuple)):
                _check_same_shape(self.images, self.name)
            images = np.asarray(self.images)
            if images.ndim == 3:
                images = images[..., None]
            if images.ndim != 4:
                raise ValueError(
                    f"ClassSplit '{self.name}': images must be (n, H, W, C), got shape {images.shape}."
                )
            if images.dtype != np.uint8:
                raise ValueError(
                    f"ClassSplit '{self.name}': images must be uint8 in 0..255, "
                    f"got {images.dtype}. Convert with "
                    "`np.clip(x * 255, 0, 255).astype('uint8')` if they are floats in 0..1."
                )
            self.images = images
            n = len(images)
            self.image_size = tuple(int(s) for s in images.shape[1:3])
            self.channels = int(images.shape[3])
        else:
            self.paths = np.asarray(self.paths, dtype=str).reshape(-1)
            n = len(self.paths)
            if self.image_size is None or self.channels is None:
                raise ValueError(
                    f"ClassSplit '{self.name}': a file-backed split needs `image_size=(H, W)` and `channels`."
                )
            self.image_size = tuple(int(s) for s in self.image_size)
            self.channels = int(self.channels)
        if self.channels not in (1, 3):
            fix = {
                4: " Drop the alpha channel (images[..., :3]).",
                2: " Drop the alpha channel (images[..., :1]).",
            }
            raise ValueError(
                f"ClassSplit '{self.name}': channels must be 1 or 3, got {self.channels}."
                + fix.get(self.channels, "")
            )
        if len(self.labels) != n:
            raise ValueError(f"ClassSplit '{self.name}': {n} images but {len(self.labels)} labels.")
        if n and (self.labels.min() < 0 or self.labels.max() >= num_classes):
            raise ValueError(
                f"ClassSplit '{self.name}': labels must lie in 0..{num_classes - 1} "
                f"(one per class name), got {self.labels.min()}..{self.labels.max()}."
            )
        counts = np.bincount(self.labels, minlength=num_classes)
        for c, count in enumerate(counts):
            if count == 0:
                raise ValueError(
                    f"ClassSplit '{self.name}': class '{self.class_names[c]}' has no "
                    "images. Remove it from the class list or add images."
                )
        if self.class_ids is None:
            self.class_ids = np.arange(num_classes)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if len(self.class_ids) != num_classes:
            raise ValueError(
                f"ClassSplit '{self.name}': {len(self.class_ids)} class ids for {num_classes} classes."
            )
        # Per-class item indices, computed once: the sampler's only view of the data.
        order = np.argsort(self.labels, kind="stable")
        bounds = np.cumsum(counts)[:-1]
        self._class_items = np.split(order, bounds)

    # ------------------------------------------------------------------ queries
    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    @property
    def num_images(self) -> int:
        """Number of images ``n``."""
        return len(self.labels)

    @property
    def is_file_backed(self) -> bool:
        """True when the split holds file paths rather than pixels."""
        return self.paths is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, channels)`` of the images the pipeline yields."""
        return (*self.image_size, self.channels)

    def class_counts(self) -> np.ndarray:
        """``(C,) int``: number of images per class."""
        return np.array([len(ix) for ix in self._class_items])

    def items_of(self, class_index: int) -> np.ndarray:
        """Item indices (rows of ``images``/``paths``) of local class ``class_index``."""
        return self._class_items[class_index]

    def check_episode_size(self, ways: int, shots: int, queries: int) -> None:
        """Raise a `ValueError` naming the culprit when episodes cannot be drawn.

        Args:
            ways: classes per episode ``N``.
            shots: support images per class ``K``.
            queries: query images per class ``Q``.
        """
        if ways < 2:
            raise ValueError(f"ways must be at least 2, got {ways}.")
        if shots < 1 or queries < 1:
            raise ValueError(f"shots and queries must be at least 1, got shots={shots}, queries={queries}.")
        if ways > self.num_classes:
            raise ValueError(
                f"{ways}-way episodes need {ways} classes but split '{self.name}' "
                f"has only {self.num_classes}. Lower `ways`."
            )
        need = shots + queries
        counts = self.class_counts()
        for c in np.flatnonzero(counts < need):
            raise ValueError(
                f"Class '{self.class_names[c]}' in split '{self.name}' has "
                f"{counts[c]} images but a {shots}-shot {queries}-query episode needs "
                f"{need}. Lower shots/queries or drop the class."
            )

    def subset(self, class_indices: Sequence[int], name: str | None = None) -> ClassSplit:
        """A new split with only the given local classes (relabelled 0..len-1)."""
        class_indices = list(class_indices)
        items = np.concatenate([self.items_of(c) for c in class_indices])
        remap = {c: i for i, c in enumerate(class_indices)}
        labels = np.array([remap[c] for c in self.labels[items]])
        return ClassSplit(
            name=name or self.name,
            class_names=[self.class_names[c] for c in class_indices],
            labels=labels,
            images=None if self.images is None else self.images[items],
            paths=None if self.paths is None else self.paths[items],
            image_size=self.image_size,
            channels=self.channels,
            class_ids=self.class_ids[class_indices],
            benchmark=self.benchmark,
        )

    def summary(self) -> str:
        """One line: name, classes, images, per-class min/max, image shape."""
        counts = self.class_counts()
        return (
            f"{self.name}: {self.num_classes} classes, {self.num_images} images "
            f"({counts.min()}-{counts.max()} per class), "
            f"{'files' if self.is_file_backed else 'in memory'}, "
            f"{self.image_size[0]}x{self.image_size[1]}x{self.channels}"
        )

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str] | None = None,
        name: str = "arrays",
        class_ids: np.ndarray | None = None,
    ) -> ClassSplit:
        """A split from ``images (n, H, W[, C]) uint8`` and any hashable ``labels (n,)``.

        Labels are mapped to local indices in sorted order of their unique values.
        """
        labels = np.asarray(labels)
        uniques, local = np.unique(labels, return_inverse=True)
        if class_names is None:
            class_names = [str(u) for u in uniques]
        return cls(
            name=name,
            class_names=list(class_names),
            labels=local,
            images=images,
            class_ids=class_ids,
        )


def _check_same_shape(images: Sequence, split_name: str) -> None:
    """Raise a `ValueError` naming the first image whose shape differs from image 0's."""
    if not len(images):
        return
    first = np.shape(images[0])
    for i, image in enumerate(images):
        if np.shape(image) != first:
            raise ValueError(
                f"ClassSplit '{split_name}': image {i} has shape {np.shape(image)} but image 0 has "
                f"{first}; in-memory images must share one (H, W, C). Convert them first (e.g. "
                "PIL .convert('L') or .convert('RGB'), then resize), or use a file-backed split "
                "(load_benchmark('folders', ...)), which decodes every file to `channels`."
            )
