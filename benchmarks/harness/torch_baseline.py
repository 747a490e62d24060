"""The baseline: the official PyTorch MTL meta-train step, re-implemented faithfully.

Mirrors yaoyao-liu/meta-transfer-learning (``pytorch/models/conv2d_mtl.py``, ``resnet_mtl.py``,
``mtl.py``, ``trainer/meta.py``):

* `Conv2dMtl`: the frozen ``weight (Cout, Cin, k, k)`` times a per-kernel ``mtl_weight
  (Cout, Cin, 1, 1)`` (init 1) expanded over the kernel; bias ``bias + mtl_bias`` (a conv without
  Θ bias uses ``mtl_bias`` alone, init 0 — the shift Φ that `ScaleShiftConv2D` always has);
* `BaseLearner`: ``F.linear`` with ``fc1_w (N, D)`` Kaiming-normal and ``fc1_b`` zeros;
* `MtlLearner.meta_forward`: query images embedded, then support images (two encoder calls);
  ``update_step`` steps of ``torch.autograd.grad`` **without** ``create_graph`` (first order:
  the inner gradients are constants for the outer backward), the query logits after each step;
* `MetaTrainer.train`: query cross-entropy, ``Adam([{encoder Φ: lr 1e-4}, {head: lr 1e-3}])``,
  ``zero_grad() → backward() → step()``, one task per step.

Two deliberate departures, so that both sides compute the same function: the encoder is
*mtl_keras'* ResNet-12 (`mtl_keras.backbones.resnet12`: per block three 3×3 SS convs with BN and
LeakyReLU(0.1), a plain 1×1 residual conv + BN, max-pool 2; global average pool) rather than the
official 160-320-640 ResNet, and batch norm is frozen (``eval()`` mode, as mtl_keras' default)
where the official trainer leaves it in ``train()`` mode. Layout NCHW, as the official code.

Run as a benchmark worker by path (``python torch_baseline.py SPEC_JSON``), so that the process
imports neither TensorFlow nor mtl_keras; the driver talks to it with `worker_protocol`. The spec's
``device`` (default ``"cpu"``; ``"auto"``: CUDA when PyTorch sees a GPU) places the encoder, the
head and the episode there; on CUDA the worker reports its peak allocated GPU memory when it quits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

if __package__:
    from benchmarks.harness import worker_protocol
else:  # run by path: keep mtl_keras (and so TensorFlow) out of this process
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import worker_protocol


def build_encoder(channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512)):
    """The ResNet-12 encoder with `Conv2dMtl` layers, in ``eval()`` mode, Θ frozen."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Conv2dMtl(nn.Module):
        def __init__(self, cin, cout, kernel, bias=False):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel), requires_grad=False)
            nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
            self.mtl_weight = nn.Parameter(torch.ones(cout, cin, 1, 1))
            self.bias = nn.Parameter(torch.zeros(cout), requires_grad=False) if bias else None
            self.mtl_bias = nn.Parameter(torch.zeros(cout))
            self.padding = kernel // 2

        def forward(self, inp):
            new_weight = self.weight.mul(self.mtl_weight.expand(self.weight.shape))
            new_bias = self.mtl_bias if self.bias is None else self.bias + self.mtl_bias
            return F.conv2d(inp, new_weight, new_bias, 1, self.padding)

    def frozen_bn(width):
        bn = nn.BatchNorm2d(width, eps=1e-3)  # Keras' epsilon, so weights transfer exactly
        bn.weight.requires_grad = False
        bn.bias.requires_grad = False
        return bn

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.res_conv = nn.Conv2d(cin, cout, 1, bias=False)
            self.res_conv.weight.requires_grad = False
            self.res_bn = frozen_bn(cout)
            self.conv1, self.conv2, self.conv3 = (
                Conv2dMtl(cin, cout, 3),
                Conv2dMtl(cout, cout, 3),
                Conv2dMtl(cout, cout, 3),
            )
            self.bn1, self.bn2, self.bn3 = frozen_bn(cout), frozen_bn(cout), frozen_bn(cout)

        def forward(self, x):
            residual = self.res_bn(self.res_conv(x))
            out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
            out = F.leaky_relu(self.bn2(self.conv2(out)), 0.1)
            out = self.bn3(self.conv3(out))
            return F.max_pool2d(F.leaky_relu(out + residual, 0.1), 2)

    class ResNet12Mtl(nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [channels, *widths]
            self.blocks = nn.Sequential(*[Block(sizes[i], sizes[i + 1]) for i in range(len(widths))])

        def forward(self, x):
            return self.blocks(x).mean(dim=(2, 3))

    return ResNet12Mtl().eval()


def load_keras_weights(encoder, weights: dict[str, np.ndarray]) -> None:
    """Copy a Keras ResNet-12's weights (``{"block1_conv1/kernel": array, ...}``) into ``encoder``.

    Keys are ``layer_name/weight_name`` as in `mtl_keras.backbones.resnet12`; kernels are
    transposed from HWIO to OIHW and scales from ``(1, 1, Cin, Cout)`` to ``(Cout, Cin, 1, 1)``.
    """
    import torch

    def put(param, array):
        with torch.no_grad():
            param.copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))

    for b, block in enumerate(encoder.blocks, start=1):
        p = f"block{b}_"
        put(block.res_conv.weight, weights[p + "res_conv/kernel"].transpose(3, 2, 0, 1))
        for j in (1, 2, 3):
            conv = getattr(block, f"conv{j}")
            put(conv.weight, weights[p + f"conv{j}/kernel"].transpose(3, 2, 0, 1))
            put(conv.mtl_weight, weights[p + f"conv{j}/scale"].transpose(3, 2, 0, 1))
            put(conv.mtl_bias, weights[p + f"conv{j}/shift"])
        for name in ("res_bn", "bn1", "bn2", "bn3"):
            bn = getattr(block, name)
            put(bn.weight, weights[p + name + "/gamma"])
            put(bn.bias, weights[p + name + "/beta"])
            put(bn.running_mean, weights[p + name + "/moving_mean"])
            put(bn.running_var, weights[p + name + "/moving_variance"])


