"""Build few-shot development image sets from files that Debian packages ship.

    python benchmarks/devsets/build.py                          # all sets, into ~/.cache/mtl_keras/devsets
    python benchmarks/devsets/build.py --sets clipart --size 32 --out /tmp/devsets
    python benchmarks/devsets/build.py --sets cards --force     # rebuild a set already there

Each set is written as ``OUT/<set>/{train,val,test}/<class>/<image>.png``, the tree that
``mtl_keras.load_benchmark("folders", root=OUT/<set>)`` reads: ``size`` × ``size`` RGB PNGs,
transparency composited onto one light grey, aspect ratio kept by padding to a square. The
sets exist to tune and debug on data other than the held-out checks, so nothing is committed:
this script fetches its sources on demand (cached in ``OUT/.downloads``) and rebuilds the same
sets from the same package versions (fixed seed; the versions are recorded in each set's
``.devset.json``).

* ``clipart``: OpenClipArt drawings (Debian ``openclipart-png``, public domain); a class is the
  images filed directly in one category folder, e.g. ``animals/birds``.
* ``crawl_tiles``: Dungeon Crawl Stone Soup's 32×32 tiles (the ``rltiles`` folder of source
  package ``crawl``; CC0); a class is the tiles filed directly in one folder, e.g.
  ``mon/undead/zombies``.
* ``cards``: KDE's 16 SVG card decks (``kdegames-card-data-kf5``); a class is one of the 52
  cards, an instance that card in one deck (rendered with ``rsvg-convert``).

Icon themes, emoji fonts and Battle for Wesnoth's images are never used: they are kept for
checks that nobody tunes on. Classes are split 60/20/20 % into train/val/test (at least 10
classes in val and in test), after shuffling with the seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from PIL import Image, ImageChops

SETS = ("clipart", "crawl_tiles", "cards")
DEFAULT_OUT = Path("~/.cache/mtl_keras/devsets").expanduser()
FORMAT = (
    1  # bump when the selection or rendering rules change (a set built by an older rule then needs --force)
)
BACKGROUND = (232, 232, 232)  # neutral light grey: white drawings and white cards keep their outline
MAX_PER_CLASS = 60  # a few huge folders (OpenClipArt's shapes/stars: 1378) would dominate a set
MIN_PER_CLASS = 10  # distinct images; 5-shot + 5 queries fit in every class
MIN_EVAL_CLASSES = 10  # per val and test split: room for 5-way episodes
MAX_SOURCE_PIXELS = 50_000_000  # a dozen OpenClipArt posters of 100-600 megapixels would need GBs to decode
SPLITS = ("train", "val", "test")
MANIFEST = ".devset.json"  # hidden: the folders loader skips it


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One source image of a class: ``stem`` names the output file, ``load`` returns it as RGBA."""

    stem: str
    load: Callable[[], Image.Image]


@dataclasses.dataclass
class Source:
    """What a set is made of: its classes' candidates and how to render them."""

    classes: dict[str, list[Candidate]]
    pixel_art: bool  # upscale with nearest neighbour, keep the tile's own framing
    crop: bool  # crop fully transparent borders before padding (drawings, cards)
    info: dict  # package versions and the like, for the manifest


# ---------------------------------------------------------------------------------------------
# Fetching


def _apt_download(package: str, cache: Path) -> tuple[Path, str]:
    """Download ``package``'s .deb into ``cache`` (once) with ``apt-get download``; return (path, version)."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        try:
            subprocess.run(
                ["apt-get", "download", package], cwd=cache, check=True, capture_output=True, text=True
            )
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or err
            raise RuntimeError(
                f"`apt-get download {package}` failed ({detail}); on Debian run `apt-get update` first"
            ) from err
        debs = sorted(cache.glob(f"{package}_*.deb"))
    version = subprocess.run(
        ["dpkg-deb", "-f", str(debs[-1]), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return debs[-1], version


def _extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack a .deb's files into ``dest`` (``dpkg-deb -x``) and return ``dest``."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest


def _fetch(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` unless it is there (written to a temporary name, then renamed)."""
    if not dest.exists():
        tmp = dest.with_suffix(dest.suffix + ".part")
        with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        tmp.replace(dest)
    return dest


