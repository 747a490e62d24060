"""`make docs` builds the guides and the API reference without a warning, and every relative link
in the README and the docs leads to a file of the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    """The relative link targets of a Markdown file (no URLs, no in-page anchors), without anchors."""
    targets = []
    inside_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside_code = not inside_code
        if inside_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            targets.append(target.split("#", 1)[0])
    return targets


def test_every_relative_link_leads_to_a_file():
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [
        f"{page.relative_to(ROOT)} -> {target}"
        for page in pages
        for target in relative_links(page)
        if not (page.parent / target).exists()
    ]
    assert broken == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](missing.md) [b](https://x.org) [c](#here)\n```\n[d](code.md)\n```\n")
    assert relative_links(page) == ["missing.md"]


def test_the_documentation_builds_without_warnings(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e .[docs])")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    page = (tmp_path / "site" / "api" / "models" / "index.html").read_text()
    assert "mtl_keras.models.MetaTransferModel" in page  # the reference is generated from the code