class MtlBaseline:
    """The official meta-train / meta-test step around an encoder.

    Args:
        encoder: from `build_encoder`.
        ways: ``N``; feature_dim: ``D`` (the encoder's output width).
        update_step: inner steps; update_lr: inner learning rate (official ``base_lr`` 0.01).
        meta_lr1, meta_lr2: Adam learning rates of Φ and of the head (official 1e-4, 1e-3).
        device: where the head is made (the encoder's device; the official code calls ``.cuda()``).
    """

    def __init__(
        self,
        encoder,
        ways: int,
        feature_dim: int,
        update_step: int,
        update_lr: float = 0.01,
        meta_lr1: float = 1e-4,
        meta_lr2: float = 1e-3,
        device=None,
    ):
        import torch
        from torch import nn

        self.encoder = encoder
        self.update_step = int(update_step)
        self.update_lr = float(update_lr)
        self.fc1_w = nn.Parameter(torch.ones([ways, feature_dim], device=device))
        nn.init.kaiming_normal_(self.fc1_w)
        self.fc1_b = nn.Parameter(torch.zeros(ways, device=device))
        self.base_vars = [self.fc1_w, self.fc1_b]
        self.optimizer = torch.optim.Adam(
            [
                {"params": [p for p in encoder.parameters() if p.requires_grad]},
                {"params": self.base_vars, "lr": meta_lr2},
            ],
            lr=meta_lr1,
        )

    def meta_forward(self, data_shot, label_shot, data_query):
        """``MtlLearner.meta_forward``: adapted query logits ``(N*Q, N)``."""
        import torch
        import torch.nn.functional as F

        embedding_query = self.encoder(data_query)
        embedding_shot = self.encoder(data_shot)
        logits = F.linear(embedding_shot, *self.base_vars)
        loss = F.cross_entropy(logits, label_shot)
        grad = torch.autograd.grad(loss, self.base_vars)
        fast_weights = [p - self.update_lr * g for g, p in zip(grad, self.base_vars)]
        logits_q = F.linear(embedding_query, *fast_weights)
        for _ in range(1, self.update_step):
            logits = F.linear(embedding_shot, *fast_weights)
            loss = F.cross_entropy(logits, label_shot)
            grad = torch.autograd.grad(loss, fast_weights)
            fast_weights = [p - self.update_lr * g for g, p in zip(grad, fast_weights)]
            logits_q = F.linear(embedding_query, *fast_weights)
        return logits_q

    def train_step(self, data_shot, label_shot, data_query, label_query) -> float:
        """One ``MetaTrainer.train`` iteration on one task; returns the query loss."""
        import torch.nn.functional as F

        logits = self.meta_forward(data_shot, label_shot, data_query)
        loss = F.cross_entropy(logits, label_query)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _episode(ways, shots, queries, image_size, channels, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    shot = torch.rand(ways * shots, channels, image_size, image_size, generator=gen)
    query = torch.rand(ways * queries, channels, image_size, image_size, generator=gen)
    # The official sampler's order: class-major labels arange(way).repeat(shot).
    label_shot = torch.arange(ways).repeat(shots)
    label_query = torch.arange(ways).repeat(queries)
    return shot, label_shot, query, label_query


def ceiling_steps(conv_shape=(128, 16, 128, 128), matmul_size: int = 2048) -> dict:
    """Steps timing a float32 matmul and 3×3 convolution with PyTorch (machine ceiling)."""
    import torch
    import torch.nn.functional as F

    a = torch.randn(matmul_size, matmul_size)
    batch, size, cin, cout = conv_shape
    x = torch.randn(batch, cin, size, size)
    k = torch.randn(cout, cin, 3, 3)
    return {
        "matmul_float32": lambda: torch.mm(a, a),
        "conv_float32": lambda: F.conv2d(x, k, padding=1),
    }


def build_steps(spec: dict) -> tuple:
    """The worker's steps for ``spec`` (kind ``train``, ``eval`` or ``ceiling``), its info and
    (``train``, ``eval``) a ``final()`` reporting, on CUDA, ``cuda_peak_bytes``
    (`torch.cuda.max_memory_allocated`)."""
    import torch

    threads = int(spec.get("threads", 2))
    torch.set_num_threads(threads)
    info = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    if spec["kind"] == "ceiling":
        return ceiling_steps(), info
    device = spec.get("device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    info["device"] = str(device)
    if device.type == "cuda":
        info.update(
            device_name=torch.cuda.get_device_name(device),
            cuda_version=torch.version.cuda,
            # float32 convolutions run on TF32 tensor cores where cuDNN may (PyTorch's default)
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    torch.manual_seed(spec.get("seed", 0))
    widths = tuple(spec["widths"])
    encoder = build_encoder(spec.get("channels", 3), widths).to(device)
    model = MtlBaseline(encoder, spec["ways"], widths[-1], update_step=spec["inner_steps"], device=device)
    shot, label_shot, query, label_query = (
        t.to(device)
        for t in _episode(
            spec["ways"],
            spec["shots"],
            spec["queries"],
            spec["image_size"],
            spec.get("channels", 3),
            spec.get("seed", 0),
        )
    )

    def final():
        return {"cuda_peak_bytes": torch.cuda.max_memory_allocated(device)} if device.type == "cuda" else {}

    if spec["kind"] == "train":  # the loss's float() waits for the GPU
        return {"step": lambda: model.train_step(shot, label_shot, query, label_query)}, info, final
    if spec["kind"] == "eval":
        # MetaTrainer.eval: the same meta_forward in eval mode (no torch.no_grad: the inner loop
        # needs autograd), accuracy read from the logits (on the host: waits for the GPU).
        def evaluate():
            return model.meta_forward(shot, label_shot, query).argmax(dim=1).cpu().numpy()

        return {"step": evaluate}, info, final
    raise ValueError(f"Unknown worker kind {spec['kind']!r}.")


def main(argv=None) -> None:
    worker_protocol.run_worker(build_steps, argv)


if __name__ == "__main__":
    main()
