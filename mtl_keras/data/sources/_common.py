"""Helpers shared by the benchmark loaders: root/split lookup, class-folder scanning,
split CSVs, image checks, class-id assignment and `ClassSplit` assembly.

Conventions every loader follows:

* Structural problems raise at load time with a one-line message naming the exact
  file, folder or class and the fix. Missing paths raise `FileNotFoundError`;
  content problems (empty class, unreadable image, bad CSV) raise `ValueError`.
* Classes within a split are sorted by name; files within a class are sorted by
  name, so the same tree always yields the same splits.
* Class ids are unique across the three splits of a benchmark: train classes get
  ``0..C_train-1``, val classes follow, then test classes.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mtl_keras.data.split import ClassSplit

#: File extensions (lower case) treated as images when scanning class folders.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})

#: The split names every loader returns, in order.
SPLIT_NAMES = ("train", "val", "test")

#: Folder names accepted for each split, first match wins.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}

Verify = Literal["auto", "header", "full", "none"]

_VERIFY_MODES = ("auto", "header", "full", "none")
#: ``verify="auto"`` decodes every file (``"full"``) up to this many files, else reads headers.
AUTO_FULL_LIMIT = 50_000
_PARALLEL_THRESHOLD = 256  # below this many files, checking runs in one thread
_CHUNK = 512


@dataclasses.dataclass
class SplitParts:
    """What a loader collected for one split, before it becomes a `ClassSplit`.

    Args:
        name: split name (``"train"``, ``"val"`` or ``"test"``).
        class_names: one name per class, length ``C``.
        labels: ``(n,) int`` local class index of each item.
        images: ``(n, H, W, ch) uint8`` pixels, or ``None`` for a file-backed split.
        paths: ``(n,) str`` image file paths, or ``None`` for an in-memory split.
    """

    name: str
    class_names: list[str]
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[str] | None = None


# --------------------------------------------------------------------------- paths
def resolve_root(root: str | os.PathLike | None, benchmark: str, hint: str) -> Path:
    """Check that ``root`` is an existing folder and return it as a `Path`.

    Args:
        root: folder given by the caller.
        benchmark: benchmark name, used in messages.
        hint: one sentence saying what ``root`` should contain.

    Raises:
        ValueError: ``root`` is ``None``.
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
    """
    if root is None:
        raise ValueError(f"{benchmark}: no `root` given. {hint}")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{benchmark}: root folder '{path}' does not exist. {hint}")
    if not path.is_dir():
        raise NotADirectoryError(f"{benchmark}: root '{path}' is a file, not a folder. {hint}")
    return path


def find_split_dir(root: Path, split: str) -> Path | None:
    """The folder of ``split`` under ``root`` (accepting aliases such as ``valid/``), or None."""
    for alias in SPLIT_ALIASES.get(split, (split,)):
        candidate = root / alias
        if candidate.is_dir():
            return candidate
    return None


def require_split_dir(root: Path, split: str, benchmark: str) -> Path:
    """Like `find_split_dir` but raise `FileNotFoundError` naming the missing folder."""
    found = find_split_dir(root, split)
    if found is None:
        names = " or ".join(f"'{root / a}'" for a in SPLIT_ALIASES.get(split, (split,)))
        raise FileNotFoundError(
            f"{benchmark}: split folder {names} is missing. Create it with one "
            f"sub-folder of images per {split} class."
        )
    return found


def require_file(path: Path, benchmark: str, fix: str) -> Path:
    """Return ``path`` if it is an existing file, else raise `FileNotFoundError`."""
    if not path.is_file():
        raise FileNotFoundError(f"{benchmark}: file '{path}' is missing. {fix}")
    return path


def _visible(entry: os.DirEntry | Path) -> bool:
    return not entry.name.startswith(".")


def is_image_file(name: str) -> bool:
    """True when ``name`` has one of `IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted by name."""
    with os.scandir(folder) as entries:
        dirs = [Path(e.path) for e in entries if _visible(e) and e.is_dir()]
    return sorted(dirs, key=lambda p: p.name)


def list_image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files directly inside ``folder`` and the other visible files skipped.

    Returns:
        ``(images, skipped)``: both sorted by name; hidden files and sub-folders
        are in neither.
    """
    images, skipped = [], []
    with os.scandir(folder) as entries:
        for e in entries:
            if not _visible(e) or not e.is_file():
                continue
            (images if is_image_file(e.name) else skipped).append(Path(e.path))
    return sorted(images, key=lambda p: p.name), sorted(skipped, key=lambda p: p.name)


def scan_class_folders(split_dir: Path, benchmark: str) -> tuple[list[str], list[str], np.ndarray]:
    """Read a ``split_dir/<class>/<image>`` tree.

    Args:
        split_dir: folder with one sub-folder per class.
        benchmark: benchmark name, used in messages.

    Returns:
        ``(class_names, paths, labels)``: ``C`` folder names sorted, ``n`` image
        paths, and ``(n,) int64`` local labels in ``0..C-1``.

    Raises:
        ValueError: ``split_dir`` has no class folders, or a class folder holds
            no image files.
    """
    class_dirs = list_subdirs(split_dir)
    if not class_dirs:
        raise ValueError(
            f"{benchmark}: split folder '{split_dir}' has no class sub-folders. "
            "Put each class's images in its own sub-folder, e.g. "
            f"'{split_dir / 'class_a' / 'img001.jpg'}'."
        )
    class_names: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    skipped_total, skipped_example = 0, None
    for label, class_dir in enumerate(class_dirs):
        images, skipped = list_image_files(class_dir)
        if skipped:
            skipped_total += len(skipped)
            skipped_example = skipped_example or skipped[0]
        if not images:
            raise ValueError(
                f"{benchmark}: class folder '{class_dir}' has no image files "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Add images or delete the folder."
            )
        class_names.append(class_dir.name)
        paths.extend(str(p) for p in images)
        labels.extend([label] * len(images))
    if skipped_total:
        warnings.warn(
            f"{benchmark}: skipped {skipped_total} non-image file(s) in '{split_dir}', "
            f"e.g. '{skipped_example}'.",
            UserWarning,
            stacklevel=3,
        )
    return class_names, paths, np.asarray(labels, dtype=np.int64)


def read_split_csv(
    csv_path: Path, benchmark: str, columns: Sequence[str] = ("filename", "label")
) -> list[tuple[int, str, str]]:
    """Read a two-column split CSV (header row first), e.g. ``filename,label``.

    Args:
        csv_path: the CSV file.
        benchmark: benchmark name, used in messages.
        columns: the two header names expected, in order.

    Returns:
        One ``(line_number, first_column, second_column)`` per data row, with
        1-based line numbers as an editor shows them (the header is line 1).

    Raises:
        ValueError: wrong header, a row without two non-empty fields, or no rows.
    """
    rows: list[tuple[int, str, str]] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != list(columns):
            raise ValueError(
                f"{benchmark}: '{csv_path}' line 1 must be the header "
                f"'{','.join(columns)}', got '{','.join(header or [])}'. Fix the header."
            )
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(
                    f"{benchmark}: '{csv_path}' line {line} must have the two fields "
                    f"'{','.join(columns)}', got '{','.join(row)}'. Fix or delete the row."
                )
            rows.append((line, row[0].strip(), row[1].strip()))
    if not rows:
        raise ValueError(f"{benchmark}: '{csv_path}' has a header but no rows. Restore the split file.")
    return rows


# --------------------------------------------------------------------------- images
def normalize_image_size(image_size: int | Sequence[int], benchmark: str) -> tuple[int, int]:
    """``84 -> (84, 84)``; ``(H, W) -> (H, W)``; raise `ValueError` on anything else."""
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"{benchmark}: image_size must be a positive int or (height, width), got {image_size!r}."
        )
    return size  # type: ignore[return-value]


def image_header(path: str | Path, benchmark: str) -> tuple[int, int, str]:
    """``(height, width, PIL mode)`` of an image, reading only its header.

    Raises:
        ValueError: the file is not an image PIL can identify.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            return height, width, im.mode
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        reason = f"{type(err).__name__}: {err}"
        raise ValueError(_unreadable_message(benchmark, str(path), reason, [])) from err


def _check_image(path: str, full: bool) -> str | None:
    """None if ``path`` opens as an image (and decodes, when ``full``), else the reason."""
    try:
        with Image.open(path) as im:
            if full:
                im.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        return f"{type(err).__name__}: {err}"
    return None


def _check_chunk(paths: Sequence[str], full: bool) -> list[tuple[str, str]]:
    out = []
    for p in paths:
        problem = _check_image(p, full)
        if problem is not None:
            out.append((p, problem))
    return out


def _unreadable_message(benchmark: str, path: str, reason: str, more: Sequence[tuple[str, str]]) -> str:
    message = (
        f"{benchmark}: '{path}' is not a readable image ({reason}). Replace or delete "
        "the file, or pass verify='none' to skip this check, or unreadable='skip' (CLI: --set "
        "skip_unreadable=true) to leave such files out."
    )
    if more:
        message += f" {len(more)} more unreadable file(s), e.g. '{more[0][0]}'."
    return message


def verify_images(
    paths: Sequence[str],
    verify: Verify,
    benchmark: str,
    workers: int | None = None,
    unreadable: str = "raise",
) -> list[tuple[str, str]]:
    """Check that every file in ``paths`` is an image, before training starts.

    Args:
        paths: ``(n,)`` image file paths.
        verify: ``"auto"``: ``"full"`` for up to `AUTO_FULL_LIMIT` files (a user's folder set:
            seconds), ``"header"`` above (tieredImageNet's 780k files: minutes);
            ``"header"`` opens each file and parses only its header (size and
            mode) - cheap, catches non-images, wrong extensions of non-image data and
            truncated headers; ``"full"`` also decodes every pixel, catching truncated
            or corrupt image data (slow: about the cost of one epoch), and decodes each
            JPEG with TensorFlow's decoder to name those libjpeg calls corrupt
            (`corrupt_jpegs`); ``"none"`` skips the check.
        benchmark: benchmark name, used in messages.
        workers: threads used for the check; default ``min(32, 4 * cpu_count)``.
        unreadable: ``"raise"`` (default) or ``"skip"``: warn, listing every unreadable file
            with its reason, and return them so the loader leaves them out.

    Returns:
        ``[(path, reason), ...]`` of the unreadable files (empty unless ``unreadable="skip"``).

    Raises:
        ValueError: a file is not a readable image; names the first such file and
            how many more there are. Also for an unknown ``verify`` or ``unreadable`` mode.
    """
    if verify not in _VERIFY_MODES:
        raise ValueError(
            f"{benchmark}: verify must be one of {', '.join(map(repr, _VERIFY_MODES))}, got {verify!r}."
        )
    if unreadable not in ("raise", "skip"):
        raise ValueError(f"{benchmark}: unreadable must be 'raise' or 'skip', got {unreadable!r}.")
    if verify == "none" or not len(paths):
        return []
    full = verify == "full" or (verify == "auto" and len(paths) <= AUTO_FULL_LIMIT)
    paths = [str(p) for p in paths]
    if len(paths) < _PARALLEL_THRESHOLD:
        failures = _check_chunk(paths, full)
    else:
        workers = workers or min(32, 4 * (os.cpu_count() or 1))
        chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_check_chunk, chunks, [full] * len(chunks))
            failures = [f for chunk in results for f in chunk]
    if full:
        bad = {path for path, _ in failures}
        failures += corrupt_jpegs([p for p in paths if p not in bad])
    if failures and unreadable == "skip":
        listing = "; ".join(f"'{path}' ({reason})" for path, reason in failures)
        warnings.warn(
            f"{benchmark}: left out {len(failures)} unreadable file(s) (unreadable='skip'): {listing}",
            stacklevel=2,
        )
        return failures
    if failures:
        path, reason = failures[0]
        raise ValueError(_unreadable_message(benchmark, path, reason, failures[1:]))
    return []


def drop_files(parts: Sequence[SplitParts], drop: set[str], benchmark: str) -> list[SplitParts]:
    """``parts`` without the files ``drop`` (file-backed parts); a class left empty is dropped, named."""
    if not drop:
        return list(parts)
    out = []
    for part in parts:
        keep = np.array([p not in drop for p in part.paths], dtype=bool)
        labels = np.asarray(part.labels)[keep]
        paths = [p for p, k in zip(part.paths, keep) if k]
        present = np.unique(labels)
        if len(present) < len(part.class_names):
            gone = [n for i, n in enumerate(part.class_names) if i not in set(present.tolist())]
            warnings.warn(
                f"{benchmark}: class(es) {', '.join(gone)} of the '{part.name}' split hold no readable "
                "image and are left out.",
                stacklevel=2,
            )
            remap = np.full(len(part.class_names), -1)
            remap[present] = np.arange(len(present))
            labels = remap[labels]
        names = [part.class_names[i] for i in present]
        out.append(dataclasses.replace(part, class_names=names, labels=labels, paths=paths))
    return out


_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def corrupt_jpegs(paths: Sequence[str]) -> list[tuple[str, str]]:
    """``(path, libjpeg's complaint)`` for each JPEG in ``paths`` whose image data is corrupt.

    libjpeg decodes such a file (bad Huffman codes, a premature end of a data segment) with a
    warning and grey or smeared blocks; PIL hides the warning and TensorFlow prints it to the
    process's stderr ("Corrupt JPEG data: ...") without a file name, at every epoch. Each JPEG is
    decoded once here with TensorFlow's decoder (the pipeline's), one at a time, with file
    descriptor 2 captured, so the complaint can be tied to its file. Other files are skipped, and
    so is everything without TensorFlow installed (the JAX-only install: its pipeline decodes
    with PIL, which shows such a file as it decodes it, without a word either way).
    """
    from mtl_keras._tensorflow import tensorflow_installed

    jpegs = [str(p) for p in paths if str(p).lower().endswith(_JPEG_SUFFIXES)]
    if not jpegs or not tensorflow_installed():
        return []
    import sys
    import tempfile

    import tensorflow as tf

    out = []
    sys.stderr.flush()
    saved = os.dup(2)
    other = b""
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                for path in jpegs:
                    start = capture.seek(0, os.SEEK_END)
                    try:
                        tf.io.decode_jpeg(tf.io.read_file(path))
                    except Exception as err:  # noqa: BLE001 - any failure is the file's
                        text = str(err).strip().splitlines()[0].split("}} ")[-1]
                        out.append((path, f"{type(err).__name__}: {text}"))
                        continue
                    capture.seek(start)
                    said = capture.read()
                    lines = [line for line in said.decode(errors="replace").splitlines() if "JPEG" in line]
                    if lines:
                        out.append((path, f"libjpeg: {lines[0].strip()}"))
                    else:
                        other += said
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    if other.strip():  # whatever else was printed meanwhile goes where it was going
        sys.stderr.write(other.decode(errors="replace"))
    return out


def resize_images(images: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Resize ``(n, H, W, ch) uint8`` images to ``(n, h, w, ch) uint8`` with PIL bilinear.

    Returns ``images`` itself when the size already matches.
    """
    height, width = image_size
    if images.shape[1:3] == (height, width):
        return images
    out = np.empty((len(images), height, width, images.shape[3]), dtype=np.uint8)
    squeeze = images.shape[3] == 1
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if squeeze else img)
        resized = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
        out[i] = resized[..., None] if squeeze else resized
    return out


# --------------------------------------------------------------------------- splits
def check_class_disjoint(parts: Sequence[SplitParts], benchmark: str) -> None:
    """Raise `ValueError` when one class name appears in two splits (a leak)."""
    seen: dict[str, str] = {}
    for part in parts:
        for name in part.class_names:
            if name in seen:
                raise ValueError(
                    f"{benchmark}: class '{name}' is in both the '{seen[name]}' and the "
                    f"'{part.name}' split; few-shot splits must not share classes. "
                    "Move or delete one copy."
                )
            seen[name] = part.name


def warn_class_counts(parts: Sequence[SplitParts], expected: Mapping[str, int], benchmark: str) -> None:
    """Warn (do not fail) when class counts differ from the published benchmark's."""
    actual = {p.name: len(p.class_names) for p in parts}
    if all(actual.get(k) == v for k, v in expected.items()):
        return
    got = "/".join(str(actual.get(k, 0)) for k in expected)
    want = "/".join(str(v) for v in expected.values())
    warnings.warn(
        f"{benchmark}: found {got} {'/'.join(expected)} classes but the standard "
        f"benchmark has {want}; results will not be comparable to published numbers.",
        UserWarning,
        stacklevel=3,
    )


def build_splits(
    parts: Sequence[SplitParts],
    benchmark: str,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> tuple[ClassSplit, ...]:
    """Turn `SplitParts` into `ClassSplit`s with class ids unique across the splits.

    Args:
        parts: the splits, in order (train, val, test); ids are assigned in that order.
        benchmark: stored in each split's ``benchmark``.
        image_size: ``(H, W)`` for file-backed splits (ignored for in-memory ones).
        channels: 1 or 3 for file-backed splits (ignored for in-memory ones).

    Returns:
        One `ClassSplit` per part.
    """
    splits = []
    offset = 0
    for part in parts:
        num_classes = len(part.class_names)
        splits.append(
            ClassSplit(
                name=part.name,
                class_names=part.class_names,
                labels=part.labels,
                images=part.images,
                paths=None if part.paths is None else np.asarray(part.paths, dtype=str),
                image_size=None if part.images is not None else image_size,
                channels=None if part.images is not None else channels,
                class_ids=np.arange(offset, offset + num_classes),
                benchmark=benchmark,
            )
        )
        offset += num_classes
    return tuple(splits)


_FOLDER_TREE_HINT = (
    "Pass root= a folder holding train/, val/ and test/, each with one sub-folder of images per class."
)


def load_folder_tree(
    root: str | os.PathLike | None,
    benchmark: str,
    image_size: int | Sequence[int],
    channels: int,
    verify: Verify,
    expected: Mapping[str, int] | None = None,
    workers: int | None = None,
    hint: str = _FOLDER_TREE_HINT,
    unreadable: str = "raise",
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load a file-backed ``root/{train,val,test}/<class>/<image>`` tree.

    All a loader of class folders needs: ``image_size`` is checked first
    (`normalize_image_size`), then ``root`` (`resolve_root`), so a loader may pass
    its arguments through unchecked.

    Args:
        root: folder holding the three split folders (``val`` may be named
            ``valid`` or ``validation``).
        benchmark: benchmark name, stored in the splits and used in messages.
        image_size: ``H`` or ``(H, W)`` the pipeline resizes images to.
        channels: 1 or 3, what the pipeline decodes images to.
        verify: see `verify_images`.
        expected: published class count per split; a mismatch only warns.
        workers: threads for the image check.
        hint: one sentence saying what ``root`` should contain, for the messages
            of a missing ``root``.
        unreadable: ``"raise"`` or ``"skip"`` (leave unreadable files out, listed in a
            warning; see `verify_images`).

    Returns:
        ``(train, val, test)`` file-backed `ClassSplit`s.

    Raises:
        ValueError: bad ``image_size``, no ``root``, an empty split or class folder,
            a class in two splits, or an unreadable image.
        FileNotFoundError: ``root`` or a split folder is missing.
        NotADirectoryError: ``root`` is a file.
    """
    image_size = normalize_image_size(image_size, benchmark)
    root = resolve_root(root, benchmark, hint)
    parts = []
    for split in SPLIT_NAMES:
        split_dir = require_split_dir(root, split, benchmark)
        names, paths, labels = scan_class_folders(split_dir, benchmark)
        parts.append(SplitParts(split, names, labels, paths=paths))
    check_class_disjoint(parts, benchmark)
    if expected:
        warn_class_counts(parts, expected, benchmark)
    skipped = verify_images([p for part in parts for p in part.paths], verify, benchmark, workers, unreadable)
    parts = drop_files(parts, {path for path, _ in skipped}, benchmark)
    return build_splits(parts, benchmark, image_size, channels)  # type: ignore[return-value]


def check_channels(channels: int, benchmark: str) -> int:
    """Return ``channels`` if it is 1 or 3, else raise `ValueError`."""
    if channels not in (1, 3):
        raise ValueError(f"{benchmark}: channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
    return int(channels)
