"""docs/errors.md is the fault table: every row names a test, and every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
DEFINED = {
    match
    for path in (ROOT / "tests").rglob("test_*.py")
    for match in re.findall(r"^\s*def (test_\w+)", path.read_text(encoding="utf-8"), re.M)
}


def test_every_test_the_table_names_exists():
    files = set(re.findall(r"(tests/[\w/]+\.py)", TABLE))
    assert files and all((ROOT / f).is_file() for f in files), sorted(
        f for f in files if not (ROOT / f).is_file()
    )
    names = set(re.findall(r"::(test_\w+)", TABLE)) - {"test_name"}  # the intro's placeholder
    assert len(names) > 30 and not names - DEFINED, sorted(names - DEFINED)


def test_every_row_of_the_table_names_its_test():
    rows = re.findall(r"^\| (\w+) \|(.*)$", TABLE, re.M)
    tests_paragraph = TABLE.split("\nTests:", 1)[1]
    mentioned = set()
    for first, last in re.findall(r"rows? (\w+)(?:\s*[–,-]\s*(\w+))?", tests_paragraph):
        mentioned |= {first, last} - {""}
        if last and first.isdigit() and last.isdigit():
            mentioned |= {str(i) for i in range(int(first), int(last) + 1)}
    missing = [row for row, text in rows if "tests/" not in text and row not in mentioned]
    assert len(rows) > 25 and not missing, missing
