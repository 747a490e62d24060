"""The tiny line protocol between the benchmark driver and its worker processes.

Standard library only: the PyTorch baseline imports it without TensorFlow or mtl_keras, so that
a worker's memory and threads are its own.

A worker builds what it measures, warms it up, then answers one JSON command per line on stdin:

* ``{"cmd": "time", "what": NAME, "n": n}`` → runs step ``NAME`` ``n`` times, answers
  ``{"seconds": [n wall-clock durations], "cpu_seconds": [n CPU times of the process]}`` (CPU
  time counts every thread of the worker, spinning ones included; it is less sensitive than wall
  time to other jobs sharing the machine);
* ``{"cmd": "quit"}`` → answers ``{"max_rss_mb": peak resident set size}`` (plus what the worker's
  ``final()`` returns, e.g. its peak GPU memory) and exits.

Answers are single lines prefixed with `PREFIX` on stdout (anything else a library prints there is
ignored by the driver).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Sequence

PREFIX = "@@mtl-bench@@"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def send(message: dict, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(PREFIX + json.dumps(message) + "\n")
    stream.flush()


def time_calls(fn: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of ``n`` calls of ``fn`` (each must block until done)."""
    seconds, cpu_seconds = [], []
    for _ in range(int(n)):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return seconds, cpu_seconds


def serve(
    steps: dict[str, Callable[[], object]],
    info: dict,
    warmup: int = 2,
    final: Callable[[], dict] | None = None,
) -> None:
    """Warm every step up (``warmup`` calls, timed into ``info``), announce, answer commands;
    ``final()`` (JSON-able) joins the answer to ``quit``."""
    warm = {name: time_calls(fn, warmup)[0] for name, fn in steps.items()}
    send({"ready": True, "warmup_seconds": warm, "startup_rss_mb": peak_rss_mb(), **info})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        if command["cmd"] == "time":
            seconds, cpu_seconds = time_calls(steps[command["what"]], command.get("n", 1))
            send({"seconds": seconds, "cpu_seconds": cpu_seconds})
        elif command["cmd"] == "quit":
            send({"max_rss_mb": peak_rss_mb(), **(final() if final else {})})
            return
        else:
            send({"error": f"unknown command {command['cmd']!r}"})


def run_worker(build_steps: Callable[[dict], tuple[dict, dict]], argv: Sequence[str] | None = None) -> None:
    """A worker's ``main``: ``argv[0]`` (default ``sys.argv[1]``) is the spec JSON; build its steps
    with ``build_steps(spec) -> (steps, info)`` or ``(steps, info, final)`` and `serve` them
    (``spec["warmup"]`` warm-up calls, default 2)."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    steps, info, *final = build_steps(spec)
    serve(steps, info, warmup=int(spec.get("warmup", 2)), final=final[0] if final else None)