def _source_tarball(binary: str, source: str, cache: Path) -> tuple[Path, str]:
    """Download source package ``source``'s upstream tarball from the Debian mirror that apt uses.

    The mirror's pool folder is taken from ``apt-get download --print-uris`` of one of the
    package's binaries (no host is written here); the tarball's name and SHA-256 come from the
    package's .dsc, and the download is checked against it. Returns (tarball, Debian version).
    """
    cache.mkdir(parents=True, exist_ok=True)
    printed = subprocess.run(
        ["apt-get", "download", "--print-uris", binary], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"'([^']+)/" + re.escape(binary) + r"_([^_']+)_[^']+\.deb'", printed)
    if not match:
        raise RuntimeError(f"apt does not know {binary}: run `apt-get update` first ({printed!r})")
    pool, version = match.group(1), urllib.parse.unquote(match.group(2))  # version without epoch
    dsc = _fetch(f"{pool}/{source}_{version}.dsc", cache / f"{source}_{version}.dsc").read_text()
    checksums = dsc.split("Checksums-Sha256:", 1)[1]
    sha256, name = re.search(r"^ ([0-9a-f]{64}) \d+ (\S+\.orig\.tar\.\w+)$", checksums, re.M).groups()
    tarball = _fetch(f"{pool}/{name}", cache / name)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != sha256:
        tarball.unlink()
        raise RuntimeError(f"{name}: SHA-256 {digest} is not the .dsc's {sha256}; removed, run again")
    return tarball, version


# ---------------------------------------------------------------------------------------------
# Selecting classes from folder trees


def _folder_classes(
    files: dict[str, Callable[[], Image.Image]], classify: Callable[[str], str | None]
) -> dict:
    """Group image files by the folder they sit in: ``{"a__b": [Candidate, ...]}``.

    ``files`` maps a relative path (``a/b/c.png``) to a loader. A class is the images filed
    directly in one folder, ``classify(folder)``: the folder itself, another folder it is merged
    into, or None to leave it out. A top-level folder that has sub-folders is skipped (its own
    files are the category's catch-all: OpenClipArt's ``animals/`` holds a padlock and a flag).
    Classes are named by their folder with '/' → '__'.
    """
    parents = {rel.rsplit("/", 1)[0] for rel in files if "/" in rel}
    has_children = {folder.rsplit("/", 1)[0] for folder in parents if "/" in folder}
    classes: dict[str, list[Candidate]] = {}
    for rel in sorted(files):
        folder, _, name = rel.rpartition("/")
        if not folder or ("/" not in folder and folder in has_children):
            continue
        label = classify(folder)
        if label is not None:
            stem = re.sub(r"[^A-Za-z0-9._+-]", "_", name.rsplit(".", 1)[0])
            classes.setdefault(label.replace("/", "__"), []).append(Candidate(stem, files[rel]))
    return classes


def _png_files(root: Path) -> dict[str, Callable[[], Image.Image]]:
    """Every regular ``.png`` under ``root`` by relative path: symbolic links (OpenClipArt files
    one drawing in several folders by links) and hidden files (macOS ``._`` forks) are skipped,
    and so are images larger than `MAX_SOURCE_PIXELS` or whose header does not read."""
    files = {}
    for path in sorted(root.rglob("*.png")):
        if path.is_symlink() or not path.is_file() or path.name.startswith("."):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    pixels = im.width * im.height
        except (OSError, Image.DecompressionBombError):
            continue
        if pixels <= MAX_SOURCE_PIXELS:
            files[path.relative_to(root).as_posix()] = lambda path=path: _read(path)
    return files


def _read(path: Path) -> Image.Image:
    """Decode an image file and close it."""
    with Image.open(path) as im:
        im.load()
    return im


_CLIPART_EXCLUDED = (
    "computer",  # cursors, windows, warning signs: icon-like UI pictograms
    "computer/folders",  # folder icons
    "signs_and_symbols/led",  # glossy UI lamps, button-like
    "special/gradients",  # plain colour fills
    "unsorted",  # no category
)
_FLAGS = "signs_and_symbols/flags"


