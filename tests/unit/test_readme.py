"""The README is a user's guide: short, and free of lab-notebook lines (commit hashes, dates, issue
numbers, CPU models); results and their history live in benchmarks/. The same holds for docstrings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = {
    "commit hash": re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b"),
    "date": re.compile(r"\b20\d\d-\d\d-\d\d\b|\b20\d{6}-\d{6}\b"),
    "issue number": re.compile(r"\bissues? #?\d+", re.I),
    "CPU model": re.compile(r"\b(EPYC|Xeon|Zen \d|Ryzen|Core i\d)\b"),
}


def notebook_lines(text: str) -> list[str]:
    """The lines of ``text`` that name a commit, a date, an issue or a CPU model."""
    return [
        f"{kind}: {line.strip()}"
        for line in text.splitlines()
        for kind, pattern in NOTEBOOK.items()
        if pattern.search(line)
    ]


def test_the_checks_find_what_they_look_for():
    assert len(notebook_lines("commit 4b1eaba\n2026-12-07\nissue 30\non an AMD EPYC\nplain")) == 4
    assert notebook_lines("ResNet-12 at 84×84, widths 64-128-256-512, 600 episodes, float32") == []


def test_the_readme_is_a_short_users_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert notebook_lines(text) == []
    for heading in (
        "## Install",
        "## The two commands",
        "## Quick start in Python",
        "## Command line",
        "## Results",
    ):
        assert heading in text


def test_docstrings_carry_no_lab_notebook():
    found = []
    for package in ("mtl_keras", "mtl_keras_app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        found += [f"{path.relative_to(ROOT)}: {line}" for line in notebook_lines(doc)]
    assert found == []
