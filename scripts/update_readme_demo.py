"""Rewrite the README's demo table from what `make demo` printed.

The README and ``benchmarks/README.md`` hold the demo's table between two markers::

    <!-- demo-table:start -->
    ...
    <!-- demo-table:end -->

This script puts there the table of a demo run folder (``results.md``, written by
`mtl_keras_app.workflow.run_workflow`), with the kept epochs and the time from its
``metrics.json``, so the README shows what the command printed. The README gets no commit, date
or run folder; the record in ``benchmarks/README.md`` (``--record``) names the run folder and the
commit the demo ran. Run it whenever code that changes the numbers lands::

    make demo                                              # prints the run folder
    python scripts/update_readme_demo.py runs/demo-XXXX    # rewrites README.md
    python scripts/update_readme_demo.py --run             # both (runs `mtl-keras demo`)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"


def demo_section(run_dir: str, commit: str | None = None, provenance: bool = False) -> str:
    """The Markdown that goes between the markers, from a demo run folder; with ``provenance``
    (the benchmarks record) also the run folder's name and ``commit``."""
    with open(os.path.join(run_dir, "results.md")) as f:
        table = f.read().strip()
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    lines = [table, ""]
    kept = []
    for name, history in metrics.get("histories", {}).items():
        if not name.startswith("MTL") or "kept_epoch" not in history:
            continue
        val = [*history["initial_val_accuracy"], *history.get("val_accuracy", [])]
        best = history["kept_epoch"][0]
        kept.append(
            f"{name}: {100 * val[0]:.2f}% before meta-training, kept epoch {best} of {len(val) - 1} "
            f"({100 * val[best]:.2f}%)"
        )
    seconds = metrics.get("seconds")
    facts = [
        f"run folder `{os.path.basename(os.path.normpath(run_dir))}`" if provenance else None,
        f"commit {commit}" if commit and provenance else None,
        f"{seconds / 60:.1f} min from the start of the run to the table" if seconds else None,
    ]
    lines.append("Printed by `make demo` (" + "; ".join(f for f in facts if f) + ").")
    if kept:
        lines.append(
            "Validation accuracy (it chooses the kept epoch; epoch 0 = the pretrained model): "
            + "; ".join(kept)
            + "."
        )
    return "\n".join(lines)


def rewrite(readme: str, section: str) -> str:
    """``readme`` with the text between the markers replaced by ``section``."""
    if START not in readme or END not in readme:
        raise ValueError(f"README has no {START} … {END} markers around the demo table.")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a demo run folder (default: the newest runs/demo-*)")
    parser.add_argument("--run", action="store_true", help="run `mtl-keras demo` first")
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    parser.add_argument(
        "--record",
        default=os.path.join(ROOT, "benchmarks", "README.md"),
        help="the results record that also gets the table, with the run folder and commit ('' for none)",
    )
    args = parser.parse_args(argv)
    if args.run:
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "mtl-keras"), "demo"], check=True)
    run_dir = args.run_dir
    if run_dir is None:
        runs = sorted(glob.glob(os.path.join(ROOT, "runs", "demo-*")), key=os.path.getmtime)
        if not runs:
            parser.error("no runs/demo-* folder: run `make demo` first, or pass a run folder")
        run_dir = runs[-1]
    with open(os.path.join(run_dir, "metrics.json")) as f:
        commit = json.load(f).get("source_commit")  # recorded by the run (runs before 2026-12-02: none)
    try:
        commit = (
            commit
            or subprocess.run(
                # the checkout the demo ran in (its run folder lies inside it); none outside a checkout
                ["git", "-C", run_dir, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit = None
    for path, provenance in ((args.readme, False), (args.record, True)):
        if not path:
            continue
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(rewrite(text, demo_section(run_dir, commit, provenance)))
        print(f"{path}: demo table from {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
