"""TensorFlow's start-up noise on machines without an NVIDIA GPU, filtered. Imports no TensorFlow.

`import tensorflow` followed by the first device use printed this on the project's CPU
machine (TF 2.21, whose wheel is built with CUDA), before any output of ours::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU ...
    To enable the following instructions: AVX2 AVX512F ..., rebuild TensorFlow with ...
    (the first, second and third lines again: _pywrap_profiler_plugin.so carries its own abseil
    and prints them once more when it loads)
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)

Why an environment variable alone cannot quiet them:

* The abseil lines (preamble, oneDNN, cuda drivers) are written while the shared libraries
  load, before TensorFlow applies ``TF_CPP_MIN_LOG_LEVEL``: levels 1, 2 and 3 all leave
  them. ``CUDA_VISIBLE_DEVICES=-1`` or ``""`` does not prevent the ``cuInit`` error either.
* ``TF_CPP_MIN_LOG_LEVEL=3`` hides the ``cuInit`` error, but TensorFlow reads the variable
  once, at its first log message (during the import), and keeps that level for the whole
  process: setting 3 for the import and restoring it afterwards still hides every later
  error (tried: the ``cuInit`` error, logged after the import, stayed hidden).

So `quiet_tensorflow_startup` (called first thing by the ``mtl-keras`` command, hence by
``make demo``; a library user can call it before importing TensorFlow, Keras or mtl_keras),
on a machine with no NVIDIA device or driver:

1. sets ``TF_CPP_MIN_LOG_LEVEL=1`` if the user has not set it: TensorFlow's INFO lines are
   dropped for the whole run, warnings and errors stay visible;
2. imports TensorFlow and looks up its GPUs (where ``cuInit`` is called) with the process'
   standard error (file descriptor 2) passed through `filtered_stderr`, which drops only the
   lines `is_startup_noise` recognises and forwards every other line as it arrives.

Nothing is changed on a machine with ``/dev/nvidia*``, ``/proc/driver/nvidia`` or
``/dev/dxg`` (WSL 2), when TensorFlow is already imported, or when the user set
``TF_CPP_MIN_LOG_LEVEL=0`` (everything is shown). A ``TF_CPP_MIN_LOG_LEVEL`` the user set
is never overridden, and ``CUDA_VISIBLE_DEVICES`` is never touched.

On any other Keras backend (``KERAS_BACKEND=jax``, read without importing Keras: see
`keras_backend_name`), or where TensorFlow is not installed, `quiet_tensorflow_startup` does
nothing and imports nothing: TensorFlow is then imported only by the parts that need it
(tf.data pipelines, SavedModel export, ``tf.distribute``), through
`mtl_keras._tensorflow.import_tensorflow`; `quiet_cli_startup` sets this filter there too.

This module imports neither mtl_keras nor Keras nor TensorFlow at its own import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib
import importlib.util
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping

LEVEL = "TF_CPP_MIN_LOG_LEVEL"

_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# abseil's format (``I0000 00:00:1796164855.027327    5001 port.cc:153] ...`` before
# absl::InitializeLog) and TensorFlow's older one (``2025-01-01 10:00:00.000000: I tensorflow/...``).
_ABSL_LINE = re.compile(r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:[\d.]+\s+\d+ (?P<file>[^:\s]+):\d+\] ")
_TSL_INFO = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I ")
_CPU_FEATURES_TAIL = re.compile(
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"
)


@dataclasses.dataclass(frozen=True)
class QuietPlan:
    """What `quiet_tensorflow_startup` does: the variables it sets (only unset ones), then the filter."""

    set_env: dict[str, str]


def _tf_level(value: str) -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it (``absl::SimpleAtoi``; unparsable is 0)."""
    try:
        return int(value.strip())
    except ValueError:
        return 0


def nvidia_present(dev: str = "/dev", proc: str = "/proc") -> bool:
    """Whether this machine shows an NVIDIA device or driver (or WSL 2's GPU device, ``/dev/dxg``)."""
    return bool(
        glob.glob(os.path.join(dev, "nvidia*"))
        or os.path.exists(os.path.join(proc, "driver", "nvidia"))
        or os.path.exists(os.path.join(dev, "dxg"))
    )


def plan_quiet(environ: Mapping[str, str], nvidia: bool, tensorflow_imported: bool) -> QuietPlan | None:
    """Decide what to quiet; None: leave TensorFlow's output and the environment as they are.

    Args:
        environ: the process environment (not modified).
        nvidia: `nvidia_present()`: a GPU machine keeps all of TensorFlow's output.
        tensorflow_imported: TensorFlow is already loaded, so its start-up lines are out.

    Returns:
        None on a GPU machine, once TensorFlow is imported, or when the user set
        ``TF_CPP_MIN_LOG_LEVEL`` to 0; else a `QuietPlan` whose ``set_env`` holds
        ``TF_CPP_MIN_LOG_LEVEL=1`` if (and only if) the user left it unset.
    """
    if nvidia or tensorflow_imported:
        return None
    if LEVEL in environ:
        return None if _tf_level(environ[LEVEL]) <= 0 else QuietPlan(set_env={})
    return QuietPlan(set_env={LEVEL: "1"})


