"""Glyphs: the embedded few-shot dataset, rendered from the fonts matplotlib ships.

A *class* is one Unicode character; its *instances* are that character drawn in
the different fonts that really contain it, each with a small deterministic
jitter, so the dataset needs no download and works offline.

Fonts:
    Every ``*.ttf`` in ``matplotlib.get_data_path()/fonts/ttf`` (DejaVu Sans /
    Serif / Mono variants, STIX General, Computer Modern ``cm*``) plus the
    ``*.ttf``/``*.otf`` files of ``extra_font_dirs``. Symbol, fallback and
    odd-encoded fonts are left out (`EXCLUDED_FONT_PREFIXES`: ``cmex10``,
    ``cmsy10``, ``cmmi10``, ``STIXSiz*``, ``STIXNonUni*``, ``LastResort*``). A font
    counts as containing a character only when its cmap maps the code point to a
    glyph whose name does not say it is a different character (the remaining
    ``cm*`` fonts put e.g. ``exclamdown`` at ``<``) and the glyph has ink; PIL is
    never trusted for this, as it silently draws a ``.notdef`` box.

Classes:
    Letters, digits, punctuation and symbols (no whitespace, control, combining
    or private-use characters, and no precomposed characters such as accented
    letters or compatibility forms) of the Unicode blocks listed in `SCRIPTS`,
    present in at least `MIN_FONTS` distinct fonts. Lookalikes are dropped over
    the whole dataset: going through the candidates in code-point order, a
    character is dropped when its 32x32 reference rendering (DejaVu Sans when it
    has the glyph) matches an already kept character's to within `DEDUPE_PIXELS`
    pixels, allowing a one-pixel misalignment. So Latin ``A``, Greek ``Α`` and
    Cyrillic ``А`` give one class (``A``), and so do ``o``/``O``, ``Φ``/``Ф``
    (glyphs are scaled to fit, so case pairs of the same shape coincide). The
    class list depends only on the font files, not on ``image_size`` or
    ``seed``. Class names read ``"LATIN CAPITAL LETTER A (U+0041)"``.

Splits:
    Class-disjoint *by script*, like Omniglot's alphabets: every Unicode block
    belongs to one script of `SCRIPTS` and every script to one split, so no
    script is seen in two splits. Train holds Latin (with IPA, ASCII digits and
    symbols), Cyrillic, Canadian Syllabics, mathematical operators,
    miscellaneous symbols, dingbats, punctuation and currency; val holds Arabic,
    Hebrew, Lao, Old Italic, Lisu, technical symbols and geometric shapes; test
    holds Greek, Armenian, Georgian and arrows (about 64 / 15 / 21 % of the
    classes). Class ids are global: train ``0..C1-1``, then val, then test.

Images:
    ``uint8`` grayscale ``(H, W, 1)``, a **white glyph (255) on a black
    background (0)**. The glyph's ink bounding box is centred and scaled so that
    its longer side spans 80 % of the image, then jittered: rotation within
    +-10 degrees, scale 0.85-1.1, shift within +-2 pixels and stroke thickness
    (-1/64 to +2/64 of the image side on each side of a stroke, by a min/max
    filter on a 2x or larger supersampled canvas), and never cut off.
    Every class gets exactly ``instances_per_class`` images, cycling through its
    fonts (in a per-class shuffled order) with a fresh jitter each time.

Cache:
    The first call builds the dataset (about 10-20 s) and stores it as a
    compressed ``.npz`` in ``cache_dir``, else ``$MTL_KERAS_CACHE``, else
    ``~/.cache/mtl_keras``. The file name holds a hash of the font files (names,
    sizes and content hashes), ``image_size``, ``instances_per_class``, ``seed``,
    `CODE_VERSION` and the Pillow / FreeType / Unicode versions, so the same
    files always give the same dataset and a change of fonts triggers a rebuild.
    The file is written atomically (temporary file in the same folder, then
    `os.replace`). Builds are deterministic: two builds give identical arrays.

Example:
    >>> from mtl_keras.data import load_benchmark
    >>> train, val, test = load_benchmark("glyphs", image_size=32)

The module holds the font discovery, rendering, deduplication and cache; `glyph_scenes` reuses them.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtl_keras.atomic import write_atomic
from mtl_keras.data.split import ClassSplit

BENCHMARK = "glyphs"

#: Bump whenever a change to this module changes the pixels or the class list.
CODE_VERSION = 2

#: A character needs a non-empty glyph in at least this many font files.
MIN_FONTS = 4

#: Font files whose name starts with one of these are never used: ``cmex10`` /
#: ``cmsy10`` / ``cmmi10`` put other symbols at ASCII code points, ``STIXSiz*``
#: hold only big delimiter variants, ``STIXNonUni*`` only private-use glyphs and
#: ``LastResort*`` draws one placeholder per Unicode block.
EXCLUDED_FONT_PREFIXES = ("cmex", "cmsy", "cmmi", "STIXSiz", "STIXNonUni", "LastResort")

#: script -> (split, Unicode blocks). Characters of other blocks are not used.
SCRIPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # train
    "Latin": (
        "train",
        (
            "Basic Latin",
            "Latin-1 Supplement",
            "Latin Extended-A",
            "Latin Extended-B",
            "Latin Extended-C",
            "Latin Extended-D",
            "Latin Extended Additional",
            "IPA Extensions",
            "Phonetic Extensions",
            "Letterlike Symbols",
            "Number Forms",
        ),
    ),
    "Cyrillic": ("train", ("Cyrillic", "Cyrillic Supplement", "Cyrillic Extended-B")),
    "Canadian Syllabics": ("train", ("Unified Canadian Aboriginal Syllabics",)),
    "Mathematical operators": (
        "train",
        (
            "Mathematical Operators",
            "Supplemental Mathematical Operators",
            "Miscellaneous Mathematical Symbols-A",
            "Miscellaneous Mathematical Symbols-B",
        ),
    ),
    "Miscellaneous symbols": ("train", ("Miscellaneous Symbols",)),
    "Dingbats": ("train", ("Dingbats",)),
    "Punctuation and currency": (
        "train",
        ("General Punctuation", "Supplemental Punctuation", "Currency Symbols"),
    ),
    # val
    "Arabic": ("val", ("Arabic",)),
    "Lao": ("val", ("Lao",)),
    "Old Italic": ("val", ("Old Italic",)),
    "Lisu": ("val", ("Lisu",)),
    "Hebrew": ("val", ("Hebrew",)),
    "Technical symbols": ("val", ("Miscellaneous Technical",)),
    "Geometric shapes": ("val", ("Geometric Shapes",)),
    # test
    "Greek": ("test", ("Greek and Coptic",)),
    "Armenian": ("test", ("Armenian",)),
    "Georgian": ("test", ("Georgian", "Georgian Supplement")),
    "Arrows": (
        "test",
        (
            "Arrows",
            "Supplemental Arrows-A",
            "Supplemental Arrows-B",
            "Miscellaneous Symbols and Arrows",
        ),
    ),
}

SPLIT_NAMES = ("train", "val", "test")

#: Reference rendering for the lookalike check: this font when it has the glyph.
REFERENCE_FONT = "DejaVuSans.ttf"
#: Size of the reference rendering used by the lookalike check.
DEDUPE_SIZE = 32
#: Two characters are lookalikes when their binarised reference renderings differ
#: in at most this many pixels after allowing a one-pixel misalignment.
DEDUPE_PIXELS = 3

_FILL = 0.8  # longer side of the ink box / image side, before jitter
_MAX_ROTATION = 10.0  # degrees
_SCALE_RANGE = (0.85, 1.1)
_MAX_SHIFT = 2.0  # output pixels
_THICKNESS_LEVELS = (-1, 0, 1, 2)  # stroke change per side, in 1/64 of the image side
_MAX_INK_FRACTION = 0.45  # no thickening that would cover more of the image than this
_MIN_CANVAS = 64  # glyphs are drawn on a canvas at least this big, then downscaled
_BLOCK_TO_SCRIPT = {block: script for script, (_, blocks) in SCRIPTS.items() for block in blocks}


# --------------------------------------------------------------------------- public API
def load(
    root: str | os.PathLike | None = None,
    image_size: int = 32,
    instances_per_class: int = 20,
    extra_font_dirs: Sequence[str | os.PathLike] = (),
    cache_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    seed: int = 0,
) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    """Load (building and caching on first use) the glyph dataset's three splits.

    Args:
        root: ignored; the glyphs need no files (accepted for the registry).
        image_size: side ``H = W`` of the square images, at least 8.
        instances_per_class: images per class (fonts cycled with fresh jitter).
        extra_font_dirs: more folders whose ``*.ttf`` / ``*.otf`` fonts are used.
        cache_dir: folder for the cached ``.npz``; default ``$MTL_KERAS_CACHE``,
            else ``~/.cache/mtl_keras``.
        verbose: print build progress and one summary line per split.
        seed: seed of the jitter and of the per-class font order (the class list
            does not depend on it).

    Returns:
        ``(train, val, test)`` in-memory `ClassSplit`s of ``(n, H, W, 1) uint8``
        images, class-disjoint by script (see the module docstring).

    Raises:
        ValueError: ``image_size < 8`` or ``instances_per_class < 1``.
        FileNotFoundError: an ``extra_font_dirs`` entry is not a folder.
        RuntimeError: the fonts give too few classes for one of the splits.
    """
    del root  # the glyphs are rendered, not read
    image_size = int(image_size)
    instances_per_class = int(instances_per_class)
    if image_size < 8:
        raise ValueError(f"{BENCHMARK}: image_size must be at least 8, got {image_size}.")
    if instances_per_class < 1:
        raise ValueError(f"{BENCHMARK}: instances_per_class must be at least 1, got {instances_per_class}.")
    fonts = font_files(extra_font_dirs)
    path = cache_path(fonts, image_size, instances_per_class, seed, cache_dir)
    data = _read_cache(path)
    if data is None:
        if verbose:
            print(f"{BENCHMARK}: building the dataset from {len(fonts)} fonts into '{path}' ...", flush=True)
        start = time.perf_counter()
        data = _build_arrays(fonts, image_size, instances_per_class, seed, verbose)
        _write_cache(path, data)
        if verbose:
            print(f"{BENCHMARK}: built in {time.perf_counter() - start:.1f} s", flush=True)
    elif verbose:
        print(f"{BENCHMARK}: loaded from cache '{path}'", flush=True)
    splits = _to_splits(data)
    if verbose:
        for split in splits:
            print(f"{BENCHMARK} {split.summary()}", flush=True)
    return splits


def font_files(extra_font_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The font files the dataset is rendered from, in a fixed order.

    matplotlib's ``*.ttf`` files sorted by name (minus `EXCLUDED_FONT_PREFIXES`),
    then each extra folder's ``*.ttf`` / ``*.otf`` sorted by name. A file whose
    bytes equal an earlier one's is dropped.

    Raises:
        FileNotFoundError: an extra folder does not exist.
    """
    import matplotlib

    folders = [Path(matplotlib.get_data_path()) / "fonts" / "ttf"]
    for folder in extra_font_dirs:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{BENCHMARK}: extra font folder '{folder}' does not exist or is not a folder."
            )
        folders.append(folder)
    fonts, seen = [], set()
    for folder in folders:
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if path.suffix.lower() not in (".ttf", ".otf") or not path.is_file():
                continue
            if path.name.startswith(EXCLUDED_FONT_PREFIXES):
                continue
            digest = _file_digest(path)
            if digest not in seen:
                seen.add(digest)
                fonts.append(path)
    return fonts


