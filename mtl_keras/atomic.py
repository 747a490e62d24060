"""Atomic file writes: the one helper every writer of the package uses. Imports nothing of ours
and no TensorFlow.

A crash (or SIGKILL, or a full disk) at any moment leaves the old file — or none — never a
truncated one: the content goes to a temporary file beside the target (same folder, so the
rename cannot cross file systems; same name ending, so writers that insist on a suffix such as
Keras' ``.weights.h5`` accept it), is flushed to disk, renamed into place with `os.replace`,
and the folder entry is flushed too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[str], object], fsync: bool = True) -> str:
    """Write ``path`` by ``write(tmp)`` on a temporary path beside it, then rename it into place.

    Args:
        path: the file to write (its folder is created when missing).
        write: writes the whole content to the path it is given (e.g. ``model.save_weights``).
        fsync: flush the file and the folder entry to disk (off: still atomic for readers,
            not across a power loss).

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{threading.get_ident()}-{os.path.basename(path)}")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if fsync:
        _fsync_folder(folder)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, fsync: bool = True) -> str:
    """`write_atomic` of UTF-8 ``text``."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write_atomic(path, write, fsync)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True) -> str:
    """`write_atomic` of ``data``."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return write_atomic(path, write, fsync)


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
