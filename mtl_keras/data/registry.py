"""`load_benchmark(name, ...)` and `list_benchmarks()`: one entry per data source.

Each benchmark lives in one module of `mtl_keras.data.sources` exposing
``load(root=None, **kwargs) -> (train, val, test)`` of `ClassSplit`. Modules are
imported lazily, so a benchmark's optional dependencies cost nothing until used.
"""

from __future__ import annotations

import importlib
import inspect
from typing import NamedTuple

from mtl_keras.data.split import ClassSplit

# name -> (module under mtl_keras.data.sources, one-line description)
_BENCHMARKS: dict[str, tuple[str, str]] = {
    "glyphs": ("glyphs", "Characters rendered from the fonts matplotlib ships (embedded, no download)"),
    "glyph_scenes": (
        "glyph_scenes",
        "Characters in cluttered colour scenes, shaped like miniImageNet: 64/16/20 classes, 600 RGB "
        "images each (embedded, no download)",
    ),
    "mini_imagenet": (
        "mini_imagenet",
        "miniImageNet: split CSVs + images/, train/val/test class folders, or the MetaOptNet / "
        "learn2learn pickles; 64/16/20 classes",
    ),
    "tiered_imagenet": (
        "tiered_imagenet",
        "tieredImageNet: train/val/test class folders (Ren et al.'s pickles: `mtl-keras prepare`); "
        "351/97/160 classes",
    ),
    "fc100": ("cifar100", "FC100: CIFAR-100 split by superclass (12/4/4 superclasses, 60/20/20 classes)"),
    "cifar_fs": ("cifar100", "CIFAR-FS: CIFAR-100 split by class (64/16/20 classes)"),
    "omniglot": ("omniglot", "Omniglot: images_background/ and images_evaluation/ alphabet folders"),
    "folders": ("folders", "Any root/{train,val,test}/<class>/<image> tree"),
}


class Benchmark(NamedTuple):
    """The three class-disjoint splits of a benchmark."""

    train: ClassSplit
    val: ClassSplit
    test: ClassSplit


def list_benchmarks() -> dict[str, str]:
    """Names of the benchmarks `load_benchmark` knows, with a one-line description."""
    return {name: desc for name, (_, desc) in _BENCHMARKS.items()}


def load_benchmark(name: str, root: str | None = None, **kwargs) -> Benchmark:
    """Load a benchmark's ``(train, val, test)`` class splits.

    Args:
        name: one of `list_benchmarks()`.
        root: folder holding the benchmark's files (not needed for ``"glyphs"``).
        **kwargs: passed to the source's ``load`` (e.g. ``image_size``). ``allow_pickle`` is
            accepted for every benchmark and dropped for those whose files are not pickles.

    Returns:
        `Benchmark(train, val, test)`, each a `ClassSplit`.

    Example:
        >>> train, val, test = load_benchmark("glyphs")
    """
    if name not in _BENCHMARKS:
        raise ValueError(f"Unknown benchmark '{name}'. Known: {', '.join(sorted(_BENCHMARKS))}.")
    module_name, _ = _BENCHMARKS[name]
    module = importlib.import_module(f"mtl_keras.data.sources.{module_name}")
    if module_name == "cifar100":
        kwargs["variant"] = name
    parameters = inspect.signature(module.load).parameters
    if "allow_pickle" in kwargs and "allow_pickle" not in parameters:
        kwargs.pop("allow_pickle")
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        option = {"verify": "verify", "unreadable": "skip_unreadable"}
        names = ", ".join(f"{k} (--set {option.get(k, k)}=...)" if k in option else k for k in unknown)
        raise ValueError(
            f"{name}: this benchmark takes no {names}: its images are not files checked at load. Leave it out."
        )
    splits = module.load(root=root, **kwargs)
    return Benchmark(*splits)
