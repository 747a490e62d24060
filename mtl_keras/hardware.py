"""What the CPU can do, and the precision choice that follows from it.

``mixed_bfloat16`` pays only where the hardware computes in bfloat16: on CPUs with
AVX512-BF16 or AMX-BF16 (and on GPUs). Elsewhere — AVX2-only laptops, VMs, CI runners —
oneDNN emulates bfloat16 and a step runs several times *slower* than float32 (about 8× on an
AVX2-only CPU; the measurement is in `benchmarks/RESULTS.md`). `resolve_precision` turns such a request into float32 with one line saying why, unless the user insists
(``MTL_KERAS_ALLOW_EMULATED_BF16=1``).
"""

from __future__ import annotations

import os
import sys
import warnings

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


#: oneDNN's variables capping the instruction set it may use (TensorFlow's and PyTorch's oneDNN).
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def onednn_isa_cap() -> str | None:
    """The instruction set oneDNN is capped to (``ONEDNN_MAX_CPU_ISA``, upper case), or None."""
    for name in ISA_CAP_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value and value.upper() not in ("ALL", "DEFAULT"):
            return value.upper()
    return None


def _cap_allows_bf16(cap: str | None) -> bool:
    # oneDNN ISA names: SSE41, AVX, AVX2, AVX2_VNNI(_2), AVX512_CORE, AVX512_CORE_VNNI,
    # AVX512_CORE_BF16, AVX512_CORE_FP16, AVX512_CORE_AMX(_FP16), AVX10_1_512(_AMX...).
    return cap is None or any(part in cap for part in ("BF16", "FP16", "AMX", "AVX10"))


def onednn_allows_bfloat16() -> bool:
    """False when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below bfloat16: TensorFlow still picks
    oneDNN's bf16 kernels from the CPU's flags, and creating them then fails (the process
    aborts), so bfloat16 ops must not run at all."""
    return _cap_allows_bf16(onednn_isa_cap())


#: The levels `isa_label` names, lowest first. ``"AMX-BF16"``: AVX-512 with AMX tiles
#: (Sapphire Rapids and later), where oneDNN runs bfloat16 convolutions and matmuls on AMX
#: kernels, faster than AVX512-BF16's and with other relative speeds (``benchmarks/RESULTS.md``).
ISA_LEVELS = ("older", "AVX2", "AVX-512", "AVX512-BF16", "AMX-BF16")


def native_bf16_flags(flags: set[str]) -> bool:
    """Whether these CPU flags include native bfloat16 arithmetic (`NATIVE_BF16_FLAGS`)."""
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def native_bfloat16(flags: set[str]) -> bool:
    """Whether a CPU with these flags computes bfloat16 natively (`NATIVE_BF16_FLAGS`) — and
    oneDNN may use it: ``ONEDNN_MAX_CPU_ISA=AVX2`` (or any cap below AVX512_CORE_BF16) makes
    even an AVX512-BF16 CPU emulate bfloat16."""
    return native_bf16_flags(flags) and onednn_allows_bfloat16()


def _native_level(flags: set[str]) -> str:
    # Highest level first: the first test that holds names the level.
    return next(
        level
        for level, holds in (
            ("AMX-BF16", "amx_bf16" in flags and "avx512f" in flags),
            ("AVX512-BF16", native_bf16_flags(flags)),
            ("AVX-512", "avx512f" in flags),
            ("AVX2", "avx2" in flags),
            ("older", True),
        )
        if holds
    )


def _capped_level(cap: str) -> str:
    return next(
        level
        for level, holds in (
            ("AMX-BF16", "AMX" in cap),
            ("AVX512-BF16", _cap_allows_bf16(cap)),
            ("AVX-512", cap.startswith("AVX512")),
            ("AVX2", cap.startswith("AVX2")),
            ("older", True),
        )
        if holds
    )


def isa_level(flags: set[str] | None) -> str:
    """The vector instruction set oneDNN runs on with these CPU flags: one of `ISA_LEVELS`
    (``"AMX-BF16"``, ``"AVX512-BF16"``, ``"AVX-512"``, ``"AVX2"``, ``"older"``), lowered by an
    ``ONEDNN_MAX_CPU_ISA`` cap; ``"unknown"`` without flags (not Linux)."""
    if flags is None:
        return "unknown"
    native = _native_level(flags)
    cap = onednn_isa_cap()
    return native if cap is None else min(_capped_level(cap), native, key=ISA_LEVELS.index)


def isa_label(flags: set[str] | None) -> str:
    """`isa_level` for a report: with an ``ONEDNN_MAX_CPU_ISA`` cap below the CPU's own level,
    ``"<level> (capped by ONEDNN_MAX_CPU_ISA=<cap> on an <native> CPU)"``."""
    effective = isa_level(flags)
    if flags is None or effective == _native_level(flags):
        return effective
    return f"{effective} (capped by ONEDNN_MAX_CPU_ISA={onednn_isa_cap()} on an {_native_level(flags)} CPU)"


def _has_gpu() -> bool:
    """Whether the backend sees a GPU: TensorFlow's devices on the TensorFlow backend, else
    JAX's or PyTorch's (TensorFlow is not imported for another backend)."""
    import keras

    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    from mtl_keras._tensorflow import import_tensorflow

    tf = import_tensorflow("resolve_precision's GPU check")
    return bool(tf.config.list_physical_devices("GPU"))


