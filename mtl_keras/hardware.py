"""What the CPU can do, and the precision choice that follows from it (issue 19 item 3).

``mixed_bfloat16`` pays only where the hardware computes in bfloat16: on CPUs with
AVX512-BF16 or AMX-BF16 (and on GPUs). Elsewhere — AVX2-only laptops, VMs, CI runners —
oneDNN emulates bfloat16 and a step runs several times *slower* than float32 (measured on an
AVX2-only AMD EPYC: 0.04 tasks/s against 0.33 in float32, 8×; issue 19). `resolve_precision`
turns such a request into float32 with one line saying why, unless the user insists
(``MTL_KERAS_ALLOW_EMULATED_BF16=1``).
"""

from __future__ import annotations

import os
import sys

#: /proc/cpuinfo flags of CPUs with native bfloat16 arithmetic.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Set to 1 to keep ``mixed_bfloat16`` on a CPU that emulates it.
ALLOW_EMULATED_BF16 = "MTL_KERAS_ALLOW_EMULATED_BF16"
#: Where Linux describes the CPU (`cpu_flags` reads it; tests point it at a fake file).
CPUINFO = "/proc/cpuinfo"

_said: set[str] = set()


def cpu_flags(path: str | None = None) -> set[str] | None:
    """The CPU's feature flags (the ``flags`` line of ``/proc/cpuinfo``), or None where unknown."""
    try:
        with open(path or CPUINFO) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def native_bfloat16(flags: set[str]) -> bool:
    """Whether a CPU with these flags computes bfloat16 natively (`NATIVE_BF16_FLAGS`)."""
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(precision: str, flags: set[str] | None = None, has_gpu: bool | None = None) -> str:
    """The precision to build a model in: ``precision``, or float32 where bfloat16 would be emulated.

    Args:
        precision: ``"float32"`` or ``"mixed_bfloat16"`` (`ExperimentConfig.precision`).
        flags: the CPU's flags (default: `cpu_flags`); unknown flags (not Linux) keep
            ``precision``.
        has_gpu: whether a GPU is visible (default: asks TensorFlow); a GPU keeps it.

    Returns:
        ``precision``, or ``"float32"`` for ``mixed_bfloat16`` on a CPU-only machine whose CPU
        has none of `NATIVE_BF16_FLAGS` (one line on stderr says so, once per process), unless
        ``MTL_KERAS_ALLOW_EMULATED_BF16=1``.
    """
    if precision != "mixed_bfloat16" or os.environ.get(ALLOW_EMULATED_BF16) == "1":
        return precision
    if has_gpu is None:
        has_gpu = _has_gpu()
    if has_gpu:
        return precision
    flags = cpu_flags() if flags is None else flags
    if flags is None or native_bfloat16(flags):
        return precision
    message = (
        "precision=mixed_bfloat16: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 among its "
        "flags), so TensorFlow would emulate it, 8x slower than float32 as measured on an AVX2-only CPU "
        f"(issue 19); using float32 instead (set {ALLOW_EMULATED_BF16}=1 to keep bfloat16)."
    )
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)
    return "float32"