def is_startup_noise(line: str) -> bool:
    """True for the lines TensorFlow prints while starting on a machine without a GPU driver.

    Every INFO line, abseil's "before absl::InitializeLog()" preamble, the second line of
    the CPU-features notice and the ``failed call to cuInit`` error. Warnings, other
    errors and anything that is not a TensorFlow log line are kept.
    """
    line = line.rstrip("\r\n")
    if line == _ABSL_PREAMBLE or _TSL_INFO.match(line) or _CPU_FEATURES_TAIL.match(line):
        return True
    match = _ABSL_LINE.match(line)
    if match is None:
        return False
    if match["severity"] == "I":
        return True
    return match["severity"] == "E" and "failed call to cuInit" in line


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[str], bool]) -> Iterator[None]:
    """Pass what anything writes to file descriptor 2 (C++ code included) through ``drop``.

    A thread reads the lines from a pipe and writes those ``drop`` rejects to the real
    standard error as they arrive, so a hang or an exception inside the block still
    shows its output. If descriptor 2 cannot be duplicated, nothing is filtered.
    """
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    read_fd, write_fd = os.pipe()

    def forward():
        with open(read_fd, "rb") as pipe:
            for raw in pipe:
                if not drop(raw.decode("utf-8", "replace")):
                    _write_all(saved, raw)

    thread = threading.Thread(target=forward, name="mtl_keras-stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the thread reads to the end and stops
        thread.join(timeout=10)
        if not thread.is_alive():  # (a child process started inside the block may hold the pipe)
            os.close(saved)


def keras_backend_name(environ: Mapping[str, str] | None = None) -> str:
    """The Keras backend of this process, found as Keras finds it but without importing Keras.

    Once Keras is imported, its own answer (``keras.config.backend()``). Before: a non-empty
    ``KERAS_BACKEND``, else the ``"backend"`` of ``keras.json`` in ``KERAS_HOME`` (default
    ``~/.keras``, or ``/tmp/.keras`` when the home folder is not writable), else
    ``"tensorflow"``, Keras' default.

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    keras = sys.modules.get("keras")
    config = getattr(keras, "config", None)
    if config is not None and hasattr(config, "backend"):
        return str(config.backend())
    environ = os.environ if environ is None else environ
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"]
    if "KERAS_HOME" in environ:
        home = environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.expanduser(os.path.join(home, "keras.json"))) as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend or "tensorflow"


def tensorflow_installed() -> bool:
    """Whether ``import tensorflow`` can find TensorFlow (looked up, not imported)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None  # None: an import that is blocked
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def _import_filtered(environ: MutableMapping[str, str]):
    """Import TensorFlow (and look up its GPUs) through the start-up filter where `plan_quiet` says so."""
    plan = plan_quiet(environ, nvidia_present(), "tensorflow" in sys.modules)
    if plan is None:
        return importlib.import_module("tensorflow")
    environ.update(plan.set_env)
    with filtered_stderr(is_startup_noise):
        tf = importlib.import_module("tensorflow")
        tf.config.list_physical_devices("GPU")  # where cuInit is called (not at import)
    return tf


def quiet_tensorflow_startup(environ: MutableMapping[str, str] | None = None) -> bool:
    """Import TensorFlow without its CPU-machine start-up noise (see the module docstring).

    Does nothing (and imports neither TensorFlow nor Keras) when the Keras backend is not
    TensorFlow (`keras_backend_name`) or TensorFlow is not installed.

    Args:
        environ: the environment to read and update (default ``os.environ``).

    Returns:
        True if it imported TensorFlow with the filter, False if it left everything alone.
    """
    environ = os.environ if environ is None else environ
    if keras_backend_name(environ) != "tensorflow" or not tensorflow_installed():
        return False
    if plan_quiet(environ, nvidia_present(), "tensorflow" in sys.modules) is None:
        return False
    _import_filtered(environ)
    return True


def import_filtered() -> object:
    """``import tensorflow`` through the start-up filter where `plan_quiet` says so (for
    `mtl_keras._tensorflow.set_tensorflow_importer`)."""
    return _import_filtered(os.environ)


def quiet_cli_startup(environ: MutableMapping[str, str] | None = None) -> None:
    """What the ``mtl-keras`` command does first: `quiet_tensorflow_startup`, and on another
    backend the same filter for a TensorFlow the library imports later (tf.data, export)."""
    environ = os.environ if environ is None else environ
    if quiet_tensorflow_startup(environ) or keras_backend_name(environ) == "tensorflow":
        return  # filtered now, or Keras imports TensorFlow itself (unfiltered where plan_quiet says so)
    if not tensorflow_installed() or "tensorflow" in sys.modules:
        return
    from mtl_keras import _tensorflow  # imports Keras, on the non-TensorFlow backend

    _tensorflow.set_tensorflow_importer(import_filtered)
