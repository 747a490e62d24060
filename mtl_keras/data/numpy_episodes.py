"""`EpisodeSource`: the episodes of `make_episodes` as numpy arrays, without TensorFlow.

A `keras.utils.PyDataset`, so ``model.fit(source, steps_per_epoch=...)`` and
``model.evaluate(source)`` take it on every Keras backend (JAX in particular). It reads
the same `EpisodeStream` as `make_episodes` (task ``j`` seeded by ``(seed, j)``, the same
hard-task pool hook, the same resume position), and turns index batches into pixels with
numpy (in-memory splits) or Pillow (file-backed splits): for the same arguments and seed
it yields the same tasks (the same images of the same classes) as the `tf.data` pipeline,
bit for bit on in-memory splits and on PNG/BMP files stored at the split's channel count.
Pillow's JPEG decoder (accurate integer DCT) and its RGB→gray weights differ from
TensorFlow's (fast integer DCT, libjpeg's luma): up to 4/255 per pixel on JPEG files,
1/255 on RGB files read as grayscale (measured).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator

import keras
import numpy as np

from mtl_keras.data.episode_stream import EpisodeSampler, EpisodeStream, episode_labels, open_stream
from mtl_keras.data.split import ClassSplit


def episode_source(
    split: ClassSplit,
    ways: int,
    shots: int,
    queries: int = 15,
    meta_batch_size: int = 1,
    num_batches: int | None = None,
    seed: int = 0,
    repeatable: bool = False,
    batch_source: Callable[[EpisodeSampler, int], Iterator[dict]] | None = None,
    hard_tasks=None,
    augment: Callable | None = None,
    workers: int = 1,
) -> EpisodeSource:
    """The episodes of `make_episodes` (same arguments, same seed) as a backend-agnostic source.

    Each element is ``(inputs, query_labels)`` of numpy arrays::

        inputs["support_images"]: (B, N*K, H, W, C) float32 in [0, 1]
        inputs["support_labels"]: (B, N*K) int32 in 0..N-1
        inputs["query_images"]:   (B, N*Q, H, W, C) float32 in [0, 1]
        inputs["task_classes"]:   (B, N) int32 global class ids
        query_labels:             (B, N*Q) int32 in 0..N-1

    Imports no TensorFlow: this is the episode pipeline of the JAX (and PyTorch) backends,
    and what `make_episodes` returns where TensorFlow is not installed.

    Args:
        split: a `ClassSplit`. In memory: pixels gathered with numpy (identical to
            `make_episodes`). File-backed: files decoded with Pillow to the split's
            channels and resized (bilinear, antialiased, `keras.ops.image.resize`) when
            their size differs: identical to `make_episodes` for PNG/BMP files at the
            split's channel count, within 4/255 for JPEG files (see the module doc).
        ways: ``N``, classes per task.
        shots: ``K``, support images per class.
        queries: ``Q``, query images per class.
        meta_batch_size: tasks per element ``B``.
        num_batches: elements per pass; ``None`` = endless (give ``steps_per_epoch`` to `fit`).
        seed: sampler seed. Same seed ⇒ same episodes as `make_episodes`.
        repeatable: every pass yields the same episodes (validation/test); if False the
            stream continues across passes, as in `make_episodes`.
        batch_source: advanced: a generator factory ``(sampler, B) → index dicts``.
        hard_tasks: a `HardTaskPool` (shorthand for ``batch_source=hard_tasks.batch_source``);
            pass ``mtl_keras.callbacks.HardTaskMining(source)`` to ``fit``.
        augment: optional ``images (M, H, W, C) float32 → same``, called eagerly on numpy
            arrays (a Keras preprocessing model works); its output is converted to numpy.
            Random augmentations draw other random numbers than in the `tf.data` graph.
        workers: threads Keras uses to load elements (`keras.utils.PyDataset`); the index
            stream is drawn in order under a lock either way.

    Returns:
        An `EpisodeSource`, with the ``episode_stream`` attribute `ResumableCheckpoint` and
        `HardTaskMining` use.

    Example:
        >>> source = episode_source(train, ways=5, shots=1, queries=15, meta_batch_size=4)
        >>> model.fit(source, steps_per_epoch=100, epochs=10, shuffle=False)
    """
    B = int(meta_batch_size)
    stream = open_stream(split, ways, shots, queries, B, seed, batch_source, hard_tasks)
    return EpisodeSource(
        stream,
        numpy_image_loader(split),
        support_labels=episode_labels(ways, shots, B),
        query_labels=episode_labels(ways, queries, B),
        num_batches=num_batches,
        repeatable=repeatable,
        augment=augment,
        workers=workers,
    )


class EpisodeSource(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` over an `EpisodeStream` (made by `episode_source`).

    Iterating it (``for inputs, labels in source``) makes one pass, like iterating a
    `tf.data.Dataset`. Keras reads it by index: a pass starts at the first request and
    hands out the stream's meta-batches in the order they are drawn; requesting an index
    already served in this pass (a new ``fit``/``evaluate`` starts again at 0), or any
    index after a finite pass was served in full, starts the next pass. Out-of-order
    requests (``fit(shuffle=True)`` on a finite source) get the meta-batch of that
    position in the pass; with a hard-task pool they reorder its feedback, so pass
    ``shuffle=False``.

    Args:
        stream: the `EpisodeStream` to read (``episode_stream`` attribute).
        load: ``items (...,) int → images (..., H, W, C) float32`` (`numpy_image_loader`).
        support_labels: ``(B, N*K) int32``; query_labels: ``(B, N*Q) int32``.
        num_batches: elements per pass, None: endless.
        repeatable: every pass starts at meta-batch 0.
        augment: optional ``images (M, H, W, C) → same``.
        workers: Keras loader threads (multiprocessing is not supported: the stream and a
            hard-task pool live in this process).
    """

    def __init__(
        self,
        stream: EpisodeStream,
        load: Callable[[np.ndarray], np.ndarray],
        support_labels: np.ndarray,
        query_labels: np.ndarray,
        num_batches: int | None = None,
        repeatable: bool = False,
        augment: Callable | None = None,
        workers: int = 1,
    ):
        super().__init__(workers=int(workers), use_multiprocessing=False)
        self.episode_stream = stream
        self.load = load
        self.support_labels = np.asarray(support_labels, dtype=np.int32)
        self.query_labels = np.asarray(query_labels, dtype=np.int32)
        self._num_batches = None if num_batches is None else int(num_batches)
        self.repeatable = bool(repeatable)
        self.augment = augment
        self._lock = threading.Lock()
        self._pass = None  # iterator of the current pass' index batches
        self._drawn: dict[int, dict] = {}  # drawn, not yet served, by position in the pass
        self._served: set[int] = set()
        self._next = 0  # position of the next meta-batch the pass draws
        self._warned_order = False

    @property
    def num_batches(self) -> int | None:
        """Elements per pass (None: endless)."""
        return self._num_batches

    def __len__(self) -> int:
        if self._num_batches is None:
            raise TypeError("An endless EpisodeSource (num_batches=None) has no length.")
        return self._num_batches

    def __iter__(self) -> Iterator[tuple[dict, np.ndarray]]:
        for batch in self.episode_stream.batches(self._num_batches, self.repeatable):
            yield self.element(batch)

    def __getitem__(self, index: int) -> tuple[dict, np.ndarray]:
        index = int(index)
        if index < 0 or (self._num_batches is not None and index >= self._num_batches):
            raise IndexError(f"EpisodeSource index {index} out of range (num_batches={self._num_batches}).")
        with self._lock:
            batch = self._take(index)
        return self.element(batch)

    def _begin_pass(self, remaining: int | None) -> None:
        self._pass = iter(self.episode_stream.batches(remaining, self.repeatable))

    def _take(self, index: int) -> dict:
        complete = self._num_batches is not None and len(self._served) >= self._num_batches
        if self._pass is None or index in self._served or complete:
            self._begin_pass(self._num_batches)
            self._drawn, self._served, self._next = {}, set(), 0
        if index != self._next and index not in self._drawn and not self._warned_order:
            if self.episode_stream.batch_source is not None:
                self._warned_order = True
                warnings.warn(
                    "EpisodeSource: meta-batches requested out of order (fit(shuffle=True) on a "
                    "finite source?); a hard-task pool then matches its feedback to other tasks. "
                    "Pass shuffle=False.",
                    stacklevel=3,
                )
        restarted = False
        while index not in self._drawn:
            try:
                self._drawn[self._next] = next(self._pass)
                self._next += 1
                restarted = False
            except StopIteration:
                # The stream was moved (`EpisodeStream.seek`/`set_state`, e.g. by a tracker at the
                # start of a fit): continue the pass from the stream's new position.
                if restarted:
                    raise RuntimeError("EpisodeSource: the episode stream yields nothing.") from None
                restarted = True
                remaining = None if self._num_batches is None else self._num_batches - self._next
                self._begin_pass(remaining)
        self._served.add(index)
        return self._drawn.pop(index)

    def element(self, batch: dict) -> tuple[dict, np.ndarray]:
        """``(inputs, query_labels)`` of an index batch (``task_classes``, ``support_items``,
        ``query_items``, as `EpisodeStream.batches` yields them)."""
        support = self.load(batch["support_items"])
        query = self.load(batch["query_items"])
        if self.augment is not None:
            support = _apply_flat(self.augment, support)
            query = _apply_flat(self.augment, query)
        inputs = {
            "support_images": support,
            "support_labels": self.support_labels.copy(),
            "query_images": query,
            "task_classes": np.asarray(batch["task_classes"], dtype=np.int32),
        }
        return inputs, self.query_labels.copy()