def _clipart_class(folder: str) -> str | None:
    """The class of an OpenClipArt folder's images, or None for icons, emoji-like pictures, UI
    widgets and folders that are no category of objects. Flags are one class: the flags of Asia
    and of Africa (a folder each) are not told apart by their looks; semaphore stays apart."""
    lowered = folder.lower()
    if any(word in lowered for word in ("icon", "emoji", "smil", "button")):
        return None  # icon themes (computer/icons/*), smileys (people/smilies), UI buttons
    if folder in _CLIPART_EXCLUDED or folder.startswith("recreation/games/cards"):
        return None  # (cards: the cards set's subject; two OpenClipArt decks are KDE decks too)
    if folder.startswith(_FLAGS + "/") and folder != _FLAGS + "/semaphore":
        return _FLAGS
    return folder


def _load_clipart(work: Path) -> Source:
    deb, version = _apt_download("openclipart-png", work.parent)
    root = _extract_deb(deb, work / "openclipart") / "usr/share/openclipart/png"
    classes = _folder_classes(_png_files(root), _clipart_class)
    info = {"package": f"openclipart-png {version}", "license": "public domain"}
    return Source(classes, pixel_art=False, crop=True, info=info)


# Dungeon Crawl folders left out, with why. The rest are creatures, items and dungeon features.
_CRAWL_EXCLUDED = {
    "UNUSED": "unused tiles, many older versions of used ones (near-duplicates across classes)",
    "effect": "spell effects, beams and clouds",
    "gui": "interface icons (abilities, spells, skills, commands)",
    "misc": "interface markers, blood splatters, digits",
    "dngn/water": "edge and transition pieces of water",
    "mon/tentacles": "tentacle segments and ends, one shape set in five colourings",
    "mon/panlord": "heads, wings and bodies that the game composes into monsters",
    "player": "paper-doll layers (hair, beards, boots, ...), a few pixels each",
}
_CRAWL_PLAYER_KEPT = ("player/base", "player/felids", "player/transform")  # whole figures


def _crawl_class(folder: str) -> str | None:
    """The class of a Crawl tile folder's tiles (the folder), or None where `_CRAWL_EXCLUDED` says."""
    if folder in _CRAWL_PLAYER_KEPT:
        return folder
    if folder.rsplit("/", 1)[-1] == "brands":  # item/*/brands: small overlay glyphs in a corner
        return None
    excluded = any(folder == prefix or folder.startswith(prefix + "/") for prefix in _CRAWL_EXCLUDED)
    return None if excluded else folder


_CRAWL_KEY = (71, 108, 108)  # the colour rltiles' tool turns transparent (tile_colour::background)


def _crawl_image(data: bytes) -> Image.Image:
    """A tile as RGBA with the rltiles background colour made transparent, as the game does."""
    im = Image.open(io.BytesIO(data)).convert("RGBA")
    r, g, b, a = im.split()
    key = ImageChops.multiply(
        ImageChops.multiply(
            r.point(lambda v: 255 * (v == _CRAWL_KEY[0])), g.point(lambda v: 255 * (v == _CRAWL_KEY[1]))
        ),
        b.point(lambda v: 255 * (v == _CRAWL_KEY[2])),
    )
    im.putalpha(ImageChops.subtract(a, key))
    return im


def _load_crawl_tiles(work: Path) -> Source:
    tarball, version = _source_tarball("crawl-common", "crawl", work.parent)
    files = {}
    with tarfile.open(tarball) as tar:
        for member in tar:
            _, found, rel = member.name.partition("/source/rltiles/")
            name = rel.rsplit("/", 1)[-1]
            if found and member.isfile() and rel.endswith(".png") and not name.startswith("."):
                data = tar.extractfile(member).read()
                files[rel] = lambda data=data: _crawl_image(data)
    classes = _folder_classes(files, _crawl_class)
    info = {"package": f"crawl {version} (source, rltiles/)", "license": "mostly CC0 (its LICENSE file)"}
    return Source(classes, pixel_art=True, crop=False, info=info)


# ---------------------------------------------------------------------------------------------
# Cards: one element per card in each deck's SVG, rendered with rsvg-convert


