"""`mtl_keras.hardware`: mixed_bfloat16 falls back to float32 where the CPU would emulate it."""

import pytest

from mtl_keras import hardware
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.workflow import build_meta_model

AVX2_ONLY = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2\n\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16\n\n"
AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n\n"


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """Point `hardware.cpu_flags` at a fake /proc/cpuinfo; the fallback is on (no override)."""
    monkeypatch.delenv(hardware.ALLOW_EMULATED_BF16, raising=False)
    for name in hardware.ISA_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hardware, "_said", set())

    def use(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(hardware, "CPUINFO", str(path))

    return use


def test_flags_are_read_from_the_cpu_description(fake_cpu):
    fake_cpu(AVX512_BF16)
    assert hardware.native_bfloat16(hardware.cpu_flags())
    fake_cpu(AVX2_ONLY)
    assert "avx2" in hardware.cpu_flags() and not hardware.native_bfloat16(hardware.cpu_flags())
    assert hardware.cpu_flags("/no/such/file") is None


def test_bf16_on_a_cpu_without_it_becomes_float32_with_one_line(fake_cpu, capsys, monkeypatch):
    fake_cpu(AVX2_ONLY)
    assert hardware.resolve_precision("mixed_bfloat16", has_gpu=False) == "float32"
    assert hardware.resolve_precision("mixed_bfloat16", has_gpu=False) == "float32"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no native bfloat16" in err and "8x slower" in err
    assert hardware.ALLOW_EMULATED_BF16 in err
    # Kept: float32 asked for, a GPU, a CPU with bf16, an unknown CPU, or the user insists.
    assert hardware.resolve_precision("float32", has_gpu=False) == "float32"
    assert hardware.resolve_precision("mixed_bfloat16", has_gpu=True) == "mixed_bfloat16"
    assert hardware.resolve_precision("mixed_bfloat16", flags=set(), has_gpu=False) == "float32"
    assert hardware.resolve_precision("mixed_bfloat16", flags={"amx_bf16"}, has_gpu=False) == "mixed_bfloat16"
    fake_cpu(AVX512_BF16)
    assert hardware.resolve_precision("mixed_bfloat16", has_gpu=False) == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "CPUINFO", "/no/such/file")
    assert hardware.resolve_precision("mixed_bfloat16", has_gpu=False) == "mixed_bfloat16"
    fake_cpu(AVX2_ONLY)
    monkeypatch.setenv(hardware.ALLOW_EMULATED_BF16, "1")
    assert hardware.resolve_precision("mixed_bfloat16", has_gpu=False) == "mixed_bfloat16"


def test_the_models_of_a_run_follow_the_cpu(fake_cpu):
    # The one place every stage (CLI, tuning, under a strategy too) builds its model.
    config = ExperimentConfig(image_size=16, widths=(4, 4, 4, 4), shots=(1,), precision="mixed_bfloat16")
    fake_cpu(AVX2_ONLY)
    assert _compute_dtypes(build_meta_model(config, 1, None)) == {"float32"}
    fake_cpu(AVX512_BF16)
    assert _compute_dtypes(build_meta_model(config, 1, None)) == {"bfloat16"}


def _compute_dtypes(model):
    return {layer.compute_dtype for layer in model.backbone.layers if layer.weights}


def test_a_onednn_isa_cap_counts_as_the_cpu_oneDNN_runs_on(fake_cpu, monkeypatch):
    """``ONEDNN_MAX_CPU_ISA=AVX2`` (how an AVX2 part is approximated on an AVX-512 one, issue 19)
    makes bfloat16 emulated, and the benchmark report's ISA label says so."""
    fake_cpu(AVX512_BF16)
    assert hardware.isa_label(hardware.cpu_flags()) == "AVX512-BF16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert not hardware.native_bfloat16(hardware.cpu_flags())
    assert hardware.resolve_precision("mixed_bfloat16", has_gpu=False) == "float32"
    assert (
        hardware.isa_label(hardware.cpu_flags())
        == "AVX2 (capped by ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 CPU)"
    )
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert not hardware.native_bfloat16(hardware.cpu_flags())
    assert hardware.isa_label(hardware.cpu_flags()).startswith("AVX-512 (capped")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert hardware.native_bfloat16(hardware.cpu_flags())
    assert hardware.isa_label(hardware.cpu_flags()) == "AVX512-BF16"
    fake_cpu(AVX2_ONLY)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert hardware.isa_label(hardware.cpu_flags()) == "AVX2"
    assert hardware.isa_label(None) == "unknown"


def test_amx_is_its_own_level_and_a_cap_below_it_counts(fake_cpu, monkeypatch):
    """An AMX-BF16 CPU (Sapphire Rapids and later) is its own level: oneDNN runs bfloat16
    convolutions on AMX tiles there, with other kernels than AVX512-BF16's (issue 19)."""
    fake_cpu(AMX)
    assert hardware.isa_level(hardware.cpu_flags()) == "AMX-BF16"
    assert hardware.isa_label(hardware.cpu_flags()) == "AMX-BF16"
    assert hardware.native_bfloat16(hardware.cpu_flags())
    for cap, level in (
        ("AVX512_CORE_AMX", "AMX-BF16"),
        ("avx10_1_512_amx", "AMX-BF16"),
        ("AVX512_CORE_AMX_FP16", "AMX-BF16"),
        ("AVX10_1_512", "AVX512-BF16"),
        ("AVX512_CORE_BF16", "AVX512-BF16"),
        ("AVX512_CORE", "AVX-512"),
        ("AVX2", "AVX2"),
    ):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert hardware.isa_level(hardware.cpu_flags()) == level, cap
    assert (
        hardware.isa_label(hardware.cpu_flags())
        == "AVX2 (capped by ONEDNN_MAX_CPU_ISA=AVX2 on an AMX-BF16 CPU)"
    )
    # an AMX cap on a CPU without AMX does not raise it
    fake_cpu(AVX512_BF16)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert hardware.isa_level(hardware.cpu_flags()) == "AVX512-BF16"


def test_jax_without_a_gpu_is_told_that_tensorflow_trains_faster_on_cpus():
    note = hardware.slow_cpu_backend_note("jax", has_gpu=False)
    assert "KERAS_BACKEND=tensorflow" in note and "benchmarks/RESULTS.md" in note
    assert hardware.slow_cpu_backend_note("jax", has_gpu=True) is None
    assert hardware.slow_cpu_backend_note("tensorflow", has_gpu=False) is None


def test_the_trainings_say_the_backend_note_once_per_process(monkeypatch, capsys):
    from mtl_keras_app.workflow import training

    monkeypatch.setattr(training, "_said", set())
    monkeypatch.setattr(training, "slow_cpu_backend_note", lambda: "the note")
    training.say_backend_note(verbose=False)
    assert capsys.readouterr().out == ""
    training.say_backend_note(verbose=True)
    training.say_backend_note(verbose=True)
    assert capsys.readouterr().out == "the note\n"
