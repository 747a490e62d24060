"""A model built under ``mixed_bfloat16`` on a CPU that would emulate bfloat16 says so at
``compile``, however it was built (not only through the workflow's precision check)."""

import warnings

import keras
import numpy as np
import pytest

from mtl_keras import MetaTransferModel, PretrainModel, episode_source, hardware, resnet12

AVX2_ONLY = {"avx2", "fma", "sse4_2"}


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture
def avx2_cpu(monkeypatch):
    monkeypatch.delenv(hardware.ALLOW_EMULATED_BF16, raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda path=None: set(AVX2_ONLY))
    monkeypatch.setattr(hardware, "_has_gpu", lambda: False)


@pytest.mark.backends
def test_a_notebook_meta_training_in_emulated_bfloat16_is_warned(bfloat16_policy, avx2_cpu, proto_split):
    model = MetaTransferModel(
        resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=4, inner_steps=2, eval_inner_steps=2
    )
    with pytest.warns(
        UserWarning, match=r"MetaTransferModel.compile: the dtype policy is mixed_bfloat16.*emulated"
    ):
        model.compile(phi_learning_rate=1e-3, head_learning_rate=1e-3)
    history = model.fit(
        episode_source(proto_split, 4, 1, 2, meta_batch_size=1, num_batches=1),
        epochs=1,
        verbose=0,
        shuffle=False,
    )
    assert np.isfinite(history.history["loss"][0])  # warned, not refused


@pytest.mark.backends
def test_a_pretraining_in_emulated_bfloat16_is_warned(bfloat16_policy, avx2_cpu):
    model = PretrainModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), 5)
    with pytest.warns(UserWarning, match=r"PretrainModel.compile: the dtype policy is mixed_bfloat16"):
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


@pytest.mark.backends
@pytest.mark.parametrize(
    "policy, flags, gpu, allow",
    [
        ("float32", AVX2_ONLY, False, None),  # nothing to warn about
        ("mixed_bfloat16", AVX2_ONLY | {"avx512_bf16"}, False, None),  # native bfloat16
        ("mixed_bfloat16", AVX2_ONLY | {"amx_bf16"}, False, None),
        ("mixed_bfloat16", AVX2_ONLY, True, None),  # a GPU computes it
        ("mixed_bfloat16", AVX2_ONLY, False, "1"),  # the user insists
    ],
)
def test_no_warning_where_bfloat16_is_native_or_wanted(monkeypatch, policy, flags, gpu, allow):
    if allow is None:
        monkeypatch.delenv(hardware.ALLOW_EMULATED_BF16, raising=False)
    else:
        monkeypatch.setenv(hardware.ALLOW_EMULATED_BF16, allow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hardware.warn_if_emulated_bfloat16(policy, "here", flags=flags, has_gpu=gpu) is False