_RANKS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "jack", "queen", "king")  # "1": the ace
_CARDS = tuple(f"{rank}_{suit}" for suit in ("club", "diamond", "heart", "spade") for rank in _RANKS)


class _Deck:
    """One SVG deck, re-wrapped so that a single card can be drawn in a chosen view box.

    ``rsvg-convert --export-id`` frames an element by its ink extents, which librsvg 2.54 gets
    wrong for the cards built from ``<use>`` (Paris: the card lands cut off in a corner). Instead
    the whole document goes into ``<defs>``, one ``<use>`` of the card is drawn (inside its
    ancestors' transforms), and the card is found by rendering: first a coarse view around the
    page, then a fine one of the card's pixels, cropped to what is drawn.
    """

    def __init__(self, path: Path):
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
        tree = ET.fromstring(text)
        self.page = self._page_box(tree)
        parent = {child: node for node in tree.iter() for child in node}
        self.chains = {}  # card id -> its ancestors' transforms, outermost first
        for element in tree.iter():
            if element.get("id") in _CARDS:
                chain, node = [], parent.get(element)
                while node is not None and node is not tree:
                    chain.append(node.get("transform"))
                    node = parent.get(node)
                self.chains[element.get("id")] = [t for t in reversed(chain) if t]
        start = re.search(r"<svg\b[^>]*>", text)
        end = text.rindex("</svg")
        head = re.sub(
            r"""\s(?:width|height|viewBox|preserveAspectRatio)\s*=\s*(["']).*?\1""", "", start.group(0)
        )
        self.head = text[: start.start()] + head[:-1] + ' viewBox="{viewbox}">' + "<defs>"
        self.body = text[start.end() : end] + "</defs>"

    @staticmethod
    def _page_box(tree: ET.Element) -> tuple[float, float, float, float]:
        """The document's view box, or (0, 0, width, height) without one (units ignored: a search window)."""
        if tree.get("viewBox"):
            x, y, w, h = (float(v) for v in re.split(r"[\s,]+", tree.get("viewBox").strip()))
            return x, y, w, h

        def number(value):
            return float(re.match(r"[\d.]+", value or "1000").group(0))

        return 0.0, 0.0, number(tree.get("width")), number(tree.get("height"))

    def _render(self, card: str, box: Sequence[float], pixels: int) -> Image.Image:
        markup = f'<use xlink:href="#{card}"/>'
        for transform in reversed(self.chains[card]):
            markup = f"<g transform={quoteattr(transform)}>{markup}</g>"
        viewbox = " ".join(f"{v:.6g}" for v in box)
        doc = self.head.format(viewbox=viewbox) + self.body + markup + "</svg>"
        png = subprocess.run(
            ["rsvg-convert", "-w", str(pixels), "-h", str(pixels), "--keep-aspect-ratio"],
            input=doc.encode("utf-8"),
            check=True,
            capture_output=True,
        ).stdout
        return Image.open(io.BytesIO(png)).convert("RGBA")

    def card(self, card: str, pixels: int) -> Image.Image:
        """``card`` drawn with about ``pixels`` pixels along its longer side, cropped to its ink."""
        x, y, w, h = self.page
        for reach in (3, 30):  # cards may sit outside the page; look around it
            box = (x - reach * w, y - reach * h, (2 * reach + 1) * w, (2 * reach + 1) * h)
            coarse = self._render(card, box, 2048)
            found = coarse.getchannel("A").getbbox()
            if found:
                break
        else:
            raise ValueError(f"{card}: nothing drawn")
        scale = max(box[2] / coarse.width, box[3] / coarse.height)  # user units per pixel
        x0, y0, x1, y1 = found
        fine = (
            box[0] + (x0 - 2) * scale,
            box[1] + (y0 - 2) * scale,
            (x1 - x0 + 4) * scale,
            (y1 - y0 + 4) * scale,
        )
        image = self._render(card, fine, pixels)
        return image.crop(image.getchannel("A").getbbox())


