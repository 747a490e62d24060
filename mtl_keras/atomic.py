"""Atomic file writes: the one helper every writer of the package uses. Imports nothing of ours
and no TensorFlow.

A crash (or SIGKILL, or a full disk) at any moment leaves the old file — or none — never a
truncated one: the content goes to a temporary file beside the target (same folder, so the
rename cannot cross file systems; same name ending, so writers that insist on a suffix such as
Keras' ``.weights.h5`` accept it), is flushed to disk, renamed into place with `os.replace`,
and the folder entry is flushed too.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable


def write_atomic(
    path: str | os.PathLike, write: Callable[[str], object], fsync: bool = True, size: int | None = None
) -> str:
    """Write ``path`` by ``write(tmp)`` on a temporary path beside it, then rename it into place.

    Args:
        path: the file to write (its folder is created when missing).
        write: writes the whole content to the path it is given (e.g. ``model.save_weights``).
        fsync: flush the file and the folder entry to disk (off: still atomic for readers,
            not across a power loss).
        size: about how many bytes ``write`` writes: when the folder's device has less free
            space, nothing is written (`check_free_space`) — HDF5 does not survive a full disk
            (h5py's open file cannot be closed; the interpreter then crashes as it exits).

    Returns:
        ``path`` as a string.

    Raises:
        OSError: from ``write``, or ``ENOSPC`` before writing; its ``filename`` is ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if size is not None:
        check_free_space(path, size)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{threading.get_ident()}-{os.path.basename(path)}")
    try:
        try:
            write(tmp)
        except OSError as err:
            if err.filename is None and err.errno is not None:  # h5py's name no file
                raise OSError(err.errno, err.strerror or str(err), path) from err
            raise
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


#: Free space `check_free_space` leaves on top of a write's size (file-system blocks, metadata).
SPACE_MARGIN = 1 << 20


def check_free_space(path: str | os.PathLike, size: int) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``path`` when its folder's device has under ``size`` bytes
    (plus 10% and `SPACE_MARGIN`) free."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    need = int(size * 1.1) + SPACE_MARGIN
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device (checked before writing: about {need / 2**20:.1f} MiB needed, "
            f"{free / 2**20:.1f} MiB free)",
            os.fspath(path),
        )


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
