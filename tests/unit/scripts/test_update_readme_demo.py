"""`scripts/update_readme_demo.py`: the README's demo table is what a demo run printed."""

import importlib.util
import json
import os

import pytest

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts", "update_readme_demo.py")


def _script():
    spec = importlib.util.spec_from_file_location("update_readme_demo", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_between_the_markers_is_replaced_by_the_runs(tmp_path):
    script = _script()
    run = tmp_path / "demo-x"
    run.mkdir()
    (run / "results.md").write_text("| method | 5-way 1-shot |\n|---|---|\n| MTL | 73.10 ± 1.00 |\n")
    history = {"initial_val_accuracy": [0.70], "val_accuracy": [0.71, 0.735, 0.72], "kept_epoch": [2]}
    (run / "metrics.json").write_text(json.dumps({"histories": {"MTL 1-shot": history}, "seconds": 600}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{script.START}\nold table 97.62\n{script.END}\nafter\n")
    assert script.main([str(run), "--readme", str(readme), "--record", ""]) == 0
    text = readme.read_text()
    assert "old table" not in text and "| MTL | 73.10 ± 1.00 |" in text
    assert text.startswith("# x\nbefore\n") and text.endswith(f"{script.END}\nafter\n")
    assert "kept epoch 2 of 3 (73.50%)" in text and "70.00% before" in text
    # Idempotent: a second run gives the same README.
    assert script.main([str(run), "--readme", str(readme), "--record", ""]) == 0
    assert readme.read_text() == text


def test_a_readme_without_markers_is_refused():
    with pytest.raises(ValueError, match="markers"):
        _script().rewrite("no markers here", "table")


def test_the_record_names_the_commit_the_run_recorded_and_the_readme_names_none(tmp_path):
    """A demo run records the source commit it ran (`workflow.source_commit`); the benchmarks
    record names that one, not where the checkout stands when the table is written. The README
    names no commit and no run folder (whose name is a date)."""
    from mtl_keras_app.workflow import source_commit

    recorded = source_commit()
    assert recorded is None or len(recorded.split("+")[0]) >= 7  # a checkout here, None from a wheel
    script = _script()
    run = tmp_path / "demo-y"
    run.mkdir()
    (run / "results.md").write_text("| method | 5-way 1-shot |\n|---|---|\n| MTL | 73.10 ± 1.00 |\n")
    (run / "metrics.json").write_text(json.dumps({"source_commit": "abc1234", "histories": {}}))
    readme, record = tmp_path / "README.md", tmp_path / "RECORD.md"
    for path in (readme, record):
        path.write_text(f"{script.START}\n{script.END}\n")
    assert script.main([str(run), "--readme", str(readme), "--record", str(record)]) == 0
    assert "commit abc1234" in record.read_text() and "demo-y" in record.read_text()
    assert "abc1234" not in readme.read_text() and "demo-y" not in readme.read_text()
