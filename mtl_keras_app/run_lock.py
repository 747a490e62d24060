"""One run folder, one writer: ``RUN_DIR/.lock``. Imports nothing of ours and no TensorFlow.

Two ``mtl-keras run --run-dir runs/x`` started seconds apart used to both train to the
end, writing the same checkpoints, backups and ``metrics.json``. Now every entry point
that writes a run folder holds its lock while it runs (`locks_run_folder`):

* ``RUN_DIR/.lock`` is opened and locked with ``fcntl.flock(LOCK_EX | LOCK_NB)``; the
  descriptor stays open while the lock is held. The kernel drops the lock when the
  process ends, however it ends, so a crash cannot leave the folder stuck.
* The holder writes ``{"pid", "host", "started", "argv"}`` into the file. A second
  process that cannot take the lock reads it and raises `RunFolderLocked`, naming them
  (``mtl-keras`` exits with status 2 and that message).
* On a normal end (return or exception) the file is emptied before the lock is
  released. A file that still names a holder but is not locked therefore belongs to a
  process that died (SIGKILL, out of memory, power loss): the next process takes the
  lock over and says so on standard error.
* Re-entrant within a process: `run_workflow` calls the stage functions, and a script may
  call several stages in a row; the lock is released when the outermost holder ends.

Without ``fcntl`` (Windows), or on a file system that refuses ``flock``, nothing is
locked (a warning says so the first time).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import inspect
import json
import os
import shlex
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".lock"

_held: dict[str, list] = {}  # real path of the folder -> [descriptor or None, depth]
_guard = threading.Lock()


class RunFolderLocked(RuntimeError):
    """Another live process holds the run folder's lock.

    Attributes:
        run_dir: the folder.
        holder: what the holder wrote: ``pid``, ``host``, ``started`` (ISO 8601) and
            ``argv`` (empty if it had not written them yet).
    """

    def __init__(self, run_dir: str, holder: dict):
        self.run_dir = run_dir
        self.holder = holder
        if holder.get("pid"):
            command = shlex.join(str(a) for a in holder.get("argv") or []) or "?"
            who = (
                f"process {holder['pid']} on host {holder.get('host', '?')}, started "
                f"{holder.get('started', '?')}, running `{command}`"
            )
        else:
            who = "another process, which is just starting"
        super().__init__(
            f"'{run_dir}' is in use by {who}. Two processes writing one run folder overwrite each "
            "other's checkpoints, backups and metrics: wait for it to end (or stop it), or use another "
            "--run-dir."
        )


def _holder_info() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": list(sys.argv),
    }


def _read(fd: int) -> dict:
    """The holder information in the lock file, {} if it is empty or unreadable."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    try:
        info = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


_shared: set[int] = set()  # descriptors of read-only folders' locks, held shared (`_acquire_shared`)


def _acquire_shared(run_dir: str) -> int | None:
    """Read a folder this process cannot write: hold its ``.lock`` shared, so that a live writer (who
    holds it exclusively) is still detected; None when there is no lock file to hold."""
    try:
        fd = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        _flock_or_name_holder(fd, fcntl.LOCK_SH, run_dir)
    except OSError:
        os.close(fd)
        return None
    _shared.add(fd)
    return fd


def _flock_or_name_holder(fd: int, kind: int, run_dir: str) -> None:
    """``flock(fd, kind | LOCK_NB)``; held by another process: close ``fd``, raise `RunFolderLocked`."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise RunFolderLocked(run_dir, holder) from None


def _acquire(run_dir: str) -> int | None:
    """Lock ``run_dir/.lock`` for this process: its open descriptor, or None where locks don't work.

    A folder that exists but that this process may not write (a read-only mount, another user's
    run) is locked shared (`_acquire_shared`): reading it (``evaluate``, ``export --output
    elsewhere``) works, and a writer still holding it is named.
    """
    try:
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(
            os.path.join(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644
        )
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and os.path.isdir(run_dir):
            return _acquire_shared(run_dir)
        raise
    try:
        _flock_or_name_holder(fd, fcntl.LOCK_EX, run_dir)
    except OSError as err:  # e.g. a network file system without flock
        os.close(fd)
        warnings.warn(
            f"Cannot lock '{run_dir}' ({err}): a second process writing this run folder will not be "
            "detected.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    previous = _read(fd)
    if previous.get("pid"):
        print(
            f"{run_dir}: taking over the lock of dead process {previous['pid']} on host "
            f"{previous.get('host', '?')} (started {previous.get('started', '?')}), which ended without "
            "releasing it",
            file=sys.stderr,
            flush=True,
        )
    data = json.dumps(_holder_info()).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    return fd


def _release(fd: int | None) -> None:
    if fd is None:
        return
    if fd in _shared:
        _shared.discard(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return
    try:
        os.ftruncate(fd, 0)  # empty and unlocked: released, not abandoned
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def run_folder_lock(run_dir: str) -> Iterator[None]:
    """Hold ``run_dir``'s lock for this process during the block (created if needed).

    Raises:
        RunFolderLocked: another live process holds it (the message names the process).

    Example:
        >>> with run_folder_lock("runs/a"):
        ...     train_and_write_into("runs/a")
    """
    key = os.path.realpath(run_dir)
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            if fcntl is None:
                warnings.warn(
                    "No fcntl on this platform: run folders are not locked.", RuntimeWarning, stacklevel=3
                )
            _held[key] = entry = [_acquire(run_dir) if fcntl is not None else None, 1]
    try:
        yield
    finally:
        with _guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(entry[0])


def locks_run_folder(
    parameter: str = "run_dir", folder: Callable[[dict], str | None] | None = None
) -> Callable[[Callable], Callable]:
    """Decorate a function that writes a run folder: it runs holding `run_folder_lock`.

    Args:
        parameter: the argument naming the folder.
        folder: instead, a function of the call's bound arguments (only those passed)
            returning the folder to lock, or None to lock nothing.
    """

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            path = folder(arguments) if folder is not None else arguments[parameter]
            with run_folder_lock(os.fspath(path)) if path is not None else contextlib.nullcontext():
                return function(*args, **kwargs)

        return locked

    return decorate
