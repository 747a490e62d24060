"""The up-front memory check on GPUs: `nvidia-smi` totals, and one replica's share of the
meta-batch against the smallest GPU. No GPU here: the device list and `nvidia-smi` are faked."""

from __future__ import annotations

import os
import stat

import pytest

from mtl_keras import MetaTransferModel, make_episodes, resnet12
from mtl_keras.tensorflow_backend import memory


def _fake_nvidia_smi(folder, mib):
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {m}\n" for m in mib))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_gpu_memory_reads_nvidia_smi_and_follows_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, [16384, 8192]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert memory.gpu_memory() == [16384 * 2**20, 8192 * 2**20]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert memory.gpu_memory() == [8192 * 2**20]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert memory.gpu_memory() is None


def test_a_step_too_large_for_the_gpu_is_rejected_before_training(proto_split, monkeypatch):
    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=3, inner_steps=2)
    model.compile()
    episodes = make_episodes(proto_split, 3, 1, 2, meta_batch_size=2, seed=0)
    real = memory.tf.config.list_logical_devices
    monkeypatch.setattr(
        memory.tf.config,
        "list_logical_devices",
        lambda kind=None: ["/gpu:0"] if kind == "GPU" else real(kind),
    )
    monkeypatch.setattr(memory, "available_memory", lambda: 2**40)  # RAM is not what counts on a GPU
    monkeypatch.setattr(memory, "gpu_memory", lambda: [2**40, 2**20])  # the smallest GPU: 1 MB
    with pytest.raises(
        MemoryError,
        match=r"\(2 of the 2 tasks per replica x 9 images of 16x16x1.*"
        r"smallest GPU's memory",
    ):
        model.fit(episodes, steps_per_epoch=1, epochs=1, verbose=0)
    assert model.optimizer.iterations.numpy() == 0
    monkeypatch.setattr(memory, "gpu_memory", lambda: [2**40])
    memory.check_training_memory(model, episodes)  # enough: no error
    monkeypatch.setattr(memory, "gpu_memory", lambda: None)  # unknown: no check
    memory.check_training_memory(model, episodes)
    assert os.environ.get(memory.SKIP_ENV) != "1"