def _load_cards(work: Path, size: int) -> Source:
    if shutil.which("rsvg-convert") is None:
        raise RuntimeError("the cards set needs rsvg-convert: `apt-get install librsvg2-bin`")
    deb, version = _apt_download("kdegames-card-data-kf5", work.parent)
    root = _extract_deb(deb, work / "cards") / "usr/share/carddecks"
    decks = {}
    for folder in sorted(root.glob("svg-*")):
        svgs = sorted(folder.glob("*.svg")) + sorted(folder.glob("*.svgz"))
        if svgs:
            decks[folder.name.removeprefix("svg-")] = svgs[0]
    opened: dict[str, _Deck] = {}

    def load(deck: str, card: str) -> Image.Image:
        if deck not in opened:
            opened[deck] = _Deck(decks[deck])
        return opened[deck].card(card, 4 * size)

    classes = {
        card: [Candidate(deck, lambda deck=deck, card=card: load(deck, card)) for deck in decks]
        for card in _CARDS
    }
    info = {
        "package": f"kdegames-card-data-kf5 {version}",
        "license": "GPL-2+, LGPL-2, GPL-3+ or an Expat-like licence, per deck (the package's copyright file)",
        "decks": list(decks),
    }
    return Source(classes, pixel_art=False, crop=True, info=info)


# ---------------------------------------------------------------------------------------------
# Rendering and writing


def _square(im: Image.Image, size: int, pixel_art: bool, crop: bool) -> Image.Image:
    """RGBA → ``size`` × ``size`` RGB on `BACKGROUND`, aspect ratio kept (padded to a square)."""
    im = im.convert("RGBA")
    if crop:
        box = im.getchannel("A").getbbox()
        if box is None:
            raise ValueError("fully transparent")
        im = im.crop(box)
    side = max(im.size)
    canvas = Image.new("RGBA", (side, side), BACKGROUND + (255,))
    canvas.alpha_composite(im, ((side - im.width) // 2, (side - im.height) // 2))
    canvas = canvas.convert("RGB")
    upscale_pixels = pixel_art and side <= size
    return canvas.resize((size, size), Image.NEAREST if upscale_pixels else Image.LANCZOS, reducing_gap=None)


def _write_classes(source: Source, dest: Path, size: int, seed: int) -> dict:
    """Render every class's chosen images into ``dest/<split>/<class>/`` and return the manifest's counts.

    Per class, the candidates are shuffled (seeded by the seed and the class name) and taken in
    that order until `MAX_PER_CLASS` are written; an image whose rendering equals one already
    written (in any class, classes in name order) is skipped, so no picture is in two classes.
    Folders with fewer than `MIN_PER_CLASS` candidates are not classes; classes left with fewer
    than `MIN_PER_CLASS` distinct images are dropped (reported). The rest are shuffled with
    the seed and split 60/20/20 % (at least `MIN_EVAL_CLASSES` in val and in test).
    """
    staging = dest / "_all"
    seen: set[bytes] = set()
    counts, dropped, failed = {}, {}, 0
    small = sum(len(candidates) < MIN_PER_CLASS for candidates in source.classes.values())
    for name in sorted(source.classes):
        candidates = list(source.classes[name])
        if len(candidates) < MIN_PER_CLASS:
            continue
        random.Random(f"{seed}:{name}").shuffle(candidates)
        written, names = 0, set()
        for candidate in candidates:
            if written == MAX_PER_CLASS:
                break
            try:
                image = _square(candidate.load(), size, source.pixel_art, source.crop)
            except (OSError, ValueError, subprocess.CalledProcessError):
                failed += 1
                continue
            digest = hashlib.sha1(image.tobytes()).digest()
            if digest in seen:
                continue
            seen.add(digest)
            stem, k = candidate.stem, 1
            while stem in names:
                stem, k = f"{candidate.stem}_{k}", k + 1
            names.add(stem)
            (staging / name).mkdir(parents=True, exist_ok=True)
            image.save(staging / name / f"{stem}.png", optimize=False)
            written += 1
        if written >= MIN_PER_CLASS:
            counts[name] = written
        else:
            dropped[name] = written
            shutil.rmtree(staging / name, ignore_errors=True)
    kept = sorted(counts)
    n_eval = max(MIN_EVAL_CLASSES, round(0.2 * len(kept)))
    if len(kept) < 2 * n_eval + 5:
        raise RuntimeError(f"only {len(kept)} classes: too few for train/val/test")
    random.Random(seed).shuffle(kept)
    splits = {"val": kept[:n_eval], "test": kept[n_eval : 2 * n_eval], "train": kept[2 * n_eval :]}
    for split, names in splits.items():
        (dest / split).mkdir()
        for name in sorted(names):
            (staging / name).rename(dest / split / name)
    staging.rmdir()
    return {
        "splits": {split: {name: counts[name] for name in sorted(splits[split])} for split in SPLITS},
        "dropped": dropped,
        "small_folders": small,
        "unreadable": failed,
    }


def _summary(name: str, path: Path, manifest: dict, note: str) -> str:
    """The printed summary of a set: classes and images per split, images per class."""
    lines = [f"[{name}] {path}  ({note})", "  split  classes  images  per class min / median / max"]
    everything = []
    for split in SPLITS:
        per_class = list(manifest["splits"][split].values())
        everything += per_class
        lines.append(
            f"  {split:<5}  {len(per_class):7d}  {sum(per_class):6d}  "
            f"{min(per_class)} / {statistics.median(per_class):g} / {max(per_class)}"
        )
    lines.append(
        f"  total  {len(everything):7d}  {sum(everything):6d}  "
        f"{min(everything)} / {statistics.median(everything):g} / {max(everything)}"
    )
    dropped = manifest["dropped"]
    if dropped:
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items()))
        lines.append(f"  dropped {len(dropped)} classes with < {MIN_PER_CLASS} distinct images: {listed}")
    if manifest["small_folders"]:
        lines.append(f"  {manifest['small_folders']} folders with < {MIN_PER_CLASS} images are not classes")
    if manifest["unreadable"]:
        lines.append(f"  {manifest['unreadable']} source images unreadable or blank, skipped")
    lines.append(
        f"  source: {manifest['source']['package']}; size {manifest['size']}, seed {manifest['seed']}"
    )
    return "\n".join(lines)