def slow_cpu_backend_note(backend: str | None = None, has_gpu: bool | None = None) -> str | None:
    """A line for long trainings on the JAX backend without a GPU, None elsewhere.

    On every CPU measured the TensorFlow backend trained faster (``benchmarks/RESULTS.md``, "JAX
    vs TensorFlow backend"): JAX pretrained at 0.5–0.6× its steps/s and meta-trained at 0.45×
    (an AMX CPU, before `mtl_keras.jax_backend.conv`) to 0.9× (an AVX2 CPU, with it). XLA:CPU's
    convolutions are slower than TensorFlow's oneDNN kernels.

    Args:
        backend: the Keras backend's name (default: the one in use).
        has_gpu: whether a GPU is visible (default: asks the backend's framework).

    Returns:
        The note for the JAX backend on a CPU-only machine, else None.
    """
    import keras

    if (backend or keras.config.backend()) != "jax" or (_has_gpu() if has_gpu is None else has_gpu):
        return None
    return (
        "Note: Keras backend JAX with no GPU visible. On CPUs the TensorFlow backend has trained faster "
        "(JAX: pretraining at 0.5-0.6x its speed, meta-training at 0.45-0.9x; benchmarks/RESULTS.md); "
        "KERAS_BACKEND=tensorflow trains faster here if TensorFlow is installed."
    )


def emulates_bfloat16(flags: set[str] | None = None, has_gpu: bool | None = None) -> bool:
    """Whether bfloat16 would be emulated here, and the user has not asked to keep it anyway.

    True on a CPU-only machine whose CPU has none of `NATIVE_BF16_FLAGS`, unless
    ``MTL_KERAS_ALLOW_EMULATED_BF16=1``. Unknown flags (not Linux) count as native.

    Args:
        flags: the CPU's flags (default: `cpu_flags`).
        has_gpu: whether a GPU is visible (default: asks the Keras backend's framework; asked
            only when the flags say the CPU would emulate).
    """
    if os.environ.get(ALLOW_EMULATED_BF16) == "1":
        return False
    flags = cpu_flags() if flags is None else flags
    if flags is None or native_bfloat16(flags):
        return False
    return not (_has_gpu() if has_gpu is None else has_gpu)


def resolve_precision(precision: str, flags: set[str] | None = None, has_gpu: bool | None = None) -> str:
    """The precision to build a model in: ``precision``, or float32 where bfloat16 would be emulated.

    Args:
        precision: ``"float32"`` or ``"mixed_bfloat16"`` (`ExperimentConfig.precision`).
        flags: the CPU's flags (default: `cpu_flags`); unknown flags (not Linux) keep
            ``precision``.
        has_gpu: whether a GPU is visible (default: asks the Keras backend's framework); a GPU
            keeps it.

    Returns:
        ``precision``, or ``"float32"`` for ``mixed_bfloat16`` on a CPU-only machine whose CPU
        has none of `NATIVE_BF16_FLAGS` (one line on stderr says so, once per process), unless
        ``MTL_KERAS_ALLOW_EMULATED_BF16=1``.
    """
    if precision != "mixed_bfloat16" or not emulates_bfloat16(flags, has_gpu):
        return precision
    message = (
        "precision=mixed_bfloat16: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 among its "
        "flags), so TensorFlow would emulate it, 8x slower than float32 as measured on an AVX2-only CPU; "
        f"using float32 instead (set {ALLOW_EMULATED_BF16}=1 to keep bfloat16)."
    )
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)
    return "float32"


def warn_if_emulated_bfloat16(
    policy: str, where: str, flags: set[str] | None = None, has_gpu: bool | None = None
) -> bool:
    """Warn when a model is about to train in ``mixed_bfloat16`` on a CPU that would emulate it.

    The models' ``compile`` calls this with their dtype policy, so a notebook that sets
    ``keras.mixed_precision.set_dtype_policy("mixed_bfloat16")`` on an AVX2-only machine hears
    about it as the command line does (`resolve_precision`, which switches to float32 instead).

    Args:
        policy: the model's dtype policy name (e.g. ``model.dtype_policy.name``).
        where: who asks, for the message (``"MetaTransferModel.compile"``).
        flags: the CPU's flags (default: `cpu_flags`).
        has_gpu: whether a GPU is visible (default: asks the backend's framework).

    Returns:
        True if it warned (a `UserWarning`): ``mixed_bfloat16``, no GPU, a CPU with none of
        `NATIVE_BF16_FLAGS`, and ``MTL_KERAS_ALLOW_EMULATED_BF16`` not set to 1.
    """
    if policy != "mixed_bfloat16" or not emulates_bfloat16(flags, has_gpu):
        return False
    warnings.warn(
        f"{where}: the dtype policy is mixed_bfloat16, but this CPU has no native bfloat16 (no "
        "avx512_bf16 or amx_bf16 among its flags) and no GPU is visible, so bfloat16 is emulated: "
        "about 8x slower than float32. Build the model under "
        "keras.mixed_precision.set_dtype_policy('float32'), or set "
        f"{ALLOW_EMULATED_BF16}=1 to keep bfloat16 without this warning.",
        UserWarning,
        stacklevel=3,
    )
    return True
