"""The package map holds: no import circle, the library never imports the application, and no
public name hides a module of the same name (`scripts/import_graph.py` draws the map)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import import_graph  # noqa: E402


def test_there_is_no_import_circle():
    assert import_graph.circles(import_graph.arrows()) == []


def test_the_library_never_imports_the_application():
    edges = import_graph.arrows()
    assert any(
        a.startswith("mtl_keras_app") and b.startswith("mtl_keras.") for a, b in edges
    )  # the map is read
    assert import_graph.wrong_way(edges) == []


def test_the_circle_finder_finds_a_circle():
    assert import_graph.circles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert import_graph.wrong_way({("mtl_keras.x", "mtl_keras_app.y")}) == [
        ("mtl_keras.x", "mtl_keras_app.y")
    ]


@pytest.mark.parametrize(
    "package",
    [
        "mtl_keras",
        "mtl_keras.backbones",
        "mtl_keras.callbacks",
        "mtl_keras.data",
        "mtl_keras.layers",
        "mtl_keras.models",
    ],
)
def test_no_public_name_hides_a_module(package):
    module = importlib.import_module(package)
    hidden = []
    for info in pkgutil.iter_modules(module.__path__):
        value = getattr(module, info.name, None)
        if (
            value is not None
            and not hasattr(value, "__path__")
            and getattr(value, "__name__", "") != (f"{package}.{info.name}")
        ):
            hidden.append(info.name)
    assert hidden == []


def test_backend_packages_import_only_the_librarys_leaves():
    """One convention for backend code: ``tensorflow_backend/`` and ``jax_backend/`` hold it and
    import nothing from the layers, backbones, models, data, evaluation or callbacks they serve."""
    served = ("layers", "backbones", "models", "data", "evaluation", "callbacks", "export")

    def room(module):
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""

    upward = [
        (a, b)
        for a, b in import_graph.arrows()
        if room(a) in ("tensorflow_backend", "jax_backend") and room(b) in served
    ]
    assert upward == []