def _apply_flat(fn, images: np.ndarray) -> np.ndarray:
    flat = images.reshape((-1,) + images.shape[2:])
    out = keras.ops.convert_to_numpy(fn(flat)).astype(np.float32, copy=False)
    return out.reshape(images.shape[:2] + out.shape[1:])


def numpy_image_loader(split: ClassSplit) -> Callable[[np.ndarray], np.ndarray]:
    """``items (...,) int → images (..., H, W, C) float32 in [0, 1]``, without TensorFlow.

    In memory: ``images[items] / 255`` in float32, as `make_episodes`' gather. File-backed:
    each file decoded with Pillow to the split's channels (grayscale, RGB and RGBA files
    mix freely, as with ``tf.io.decode_image``), resized to the split's size when it differs
    (bilinear, antialiased), clipped to 0..255 and divided by 255. A truncated or non-image
    file raises a `ValueError` naming it.
    """
    h, w = split.image_size
    c = split.channels
    if not split.is_file_backed:
        pixels = split.images

        def load(items):
            return pixels[np.asarray(items, dtype=np.int64)].astype(np.float32) / np.float32(255.0)

        return load

    paths = split.paths

    def load(items):
        items = np.asarray(items, dtype=np.int64)
        flat = [decode_image_file(paths[i], (h, w), c) for i in items.reshape(-1)]
        return np.stack(flat).reshape(items.shape + (h, w, c))

    return load


