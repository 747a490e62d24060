"""Glyph scenes: an embedded few-shot benchmark shaped like miniImageNet, with headroom.

`glyphs` is Omniglot-like: thousands of clean white-on-black characters, and a pretrained
ResNet-12 is at its ceiling there (97–99% at 5-way). This benchmark is built from the same
fonts (the ones matplotlib ships, so it needs no download) but is shaped like miniImageNet:
**64 / 16 / 20 classes** (train / val / test), **600 RGB images per class** by default, and
instances that vary much more within a class than the classes differ from each other.

Classes:
    One character per class: Latin, Greek and Cyrillic letters and digits present in at least
    `MIN_FONTS` of matplotlib's fonts, lookalikes removed (`glyphs`' rule: ``O``/``О``/``Ο``
    are one character). Of those, `NUM_CLASSES` are kept and grouped into *families* of
    `FAMILY_SIZE` characters that look alike (nearest reference renderings, greedy), and whole
    families go to one split: every split holds lookalikes (e.g. ``b d p q``, ``E F Ƒ Е``),
    so 5-way tasks often contain near-duplicates. Family order, and so the split of each
    family, is a fixed permutation (`SPLIT_SEED`), independent of ``seed`` and ``image_size``.

Instances (an image ``(H, W, 3) uint8``), each drawn independently:
    * **background**: a colour gradient, stripes, a low-frequency colour field or a checker
      board, in two random colours;
    * **clutter**: 0–2 *distractor* characters (symbols and punctuation that are no class)
      in random colours, sizes, positions and rotations;
    * **the class character**: in one of its fonts (up to 21 typefaces: DejaVu Sans / Serif /
      Mono, bold and oblique variants, STIX, Computer Modern), rotated ±20°, sheared ±0.2,
      scaled to 55–90% of the image, moved off centre, in a random colour of random
      contrast to the background;
    * **occlusion**: with probability 0.3, a rectangle or ellipse in a random colour over
      part of the character;
    * **camera**: pixel noise of random strength (standard deviation 0–10 levels).
    These are the defaults of `SceneStyle`, which holds the knobs. Everything is drawn on a
    canvas twice the image size and area-downscaled.

The parameters of every image come from a generator seeded by ``(seed, class index)``, so a
build is deterministic and classes can be rendered independently.

Cache:
    Built once (about a minute on two cores at the defaults) and stored as ``.npz`` in
    ``cache_dir``, else ``$MTL_KERAS_CACHE``, else ``~/.cache/mtl_keras``, written to a
    temporary file and renamed. The file name holds a hash of the font files, the
    settings, `CODE_VERSION` and the Pillow / FreeType versions.

Example:
    >>> from mtl_keras.data import load_benchmark
    >>> train, val, test = load_benchmark("glyph_scenes")  # 64 / 16 / 20 classes, 32x32 RGB
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtl_keras.data.sources import glyphs
from mtl_keras.data.split import ClassSplit

BENCHMARK = "glyph_scenes"

#: Bump whenever a change to this module changes the pixels or the class list.
CODE_VERSION = 1

#: Classes per split, as miniImageNet.
SPLIT_CLASSES = {"train": 64, "val": 16, "test": 20}
NUM_CLASSES = sum(SPLIT_CLASSES.values())
#: Characters of a family of lookalikes; every split's class count is a multiple of it.
FAMILY_SIZE = 4
#: A character needs an inked glyph in at least this many font files to be a class.
MIN_FONTS = 8
#: Seed of the (fixed) assignment of families to splits.
SPLIT_SEED = 1812

#: Unicode blocks the classes come from.
CLASS_BLOCKS = ("Basic Latin", "Greek and Coptic", "Cyrillic")
#: Characters drawn as clutter (never a class).
DISTRACTORS = "#$%&*+<=>?@~§¶†‡•※∑∏√∞∫≈≠≤≥⊕⊗◊♠♣♥♦★☆♪"

_CANVAS_FACTOR = 2  # the canvas is this many times the image side


@dataclasses.dataclass(frozen=True)
class SceneStyle:
    """How an instance is drawn: the difficulty knobs of the benchmark (defaults: the benchmark).

    Sizes are fractions of the image side; colours and contrasts in 0..1.

    Attributes:
        glyph_size: range of the class character's size (its font's em square).
        rotation: the character is rotated within ``±rotation`` degrees.
        shear: and sheared within ``±shear``.
        offset: its centre lies within ``±offset`` of the image centre.
        distractors: range of the number of clutter characters.
        distractor_size: their size range.
        occlusion: probability of an occluding rectangle or ellipse.
        noise: range of the pixel-noise standard deviation, in 0..255 levels.
        contrast: range of the least luminance difference between the character and the
            background under it.
    """

    glyph_size: tuple[float, float] = (0.55, 0.9)
    rotation: float = 20.0
    shear: float = 0.2
    offset: float = 0.12
    distractors: tuple[int, int] = (0, 2)
    distractor_size: tuple[float, float] = (0.2, 0.4)
    occlusion: float = 0.3
    noise: tuple[float, float] = (0.0, 10.0)
    contrast: tuple[float, float] = (0.25, 0.6)

    def key(self) -> str:
        """A stable text of every field (part of the cache key)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def load(
    root: str | os.PathLike | None = None,
    image_size: int = 32,
    instances_per_class: int = 600,
    cache_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    seed: int = 0,
    style: SceneStyle | None = None,
    workers: int | None = None,
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load (building and caching on first use) the three splits.

    Args:
        root: ignored; the images are rendered, not read (accepted for the registry).
        image_size: side ``H = W`` of the square images, at least 16.
        instances_per_class: images per class (default 600, as miniImageNet).
        cache_dir: folder of the cached ``.npz``; default ``$MTL_KERAS_CACHE``, else
            ``~/.cache/mtl_keras``.
        verbose: print build progress and one summary line per split.
        seed: seed of the images (the classes and splits do not depend on it).
        style: how instances are drawn (default `SceneStyle()`, the benchmark itself; other
            styles are other datasets, cached under their own name).
        workers: threads that render classes in parallel (default: the CPU count, at most
            4); the result does not depend on it.

    Returns:
        ``(train, val, test)`` in-memory `ClassSplit`s of ``(n, H, W, 3) uint8`` images with
        64 / 16 / 20 classes, class ids global (train ``0..63``, val ``64..79``, test
        ``80..99``).

    Raises:
        ValueError: ``image_size < 16`` or ``instances_per_class < 1``.
        RuntimeError: the fonts give fewer than `NUM_CLASSES` characters.
    """
    del root
    image_size, instances_per_class = int(image_size), int(instances_per_class)
    if image_size < 16:
        raise ValueError(f"{BENCHMARK}: image_size must be at least 16, got {image_size}.")
    if instances_per_class < 1:
        raise ValueError(f"{BENCHMARK}: instances_per_class must be at least 1, got {instances_per_class}.")
    style = style or SceneStyle()
    fonts = glyphs.font_files()
    path = cache_path(fonts, image_size, instances_per_class, seed, cache_dir, style)
    data = _read_cache(path)
    if data is None:
        if verbose:
            print(f"{BENCHMARK}: building the dataset from {len(fonts)} fonts into '{path}' ...", flush=True)
        start = time.perf_counter()
        data = build_arrays(fonts, image_size, instances_per_class, seed, verbose, style, workers)
        glyphs._write_cache(path, data)
        if verbose:
            print(f"{BENCHMARK}: built in {time.perf_counter() - start:.1f} s", flush=True)
    elif verbose:
        print(f"{BENCHMARK}: loaded from cache '{path}'", flush=True)
    splits = _to_splits(data)
    if verbose:
        for split in splits:
            print(f"{BENCHMARK} {split.summary()}", flush=True)
    return splits


def cache_path(
    fonts: Sequence[Path],
    image_size: int,
    instances_per_class: int,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    style: SceneStyle | None = None,
) -> Path:
    """Where the dataset built from ``fonts`` with these settings is cached."""
    import PIL
    from PIL import features

    key = hashlib.sha256()
    for path in fonts:
        key.update(f"{path.name}|{path.stat().st_size}|{glyphs._file_digest(path)}\n".encode())
    key.update(
        f"{image_size}|{instances_per_class}|{seed}|{CODE_VERSION}|{PIL.__version__}|"
        f"{features.version('freetype2')}|{unicodedata.unidata_version}|{(style or SceneStyle()).key()}".encode()
    )
    folder = Path(cache_dir or os.environ.get("MTL_KERAS_CACHE") or Path.home() / ".cache" / "mtl_keras")
    name = f"{BENCHMARK}_{image_size}px_{instances_per_class}x_seed{seed}_{key.hexdigest()[:16]}.npz"
    return folder.expanduser() / name


_CACHE_KEYS = ("images", "labels", "codepoints", "class_split", "class_names", "families")


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in _CACHE_KEYS}
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable or an older layout: rebuild


def _to_splits(data: dict[str, np.ndarray]) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    images, labels = data["images"], data["labels"]
    class_split, names = data["class_split"], data["class_names"]
    splits = []
    for s, split_name in enumerate(SPLIT_CLASSES):
        class_ids = np.flatnonzero(class_split == s)
        items = np.flatnonzero(np.isin(labels, class_ids))
        splits.append(
            ClassSplit(
                name=split_name,
                class_names=[str(n) for n in names[class_ids]],
                labels=labels[items] - class_ids[0],
                images=images[items],
                class_ids=class_ids,
                benchmark=BENCHMARK,
            )
        )
    return tuple(splits)  # type: ignore[return-value]


# --------------------------------------------------------------------------- classes
def choose_classes(fonts: list, verbose: bool = False) -> list[tuple[int, list, int]]:
    """``(code point, fonts with its glyph, split index)`` of the `NUM_CLASSES` classes.

    Ordered by split, then family, then code point: the order of the global class ids.
    """
    coverage: dict[int, list] = {}
    for font in fonts:
        for cp in font.codepoints():
            coverage.setdefault(cp, []).append(font)
    from fontTools import unicodedata as ft_unicodedata

    candidates = []
    for cp in sorted(coverage):
        char = chr(cp)
        if ft_unicodedata.block(char) not in CLASS_BLOCKS or unicodedata.category(char)[0] not in "LN":
            continue
        if unicodedata.decomposition(char) or len(coverage[cp]) < MIN_FONTS:
            continue
        with_ink = [f for f in coverage[cp] if f.has_ink(char)]
        if len(with_ink) >= MIN_FONTS:
            candidates.append((cp, with_ink))
    refs, kept = [], []
    for cp, with_ink in candidates:
        ref_font = next((f for f in with_ink if f.name == glyphs.REFERENCE_FONT), with_ink[0])
        ref = glyphs._render_glyph(ref_font, chr(cp), glyphs.DEDUPE_SIZE)
        if ref is not None:
            refs.append(ref)
            kept.append((cp, with_ink))
    refs = np.stack(refs)
    distinct = glyphs._dedupe(refs > 127)
    refs, kept = refs[distinct], [kept[i] for i in distinct]
    if len(kept) < NUM_CLASSES:
        raise RuntimeError(
            f"{BENCHMARK}: the fonts give {len(kept)} distinct characters, {NUM_CLASSES} are needed; "
            "check the matplotlib installation's fonts/ttf folder."
        )
    if verbose:
        print(
            f"{BENCHMARK}: {len(kept)} distinct characters, grouping {NUM_CLASSES} into families", flush=True
        )
    families = _families(refs, NUM_CLASSES // FAMILY_SIZE, FAMILY_SIZE)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(families))
    bounds = np.cumsum([n // FAMILY_SIZE for n in SPLIT_CLASSES.values()])
    out = []
    for rank, f in enumerate(order):
        split = int(np.searchsorted(bounds, rank, side="right"))
        for i in sorted(families[f], key=lambda i: kept[i][0]):
            out.append((kept[i][0], kept[i][1], split, rank))
    out.sort(key=lambda c: (c[2], c[3], c[0]))
    return [(cp, fonts_, split) for cp, fonts_, split, _ in out]


def _families(refs: np.ndarray, count: int, size: int) -> list[list[int]]:
    """``count`` groups of ``size`` mutually similar reference renderings, greedily.

    Distances are between blurred renderings (so a stroke moved by a pixel is near). The
    seed of each group is the character whose ``size - 1`` nearest neighbours are closest;
    it and those neighbours form the group; repeat on the rest.
    """
    x = refs.astype(np.float32) / 255.0
    for _ in range(2):  # a 5-tap blur, twice
        x = (np.roll(x, 1, 1) + np.roll(x, -1, 1) + np.roll(x, 1, 2) + np.roll(x, -1, 2) + x) / 5
    flat = x.reshape(len(x), -1)
    sq = (flat**2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * flat @ flat.T, 0))
    left = list(range(len(refs)))
    groups = []
    while len(groups) < count:
        sub = dist[np.ix_(left, left)] + np.diag(np.full(len(left), np.inf))
        near = np.sort(sub, axis=1)[:, : size - 1].sum(1)
        seed = int(np.argmin(near))
        members = [seed, *np.argsort(sub[seed])[: size - 1].tolist()]
        groups.append([left[m] for m in members])
        left = [i for j, i in enumerate(left) if j not in members]
    return groups


# --------------------------------------------------------------------------- rendering
def build_arrays(
    font_paths: Sequence[Path],
    image_size: int,
    instances_per_class: int,
    seed: int,
    verbose: bool = False,
    style: SceneStyle | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Render the whole dataset: the arrays stored in the cache.

    Classes are rendered independently (each from its own generator), in ``workers``
    threads; the arrays do not depend on ``workers``.
    """
    style = style or SceneStyle()
    fonts = [glyphs._Font(p) for p in font_paths]
    classes = choose_classes(fonts, verbose)
    n = instances_per_class
    jobs = [
        (c, cp, [f.path for f in class_fonts], image_size, n, seed, style)
        for c, (cp, class_fonts, _) in enumerate(classes)
    ]
    images = np.zeros((len(classes) * n, image_size, image_size, 3), dtype=np.uint8)
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    every = max(1, len(classes) // 10)
    done = 0

    def store(c, pixels):
        nonlocal done
        images[c * n : (c + 1) * n] = pixels
        done += 1
        if verbose and (done % every == 0 or done == len(classes)):
            print(f"{BENCHMARK}:   rendered {done}/{len(classes)} classes", flush=True)

    # Threads, not processes: NumPy and Pillow release the GIL in the heavy work, and a
    # process pool would have to re-import the caller's script (and TensorFlow) per worker.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(_render_class, *job[1:]): job[0] for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            store(futures[future], future.result())
    for font in fonts:
        font._pil.clear()
    return {
        "images": images,
        "labels": np.repeat(np.arange(len(classes)), n),
        "codepoints": np.array([cp for cp, _, _ in classes], dtype=np.int64),
        "class_split": np.array([s for _, _, s in classes], dtype=np.int64),
        "class_names": np.array(
            [f"{chr(cp)} {unicodedata.name(chr(cp))} (U+{cp:04X})" for cp, _, _ in classes]
        ),
        "families": np.arange(len(classes)) // FAMILY_SIZE,
    }


def _render_class(
    cp: int, font_paths: list[Path], image_size: int, count: int, seed: int, style: SceneStyle
) -> np.ndarray:
    """``(count, H, W, 3) uint8``: the scenes of class character ``cp`` (generator ``(seed, cp)``)."""
    canvas = _CANVAS_FACTOR * image_size
    fonts = [glyphs._Font(p) for p in font_paths]
    inks = [_padded(glyphs._glyph_ink(f, chr(cp), canvas)) for f in fonts]
    distractors = _distractor_inks(canvas)
    return render_scenes(inks, distractors, count, image_size, np.random.default_rng([seed, cp]), style)


def _padded(ink) -> np.ndarray:
    """A PIL ink image as a square ``(S, S) float32`` array in 0..1, the ink centred."""
    a = np.asarray(ink, dtype=np.float32) / 255.0
    h, w = a.shape
    side = max(h, w) + 2
    out = np.zeros((side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = a
    return out


def _distractor_inks(canvas: int) -> list[np.ndarray]:
    """`DISTRACTORS` in DejaVu Sans (those it has), as `_padded` inks."""
    import matplotlib

    font = glyphs._Font(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / glyphs.REFERENCE_FONT)
    have = font.codepoints()
    inks = []
    for char in DISTRACTORS:
        if ord(char) in have and font.has_ink(char):
            inks.append(_padded(glyphs._glyph_ink(font, char, canvas * 0.6)))
    return inks


def render_scenes(
    inks: Sequence[np.ndarray],
    distractors: Sequence[np.ndarray],
    count: int,
    image_size: int,
    rng: np.random.Generator,
    style: SceneStyle | None = None,
) -> np.ndarray:
    """``(count, H, W, 3) uint8`` scenes of one class: a random ink of ``inks`` in each.

    Args:
        inks: the class character in each of its fonts, ``(S, S) float32`` in 0..1.
        distractors: clutter characters, same form.
        count: images to draw.
        image_size: ``H = W``.
        rng: the generator every random choice comes from.
        style: how (default `SceneStyle()`).
    """
    st = style or SceneStyle()
    canvas = _CANVAS_FACTOR * image_size
    bg = _backgrounds(count, canvas, rng)  # (n, C, C, 3) in 0..1
    out = bg.copy()
    # Clutter first, under the character.
    extra = rng.integers(st.distractors[0], st.distractors[1] + 1, count)
    for k in range(st.distractors[1]):
        rows = np.flatnonzero(extra > k)
        which = rng.integers(0, len(distractors), len(rows))
        size = rng.uniform(*st.distractor_size, len(rows))
        matrix = _affines(rng, len(rows), size, rotation=180.0, shear=0.2, offset=0.4)
        alpha = _warp(distractors, which, matrix, canvas)
        colour = rng.uniform(0, 1, (len(rows), 3))
        out[rows] = _over(out[rows], alpha, colour)
    which = rng.integers(0, len(inks), count)
    size = rng.uniform(*st.glyph_size, count)
    matrix = _affines(rng, count, size, st.rotation, st.shear, st.offset)
    alpha = _warp(inks, which, matrix, canvas)
    colour = _contrasting(bg, alpha, rng, st.contrast)
    out = _over(out, alpha, colour)
    occluded = np.flatnonzero(rng.uniform(size=count) < st.occlusion)
    if len(occluded):
        out[occluded] = _over(
            out[occluded], _occluders(alpha[occluded], canvas, rng), rng.uniform(0, 1, (len(occluded), 3))
        )
    out = out.reshape(count, image_size, _CANVAS_FACTOR, image_size, _CANVAS_FACTOR, 3).mean(axis=(2, 4))
    out = out * 255.0 + rng.normal(0, 1, out.shape) * rng.uniform(*st.noise, count)[:, None, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _backgrounds(n: int, canvas: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, C, C, 3) float32`` backgrounds: gradient, stripes, colour field or checker board."""
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas - 0.5
    theta = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    kind = rng.integers(0, 4, n)
    freq = rng.uniform(2, 7, n).astype(np.float32)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    grid = rng.uniform(0, 1, (n, 5, 5)).astype(np.float32)
    cell = rng.integers(canvas // 8, canvas // 3, n).astype(np.float32)[:, None, None]
    c1, c2 = rng.uniform(0, 1, (2, n, 1, 1, 3)).astype(np.float32)
    t = np.empty((n, canvas, canvas), np.float32)
    for k in range(4):
        rows = np.flatnonzero(kind == k)
        if not len(rows):
            continue
        cos, sin = np.cos(theta[rows]), np.sin(theta[rows])
        along = xx * cos + yy * sin  # (rows, C, C), about -0.7..0.7
        if k == 0:  # gradient
            t[rows] = along + 0.5
        elif k == 1:  # stripes
            t[rows] = 0.5 + 0.5 * np.sin(2 * np.pi * freq[rows] * along + phase[rows])
        elif k == 2:  # a smooth colour field
            t[rows] = _upsample(grid[rows], canvas)
        else:  # checker board
            across = yy * cos - xx * sin
            c = cell[rows]
            t[rows] = (np.floor(along * canvas / c) + np.floor(across * canvas / c)) % 2
    t = t[..., None]
    return c1 + (c2 - c1) * t


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of ``(n, g, g)`` grids to ``(n, size, size)``."""
    g = grid.shape[1]
    pos = np.linspace(0, g - 1, size)
    i0 = np.clip(np.floor(pos).astype(int), 0, g - 2)
    f = (pos - i0).astype(np.float32)
    rows = grid[:, i0] * (1 - f)[None, :, None] + grid[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None] + rows[:, :, i0 + 1] * f[None, None]


def _affines(rng, n, size, rotation, shear, offset) -> np.ndarray:
    """``(n, 2, 3)`` maps from canvas coordinates (0..1) to ink coordinates (0..1).

    The ink's square is scaled so that it spans ``size`` of the canvas, rotated within
    ``±rotation`` degrees, sheared within ``±shear`` and centred within ``±offset`` of the
    canvas centre.
    """
    theta = np.radians(rng.uniform(-rotation, rotation, n))
    sh = rng.uniform(-shear, shear, n)
    centre = 0.5 + rng.uniform(-offset, offset, (n, 2))
    cos, sin = np.cos(theta), np.sin(theta)
    # forward: canvas = centre + size * R @ S @ (ink - 0.5); invert it.
    forward = np.empty((n, 2, 2))
    forward[:, 0, 0] = cos
    forward[:, 0, 1] = cos * sh - sin
    forward[:, 1, 0] = sin
    forward[:, 1, 1] = sin * sh + cos
    forward *= np.asarray(size)[:, None, None]
    inverse = np.linalg.inv(forward)
    shift = 0.5 - np.einsum("nij,nj->ni", inverse, centre)
    return np.concatenate([inverse, shift[:, :, None]], axis=2)


def _warp(inks: Sequence[np.ndarray], which: np.ndarray, matrix: np.ndarray, canvas: int) -> np.ndarray:
    """``(n, C, C)`` alpha: ink ``which[i]`` sampled bilinearly through ``matrix[i]``."""
    n = len(which)
    out = np.zeros((n, canvas, canvas), np.float32)
    coords = (np.arange(canvas, dtype=np.float32) + 0.5) / canvas
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    for k in np.unique(which):
        rows = np.flatnonzero(which == k)
        ink = inks[k]
        side = ink.shape[0]
        m = matrix[rows]
        u = (m[:, 0, 0, None, None] * xx + m[:, 0, 1, None, None] * yy + m[:, 0, 2, None, None]) * side - 0.5
        v = (m[:, 1, 0, None, None] * xx + m[:, 1, 1, None, None] * yy + m[:, 1, 2, None, None]) * side - 0.5
        u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
        padded = np.pad(ink, 1)  # out-of-range samples read the zero border
        rows_0 = np.clip(v0 + 1, 0, side + 1)
        rows_1 = np.clip(v0 + 2, 0, side + 1)
        cols_0 = np.clip(u0 + 1, 0, side + 1)
        cols_1 = np.clip(u0 + 2, 0, side + 1)
        top = padded[rows_0, cols_0] * (1 - fu) + padded[rows_0, cols_1] * fu
        bottom = padded[rows_1, cols_0] * (1 - fu) + padded[rows_1, cols_1] * fu
        out[rows] = top * (1 - fv) + bottom * fv
    return out


def _over(images: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``images`` with ``colour (n, 3)`` painted at opacity ``alpha (n, C, C)`` (in place)."""
    a = alpha[..., None]
    colour = colour.astype(np.float32)[:, None, None, :]
    images += a * (colour - images)
    return images


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _contrasting(bg: np.ndarray, alpha: np.ndarray, rng, contrast) -> np.ndarray:
    """``(n, 3)`` character colours, each at least a random luminance away from its background."""
    n = len(bg)
    weight = alpha / np.maximum(alpha.sum(axis=(1, 2), keepdims=True), 1e-6)
    under = np.einsum("nyx,nyxc->nc", weight, bg)  # background colour under the character
    colour = rng.uniform(0, 1, (n, 3))
    need = rng.uniform(*contrast, n)
    diff = _luminance(colour) - _luminance(under)
    direction = np.where(diff == 0, 1.0, np.sign(diff))
    # Room to move in the chosen direction; flip where there is not enough.
    room = np.where(direction > 0, 1 - _luminance(under), _luminance(under))
    direction = np.where(room < need, -direction, direction)
    short = np.maximum(need - np.abs(diff) * (np.sign(diff) == direction), 0)
    colour = colour + (direction * (np.abs(diff) * (np.sign(diff) != direction) + short))[:, None]
    return np.clip(colour, 0, 1)


def _occluders(alpha: np.ndarray, canvas: int, rng) -> np.ndarray:
    """``(n, C, C)`` masks of a rectangle or ellipse over part of each character's ink box."""
    n = len(alpha)
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    masks = np.zeros((n, canvas, canvas), np.float32)
    for i in range(n):
        ys, xs = np.nonzero(alpha[i] > 0.5)
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        h, w = rng.uniform(0.25, 0.5) * (y1 - y0 + 1), rng.uniform(0.25, 0.5) * (x1 - x0 + 1)
        cy, cx = rng.uniform(y0, y1), rng.uniform(x0, x1)
        if rng.uniform() < 0.5:
            masks[i] = (np.abs(yy - cy) <= h / 2) & (np.abs(xx - cx) <= w / 2)
        else:
            masks[i] = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1
    return masks


__all__ = ["load", "cache_path", "choose_classes", "render_scenes", "build_arrays"]
