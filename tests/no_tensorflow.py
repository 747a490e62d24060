"""A process where ``import tensorflow`` fails as where TensorFlow is not installed (a JAX-only GPU machine).

`block` puts a meta-path finder first that raises `ModuleNotFoundError` for ``tensorflow`` and its
submodules, so ``"tensorflow"`` never enters ``sys.modules``. (``sys.modules["tensorflow"] = None``
also makes the import fail, but leaves an entry that a machine without TensorFlow does not have:
Keras's preprocessing layers read it and then ask for TensorFlow.) ``benchmarks/gpu_check.py`` has
the same finder, standalone, for the GPU machine.

Tests that start a Python process without TensorFlow begin its script with `PRELUDE`
(self-contained: it needs nothing on ``PYTHONPATH``).
"""

from __future__ import annotations

import inspect
import sys


class NoTensorFlow:
    """A meta-path finder that finds no ``tensorflow``."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def block() -> None:
    """Make ``import tensorflow`` fail in this process from now on (TensorFlow not yet imported)."""
    loaded = tensorflow_modules()
    if loaded:
        raise RuntimeError(f"TensorFlow is already imported here ({loaded[:3]}): block it first")
    if not any(isinstance(finder, NoTensorFlow) for finder in sys.meta_path):
        sys.meta_path.insert(0, NoTensorFlow())


def unblock() -> None:
    """Let ``import tensorflow`` find an installed TensorFlow again."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, NoTensorFlow)]


def tensorflow_modules() -> list[str]:
    """The TensorFlow modules imported in this process (empty where it was kept out)."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if (name == "tensorflow" or name.startswith("tensorflow.")) and module is not None
    )


#: The first lines of a ``python -c`` script that must run without TensorFlow: `NoTensorFlow`'s
#: source and its installation.
PRELUDE = "import sys\n" + inspect.getsource(NoTensorFlow) + "sys.meta_path.insert(0, NoTensorFlow())\n"