def cache_path(
    fonts: Sequence[Path],
    image_size: int,
    instances_per_class: int,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Where the dataset built from ``fonts`` with these settings is cached."""
    import PIL
    from PIL import features

    key = hashlib.sha256()
    for path in fonts:
        key.update(f"{path.name}|{path.stat().st_size}|{_file_digest(path)}\n".encode())
    key.update(
        f"{image_size}|{instances_per_class}|{seed}|{CODE_VERSION}|{PIL.__version__}|"
        f"{features.version('freetype2')}|{unicodedata.unidata_version}".encode()
    )
    folder = Path(cache_dir or os.environ.get("MTL_KERAS_CACHE") or Path.home() / ".cache" / "mtl_keras")
    name = f"glyphs_{image_size}px_{instances_per_class}x_seed{seed}_{key.hexdigest()[:16]}.npz"
    return folder.expanduser() / name


def script_of(char: str) -> str | None:
    """The `SCRIPTS` entry ``char``'s Unicode block belongs to, or None when unused."""
    from fontTools import unicodedata as ft_unicodedata

    return _BLOCK_TO_SCRIPT.get(ft_unicodedata.block(char))


# --------------------------------------------------------------------------- cache
@functools.cache
def _file_digest_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _file_digest_cached(str(path), stat.st_size, stat.st_mtime_ns)


_CACHE_KEYS = ("images", "labels", "codepoints", "class_split", "class_names", "scripts")


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in _CACHE_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable or from an older layout: rebuild and overwrite


def _write_cache(path: Path, data: dict[str, np.ndarray]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, **data)

    write_atomic(path, write)


def _to_splits(data: dict[str, np.ndarray]) -> tuple[ClassSplit, ClassSplit, ClassSplit]:
    images, labels = data["images"], data["labels"]
    class_split, names = data["class_split"], data["class_names"]
    splits = []
    for s, split_name in enumerate(SPLIT_NAMES):
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


# --------------------------------------------------------------------------- fonts
class _Font:
    """One font file: its usable code points and its PIL fonts, loaded lazily."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        self._pil: dict[int, object] = {}

    def pil(self, size: int):
        font = self._pil.get(size)
        if font is None:
            from PIL import ImageFont

            font = ImageFont.truetype(str(self.path), size, layout_engine=ImageFont.Layout.BASIC)
            self._pil[size] = font
        return font

    def codepoints(self) -> set[int]:
        """Code points the cmap maps to a glyph whose name does not contradict them."""
        from fontTools import agl
        from fontTools.ttLib import TTFont

        with TTFont(str(self.path), lazy=True) as tt:
            cmap = tt.getBestCmap() or {}
        ok = set()
        for cp, glyph_name in cmap.items():
            named = agl.toUnicode(glyph_name)  # "" for names that say nothing ("glyph12")
            legacy = len(named) == 1 and unicodedata.category(named) == "Co"  # e.g. "dotlessj"
            if named and not legacy and not _same_char(named, chr(cp)):
                continue  # e.g. cmr10's "exclamdown" at "<"
            ok.add(cp)
        return ok

    def has_ink(self, char: str) -> bool:
        left, top, right, bottom = self.pil(64).getbbox(char)
        return bottom > top and right > left


def _same_char(a: str, b: str) -> bool:
    return a == b or unicodedata.normalize("NFKC", a) == unicodedata.normalize("NFKC", b)


def _candidate(cp: int) -> str | None:
    """The script of code point ``cp`` if it may become a class, else None."""
    char = chr(cp)
    category = unicodedata.category(char)
    if category[0] not in "LNPS" or unicodedata.decomposition(char):
        return None  # whitespace, control, combining, private use; precomposed forms
    if not unicodedata.name(char, ""):
        return None
    return script_of(char)


# --------------------------------------------------------------------------- rendering
def _render_glyph(
    font: _Font,
    char: str,
    image_size: int,
    rotation: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    thickness: int = 0,
) -> np.ndarray | None:
    """``char`` in ``font`` as an ``(image_size, image_size) uint8`` white-on-black image.

    See `_render_instances`; returns None when the glyph has no ink.
    """
    ss = _supersampling(image_size)
    ink = _glyph_ink(font, char, _FILL * ss * image_size)
    if ink is None:
        return None
    params = np.array([[rotation, scale, shift[0], shift[1], thickness]], dtype=np.float64)
    return _render_instances([ink], np.zeros(1, dtype=np.int64), params, image_size)[0]


def _supersampling(image_size: int) -> int:
    """Factor by which glyphs are drawn larger than ``image_size`` before downscaling."""
    return max(2, math.ceil(_MIN_CANVAS / image_size))


def _glyph_ink(font: _Font, char: str, target: float):
    """``char`` drawn white on black, cropped to its ink, about ``target`` pixels big.

    Drawn at a base size and redrawn bigger (from a short ladder, to keep few PIL
    fonts open) when the ink is small, so that little is upscaled later. Returns a
    PIL ``"L"`` image, or None when the glyph has no ink.
    """
    from PIL import Image, ImageDraw

    base = max(8, round(target / 0.75))
    ink = None
    for factor in (1, 2, 4):
        pil_font = font.pil(base * factor)
        left, top, right, bottom = pil_font.getbbox(char)
        if right <= left or bottom <= top:
            return None
        pad = 4
        img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
        ImageDraw.Draw(img).text((pad - left, pad - top), char, font=pil_font, fill=255)
        box = img.getbbox()
        if box is None:
            return None
        ink = img.crop(box)
        if max(ink.size) >= 0.7 * target:
            break
    return ink


def _render_instances(inks: Sequence, which: np.ndarray, params: np.ndarray, image_size: int) -> np.ndarray:
    """``(n, image_size, image_size) uint8`` jittered renderings of glyph ink images.

    Image ``i`` shows ``inks[which[i]]`` with its ink box centred and its longer
    side scaled to `_FILL` of the image, then rotated by ``params[i, 0]`` degrees,
    scaled by ``params[i, 1]``, shifted by ``params[i, 2:4]`` output pixels (x, y)
    and thickened (thinned when negative) by ``params[i, 4]`` 64ths of the image
    side on each side of every stroke (unless thinning would erase half the ink or thickening would cover
    more than `_MAX_INK_FRACTION` of the image). The scale shrinks if needed so
    that nothing is cut off. Drawn on a canvas `_supersampling` times bigger,
    then area-downscaled.
    """
    from PIL import Image

    ss = _supersampling(image_size)
    canvas = ss * image_size
    target = _FILL * canvas
    n = len(which)
    big = np.empty((n, canvas, canvas), dtype=np.float32)
    for i in range(n):
        ink = inks[which[i]]
        w, h = ink.size
        rotation, scale, dx, dy, thickness = params[i]
        # Forward map: out = centre + shift + s * R(theta) (p - ink centre); PIL wants the inverse.
        theta = math.radians(rotation)
        cos, sin = math.cos(theta), math.sin(theta)
        dx, dy = dx * ss, dy * ss
        margin = ss + _thickness_radius(max(thickness, 0), canvas)
        half_w = 0.5 * (abs(cos) * w + abs(sin) * h)
        half_h = 0.5 * (abs(sin) * w + abs(cos) * h)
        room = min((canvas / 2 - margin - abs(dx)) / half_w, (canvas / 2 - margin - abs(dy)) / half_h)
        inv = 1.0 / min(target / max(w, h) * scale, room)
        cx, cy = canvas / 2 + dx, canvas / 2 + dy
        a, b, d, e = cos * inv, sin * inv, -sin * inv, cos * inv
        coeffs = (a, b, w / 2 - a * cx - b * cy, d, e, h / 2 - d * cx - e * cy)
        placed = ink.transform((canvas, canvas), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        big[i] = np.asarray(placed, dtype=np.float32)

    for level in np.unique(params[:, 4]):
        radius = _thickness_radius(abs(level), canvas)
        if not radius:
            continue
        rows = np.flatnonzero(params[:, 4] == level)
        changed = _rank_filter(big[rows], radius, np.maximum if level > 0 else np.minimum)
        before = np.count_nonzero(big[rows] > 127, axis=(1, 2))
        after = np.count_nonzero(changed > 127, axis=(1, 2))
        if level < 0:  # thinning may erase hairlines: keep it only where most ink survives
            keep = after >= 0.5 * before
        else:  # thickening fills the holes of dense glyphs: skip it for those
            keep = after <= _MAX_INK_FRACTION * canvas * canvas
        rows, changed = rows[keep], changed[keep]
        big[rows] = changed

    small = big.reshape(n, image_size, ss, image_size, ss).mean(axis=(2, 4))
    out = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    faint = np.flatnonzero(out.max(axis=(1, 2)) < 64)
    if len(faint):  # hairlines that area-downscaling washed out: draw them bolder
        bold = _rank_filter(big[faint], ss, np.maximum)
        small = bold.reshape(len(faint), image_size, ss, image_size, ss).mean(axis=(2, 4))
        out[faint] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out


def _thickness_radius(level: float, canvas: int) -> int:
    """Filter radius, in canvas pixels, of a stroke change of ``level`` 64ths of the image."""
    return int(level * canvas / 64 + 0.5)


def _rank_filter(stack: np.ndarray, radius: int, op) -> np.ndarray:
    """Separable square max (dilation) or min (erosion) filter of ``(n, H, W)`` images."""
    fill = 0.0 if op is np.maximum else 255.0
    h, w = stack.shape[1:]
    padded = np.pad(stack, ((0, 0), (radius, radius), (0, 0)), constant_values=fill)
    out = padded[:, :h]
    for k in range(1, 2 * radius + 1):
        out = op(out, padded[:, k : k + h])
    padded = np.pad(out, ((0, 0), (0, 0), (radius, radius)), constant_values=fill)
    out = padded[:, :, :w]
    for k in range(1, 2 * radius + 1):
        out = op(out, padded[:, :, k : k + w])
    return out


# --------------------------------------------------------------------------- class list
def _choose_classes(fonts: list[_Font], verbose: bool) -> list[tuple[int, list[_Font]]]:
    """``(code point, fonts with a glyph)`` of every class, in code-point order."""
    coverage: dict[int, list[_Font]] = {}
    for font in fonts:
        for cp in font.codepoints():
            coverage.setdefault(cp, []).append(font)
    candidates = []
    for cp in sorted(coverage):
        if len(coverage[cp]) < MIN_FONTS or _candidate(cp) is None:
            continue
        char = chr(cp)
        with_ink = [f for f in coverage[cp] if f.has_ink(char)]
        if len(with_ink) >= MIN_FONTS:
            candidates.append((cp, with_ink))
    if verbose:
        print(f"{BENCHMARK}: {len(candidates)} candidate characters, removing lookalikes ...", flush=True)

    refs, kept_candidates = [], []
    for cp, with_ink in candidates:
        ref_font = next((f for f in with_ink if f.name == REFERENCE_FONT), with_ink[0])
        ref = _render_glyph(ref_font, chr(cp), DEDUPE_SIZE)
        if ref is not None:
            refs.append(ref > 127)
            kept_candidates.append((cp, with_ink))
    keep = _dedupe(np.stack(refs))
    return [kept_candidates[i] for i in keep]


def _dedupe(masks: np.ndarray) -> list[int]:
    """Indices of ``(n, H, W) bool`` masks kept after greedy lookalike removal, in order.

    Mask ``i`` is dropped when, for some kept mask ``j``, both ways round at most
    `DEDUPE_PIXELS` pixels fail to find a pixel of the same colour (ink or
    background) within one pixel (3x3 neighbourhood) in the other mask.
    """
    n = len(masks)
    flat = masks.reshape(n, -1).astype(np.float32)
    dil = _dilate(masks).reshape(n, -1).astype(np.float32)
    ero = ~_dilate(~masks)
    ero = ero.reshape(n, -1).astype(np.float32)
    ink = flat.sum(1)
    # miss[i, j]: ink of i with no ink of j nearby + background of i deep inside ink of j.
    miss = (ink[:, None] - flat @ dil.T) + (ero.sum(1)[None, :] - flat @ ero.T)
    miss = np.maximum(miss, miss.T)
    kept: list[int] = []
    for i in range(n):
        if kept and miss[i, kept].min() <= DEDUPE_PIXELS + 0.5:
            continue
        kept.append(i)
    return kept


def _dilate(masks: np.ndarray) -> np.ndarray:
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    h, w = masks.shape[1:]
    out = np.zeros_like(masks)
    for i in range(3):
        for j in range(3):
            out |= padded[:, i : i + h, j : j + w]
    return out


# --------------------------------------------------------------------------- build
def _build_arrays(
    font_paths: Sequence[Path],
    image_size: int,
    instances_per_class: int,
    seed: int,
    verbose: bool,
) -> dict[str, np.ndarray]:
    """Render the whole dataset; the arrays stored in the cache."""
    fonts = [_Font(p) for p in font_paths]
    classes = _choose_classes(fonts, verbose)
    # Order: by split, then by code point; global class ids follow this order.
    split_of = {name: s for s, name in enumerate(SPLIT_NAMES)}
    scripts = [script_of(chr(cp)) for cp, _ in classes]
    order = sorted(range(len(classes)), key=lambda i: (split_of[SCRIPTS[scripts[i]][0]], classes[i][0]))
    classes = [classes[i] for i in order]
    scripts = [scripts[i] for i in order]
    class_split = np.array([split_of[SCRIPTS[s][0]] for s in scripts], dtype=np.int64)
    for s, split_name in enumerate(SPLIT_NAMES):
        if np.count_nonzero(class_split == s) < 2:
            raise RuntimeError(
                f"{BENCHMARK}: the fonts give only {np.count_nonzero(class_split == s)} "
                f"{split_name} classes; check the matplotlib installation's fonts/ttf folder."
            )

    num_classes = len(classes)
    images = np.zeros((num_classes * instances_per_class, image_size, image_size, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes), instances_per_class)
    every = max(1, math.ceil(num_classes / 10))
    for c, (cp, class_fonts) in enumerate(classes):
        images[c * instances_per_class : (c + 1) * instances_per_class, ..., 0] = _render_class(
            cp, class_fonts, image_size, instances_per_class, seed
        )
        if verbose and ((c + 1) % every == 0 or c + 1 == num_classes):
            print(f"{BENCHMARK}:   rendered {c + 1}/{num_classes} classes", flush=True)
    for font in fonts:
        font._pil.clear()  # release the font files
    return {
        "images": images,
        "labels": labels,
        "codepoints": np.array([cp for cp, _ in classes], dtype=np.int64),
        "class_split": class_split,
        "class_names": np.array([f"{unicodedata.name(chr(cp))} (U+{cp:04X})" for cp, _ in classes]),
        "scripts": np.array(scripts),
    }


def _render_class(cp: int, class_fonts: list[_Font], image_size: int, count: int, seed: int) -> np.ndarray:
    """``(count, H, W) uint8``: ``cp`` drawn cycling through ``class_fonts`` with jitter.

    The fonts are cycled in a shuffled order and every image gets its own jitter,
    both drawn from a generator seeded by ``(seed, cp)``.
    """
    rng = np.random.default_rng([seed, cp])
    order = rng.permutation(len(class_fonts))
    params = np.column_stack(
        [
            rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, count),
            rng.uniform(*_SCALE_RANGE, count),
            rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, (count, 2)),
            rng.choice(np.array(_THICKNESS_LEVELS, dtype=np.float64), count),
        ]
    )
    target = _FILL * _supersampling(image_size) * image_size
    inks = []
    for i in order:
        ink = _glyph_ink(class_fonts[i], chr(cp), target)
        if ink is not None:
            inks.append(ink)
            if len(inks) == count:
                break
    if not inks:
        raise RuntimeError(f"{BENCHMARK}: U+{cp:04X} has no ink in any of its fonts.")
    which = np.arange(count) % len(inks)
    return _render_instances(inks, which, params, image_size)
