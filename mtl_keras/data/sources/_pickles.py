"""Reading the Python pickles some benchmarks ship (CIFAR-100, tieredImageNet), safely.

Unpickling a file can run arbitrary code, so the loaders refuse pickles unless the
caller opts in (``allow_pickle=True``), and even then `read_numpy_pickle` resolves
only the NumPy array constructors these files need: a pickle naming any other
global (``os.system``, ``collections.OrderedDict``, ...) is rejected.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

# Globals a benchmark pickle may reference: NumPy's array reconstruction only.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only NumPy's array constructors (and ``_codecs.encode``).

    Args:
        file: binary file object.
        what: what the file should be (e.g. ``"CIFAR-100"``), used in the error message.
        **kwargs: passed to `pickle.Unpickler` (``encoding="bytes"`` for Python 2 pickles).
    """

    def __init__(self, file, what: str = "benchmark", **kwargs):
        super().__init__(file, **kwargs)
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a {self._what} file")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core.") :]  # NumPy 2 name
        return super().find_class(module, name)


def opt_in_error(benchmark: str, files: str) -> ValueError:
    """The error of a loader called on pickles without ``allow_pickle=True``; ``files`` names them."""
    return ValueError(
        f"{benchmark}: {files} are Python pickles, and unpickling can execute arbitrary code. If you "
        f"trust the files, opt in with allow_pickle=True, e.g. load_benchmark('{benchmark}', root, "
        "allow_pickle=True) (mtl-keras: --allow-pickle)."
    )


def read_numpy_pickle(
    path: Path, benchmark: str, what: str, fix: str, expect: tuple[type | tuple[type, ...], str] | None = None
) -> Any:
    """Unpickle ``path`` with `NumpyOnlyUnpickler` (``encoding="bytes"``, as Python 2 pickles need).

    Args:
        path: the pickle file.
        benchmark: benchmark name, used in messages.
        what: what the file should be, e.g. ``"CIFAR-100"``.
        fix: the sentence that ends the error message, e.g. ``"Re-extract the archive."``.
        expect: ``(type or types, description)`` the unpickled object must be, e.g.
            ``(dict, "the CIFAR-100 dict")``; ``None`` accepts anything.

    Returns:
        The unpickled object. Strings pickled by Python 2 come back as ``bytes``.

    Raises:
        ValueError: the file is not a pickle, is truncated, names a global other than
            NumPy's array constructors, or holds something else than ``expect``; the
            message names the file.
    """
    try:
        with open(path, "rb") as f:
            obj = NumpyOnlyUnpickler(f, what, encoding="bytes").load()
    except Exception as err:
        raise ValueError(
            f"{benchmark}: '{path}' is not a readable {what} pickle ({type(err).__name__}: {err}). {fix}"
        ) from err
    if expect is not None and not isinstance(obj, expect[0]):
        raise ValueError(f"{benchmark}: '{path}' holds a {type(obj).__name__}, not {expect[1]}. {fix}")
    return obj


def field(obj: dict, key: str, path: Path, benchmark: str, fix: str) -> Any:
    """``obj[key]`` of an unpickled dict whose keys may be ``str`` or (Python 2) ``bytes``.

    Raises:
        ValueError: neither key is present; the message names the file and the key.
    """
    for k in (key.encode(), key):
        if k in obj:
            return obj[k]
    raise ValueError(f"{benchmark}: '{path}' has no '{key}' entry. {fix}")


def text(value: Any) -> str:
    """A name read from a pickle as ``str`` (Python 2 strings arrive as UTF-8 or Latin-1 ``bytes``)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    return str(value)