def build(
    name: str, out_dir: str | os.PathLike = DEFAULT_OUT, size: int = 64, seed: int = 0, force: bool = False
) -> Path:
    """Build dev set ``name`` into ``out_dir/name`` (skipped if already built alike) and return its path.

    Prints the set's summary. A set built with another ``size``, ``seed`` or rule version is an
    error unless ``force`` (which rebuilds it). The set is assembled in a hidden folder beside it
    and renamed into place when complete, so an interrupted build leaves nothing half-made.
    """
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; sets: {', '.join(SETS)}")
    out_dir = Path(out_dir).expanduser()
    target = out_dir / name
    wanted = {"set": name, "size": size, "seed": seed, "format": FORMAT}
    if target.exists() and not (target / MANIFEST).exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not a set this script built ({MANIFEST} missing): not touched")
    if (target / MANIFEST).exists() and not force:
        manifest = json.loads((target / MANIFEST).read_text())
        if {k: manifest.get(k) for k in wanted} != wanted:
            built = {k: manifest.get(k) for k in wanted}
            raise FileExistsError(f"{target} was built with {built}; pass --force (force=True) to rebuild")
        print(_summary(name, target, manifest, "already built: skipped"), flush=True)
        return target
    downloads = out_dir / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(dir=downloads) as work:
            loader = {"clipart": _load_clipart, "crawl_tiles": _load_crawl_tiles}.get(name)
            source = loader(Path(work)) if loader else _load_cards(Path(work), size)
            manifest = {**wanted, "source": source.info, **_write_classes(source, partial, size, seed)}
        manifest["build_seconds"] = round(time.perf_counter() - started, 1)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(_summary(name, target, manifest, f"built in {manifest['build_seconds']:.0f} s"), flush=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the sets asked for; exit status 1 if any failed."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--sets", nargs="+", choices=SETS, default=list(SETS), help="sets to build (default: all)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild sets that are already there")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the image and class choices (default: 0)"
    )
    args = parser.parse_args(argv)
    status = 0
    for name in args.sets:
        try:
            build(name, args.out, size=args.size, seed=args.seed, force=args.force)
        except (RuntimeError, FileExistsError, OSError, subprocess.CalledProcessError) as err:
            print(f"[{name}] failed: {err}", file=sys.stderr, flush=True)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
