"""The import map of mtl_keras and mtl_keras_app: rooms, arrows, circles, and arrows against the cut.

    python scripts/import_graph.py            # a summary: rooms, arrows, circles, wrong-way arrows
    python scripts/import_graph.py --edges    # every module-to-module arrow

Read from the source with `ast` (nothing is imported), every ``import`` counted, including
those inside functions. A *room* is a package folder (``mtl_keras.data``, ``mtl_keras_app``...);
an *arrow* is one module importing another; a *circle* is a set of modules that reach each
other through arrows (a strongly connected component of more than one module). A package's
``__init__`` only gathers names, so arrows *into* an ``__init__`` count as arrows to the
module that defines the name where that module can be told from the import.
``tests/unit/test_import_graph.py`` checks that there is no circle and no arrow from the
library to the application.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mtl_keras", "mtl_keras_app")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` under the two packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_package(name: str, found: dict[str, Path]) -> bool:
    return name in found and found[name].name == "__init__.py"


def _defining_module(package: str, name: str, found: dict[str, Path]) -> str:
    """Where ``from package import name`` takes ``name`` from: a submodule, the module that
    ``package/__init__.py`` imports it from, or the package itself."""
    if f"{package}.{name}" in found:
        return f"{package}.{name}"
    tree = ast.parse(found[package].read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if any((a.asname or a.name) == name for a in node.names) and node.module in found:
                if _is_package(node.module, found):
                    return _defining_module(node.module, name, found)
                return node.module
    return package


def arrows(found: dict[str, Path] | None = None) -> set[tuple[str, str]]:
    """(importer, imported) pairs between the two packages' modules (``__init__`` re-exports resolved)."""
    found = modules() if found is None else found
    edges = set()
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in found and _is_package(node.module, found):
                    targets = [_defining_module(node.module, a.name, found) for a in node.names]
                else:
                    targets = [node.module]
            for target in targets:
                while target and target not in found:
                    target = target.rpartition(".")[0]
                if (
                    target
                    and target != name
                    and not (_is_package(name, found) and target.startswith(name + "."))
                ):
                    edges.add((name, target))
    return edges


def circles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return sorted(result)


def room(module: str, found: dict[str, Path]) -> str:
    """The package folder a module lives in."""
    return module if _is_package(module, found) else module.rpartition(".")[0]


def wrong_way(edges: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Arrows from the library (``mtl_keras``) to the application (``mtl_keras_app``)."""
    return sorted(
        (a, b) for a, b in edges if a.split(".")[0] == "mtl_keras" and b.split(".")[0] == "mtl_keras_app"
    )


def summary(found: dict[str, Path] | None = None) -> dict:
    """Counts: modules, rooms, arrows, arrows between rooms, circles, wrong-way arrows."""
    found = modules() if found is None else found
    edges = arrows(found)
    between = {(room(a, found), room(b, found)) for a, b in edges if room(a, found) != room(b, found)}
    return {
        "modules": len(found),
        "rooms": len({room(m, found) for m in found}),
        "arrows": len(edges),
        "arrows_between_rooms": len(between),
        "circles": circles(edges),
        "library_to_app": wrong_way(edges),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every arrow")
    args = parser.parse_args(argv)
    found = modules()
    if args.edges:
        for a, b in sorted(arrows(found)):
            print(f"{a} -> {b}")
        return 0
    info = summary(found)
    for key in ("modules", "rooms", "arrows", "arrows_between_rooms"):
        print(f"{key}: {info[key]}")
    print(f"circles: {len(info['circles'])}")
    for component in info["circles"]:
        print("  " + " <-> ".join(component))
    print(f"library -> application arrows: {len(info['library_to_app'])}")
    for a, b in info["library_to_app"]:
        print(f"  {a} -> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