#: Bytes at the end of a file searched for the JPEG/PNG end marker (as `make_episodes`).
_TAIL_BYTES = 4096


def _is_complete_image(raw: bytes) -> bool:
    """The check of `make_episodes`' ``_check_image_bytes``: magic bytes, JPEG/PNG end marker."""
    tail = raw[-_TAIL_BYTES:]
    return (
        (raw.startswith(b"\xff\xd8\xff") and b"\xff\xd9" in tail)
        or (raw.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in tail)
        or raw.startswith(b"GIF8")
        or raw.startswith(b"BM")
        or (raw.startswith(b"RIFF") and raw[8:12] == b"WEBP")
    )


def decode_image_file(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as ``(H, W, channels) float32`` in [0, 1] (see `numpy_image_loader`).

    Raises:
        ValueError: naming ``path``, when the file is truncated or not an image.
    """
    import io

    from PIL import Image

    with open(path, "rb") as f:
        raw = f.read()
    if not _is_complete_image(raw):
        raise ValueError(
            f"Image file {path} is truncated or not an image (JPEG/PNG/GIF/BMP/WebP). Replace or "
            "delete it; load the benchmark with verify='full' (CLI: --set verify=full) to find every such file before training."
        )
    with Image.open(io.BytesIO(raw)) as image:
        image.seek(0)  # the first frame of an animation, as expand_animations=False
        if channels == 1 and image.mode == "RGB":
            image.draft("L", image.size)  # JPEG: decode the luma directly, as libjpeg does for TF
        image = image.convert("L" if channels == 1 else "RGB")
        array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[:2] != tuple(size):
        array = keras.ops.convert_to_numpy(
            keras.ops.image.resize(array, size, interpolation="bilinear", antialias=True)
        )
    return np.clip(array, 0.0, 255.0) / np.float32(255.0)
