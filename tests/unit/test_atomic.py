"""`mtl_keras.atomic`: the one atomic-write helper every writer of the package goes through."""

import os

import pytest

from mtl_keras.atomic import write_atomic, write_bytes_atomic, write_text_atomic


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_text_atomic(path, "old")

    def half_then_crash(tmp):
        with open(tmp, "w") as f:
            f.write("half of the new con")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_crash)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_the_temporary_keeps_the_name_ending_and_the_folder_is_made(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        with open(tmp, "wb") as f:
            f.write(b"w")

    path = tmp_path / "new" / "mtl_1shot.weights.h5"
    assert write_atomic(path, write) == str(path)
    assert seen[0].endswith(".weights.h5") and os.path.dirname(seen[0]) == str(path.parent)
    assert path.read_bytes() == b"w"
    assert (
        write_bytes_atomic(tmp_path / "b.npz", b"xy", fsync=False)
        and (tmp_path / "b.npz").read_bytes() == b"xy"
    )


def test_every_writer_of_the_package_uses_it():
    """No module but `atomic` renames files into place itself (the SavedModel folder excepted)."""
    import pathlib

    import mtl_keras

    root = pathlib.Path(mtl_keras.__file__).parent
    own = {p.relative_to(root).as_posix() for p in root.rglob("*.py") if "os.replace(" in p.read_text()}
    assert own == {"atomic.py", "export.py"}, own
