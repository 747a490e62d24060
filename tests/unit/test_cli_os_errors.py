"""The CLI turns an `OSError` into one line naming the path and the fix (exit 2), not a traceback."""

from mtl_keras_app import cli


def test_a_root_that_is_a_file_is_one_line_naming_it(tmp_path, capsys):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("x")
    code = cli.main(
        [
            "run",
            "--benchmark",
            "folders",
            "--root",
            str(not_a_folder),
            "--run-dir",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert (
        err.count("\n") == 1 and "data.txt' is a file, not a folder" in err and err.endswith("per class.\n")
    )


def test_os_errors_say_what_to_do():
    import errno

    from mtl_keras_app.cli import _os_error_message

    full = _os_error_message(OSError(errno.ENOSPC, "No space left on device", "/runs/a/x.h5"))
    assert "/runs/a/x.h5" in full and "resumes" in full
    assert "not a folder" in _os_error_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/d/f"))
    assert "read-only" in _os_error_message(OSError(errno.EROFS, "Read-only file system", "/ro"))
