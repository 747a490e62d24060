"""Analytic FLOP counts of the ResNet-12 meta-train and evaluation steps.

Only convolutions and the inner loop's matrix products are counted (one multiply-add = 2 FLOPs);
batch norm, activations, pooling and the optimizer update are memory-bound and left out, so the
achieved GFLOP/s derived from these counts is a *lower* bound of the machine's arithmetic rate.

For a convolution with output ``H×W×Cout``, kernel ``k×k`` and ``Cin`` input channels the forward
pass costs ``2·H·W·k²·Cin·Cout`` per image; the gradient with respect to its input (``dX``) and
with respect to its kernel (``dW``) cost the same each. A meta-transfer step needs:

* ``dX`` of every convolution except those reading the images (nothing upstream trains);
* ``dW`` of every `ScaleShiftConv2D` (the gradient of the scale Φ is ``Σ_kernel dW ⊙ Θ``), and
  no ``dW`` of the frozen 1×1 residual convolutions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """One convolution of the backbone: output size, kernel, channels, role."""

    height: int
    width: int
    kernel: int
    cin: int
    cout: int
    scale_shift: bool  # a ScaleShiftConv2D (Φ trains) rather than the frozen residual Conv2D
    reads_images: bool  # its input is the image batch (no dX needed)

    @property
    def flops(self) -> int:
        """Forward FLOPs per image (= dX FLOPs = dW FLOPs)."""
        return 2 * self.height * self.width * self.kernel**2 * self.cin * self.cout


def resnet12_convs(image_size: int, channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512)):
    """The 16 convolutions of `mtl_keras.backbones.resnet12` at ``image_size``×``image_size``."""
    convs, size, cin = [], int(image_size), int(channels)
    for block, width in enumerate(widths):
        first = block == 0
        convs.append(ConvShape(size, size, 1, cin, width, scale_shift=False, reads_images=first))
        convs.append(ConvShape(size, size, 3, cin, width, scale_shift=True, reads_images=first))
        convs.append(ConvShape(size, size, 3, width, width, scale_shift=True, reads_images=False))
        convs.append(ConvShape(size, size, 3, width, width, scale_shift=True, reads_images=False))
        cin, size = width, size // 2  # max-pool 2, "valid": floor
    return convs


def forward_flops(convs) -> int:
    """Forward FLOPs of one image."""
    return sum(c.flops for c in convs)


def backward_flops(convs) -> int:
    """Backward FLOPs of one image when only Φ trains (dX where needed, dW of SS convs)."""
    dx = sum(c.flops for c in convs if not c.reads_images)
    dw = sum(c.flops for c in convs if c.scale_shift)
    return dx + dw


def inner_loop_flops(support: int, query: int, dim: int, ways: int, steps: int, query_each_step: bool) -> int:
    """Forward FLOPs of ``steps`` inner steps of one task (logits and closed-form gradient)."""
    per_step = 4 * support * dim * ways + (2 * query * dim * ways if query_each_step else 0)
    return steps * per_step + 2 * query * dim * ways


def step_flops(
    impl: str,
    mode: str,
    image_size: int,
    shots: int,
    meta_batch: int,
    inner_steps: int,
    ways: int = 5,
    queries: int = 15,
    channels: int = 3,
    widths: Sequence[int] = (64, 128, 256, 512),
    first_order: bool = False,
) -> int:
    """FLOPs *executed* by one step of ``impl`` (``"mtl_keras"`` or ``"torch"``).

    ``mode="train"``: one meta-train step. mtl_keras (exact second order) back-propagates through
    every support and query image of its ``meta_batch`` tasks and through the inner loop (counted
    as twice its forward). The PyTorch baseline (first order, one task) back-propagates through the
    query images only: its inner gradients are detached, so nothing reaches the support path.
    mtl_keras with ``first_order=True`` (``stop_gradient`` on the inner gradients) does the same
    for each of its tasks (its inner loop without the per-step query logits).

    ``mode="eval"``: adapt ``meta_batch`` tasks (``inner_steps`` steps) and classify the queries,
    forward only.
    """
    convs = resnet12_convs(image_size, channels, widths)
    support, query = ways * shots, ways * queries
    dim = widths[-1]
    fwd, bwd = forward_flops(convs), backward_flops(convs)
    tasks = meta_batch if impl == "mtl_keras" else 1
    loop = inner_loop_flops(
        support, query, dim, ways, inner_steps, query_each_step=(impl == "torch" or mode == "eval")
    )
    if mode == "eval":
        return tasks * ((support + query) * fwd + loop)
    if mode != "train":
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}.")
    if impl == "mtl_keras" and first_order:
        return tasks * ((support + query) * fwd + query * bwd + loop)
    if impl == "mtl_keras":
        return tasks * ((support + query) * (fwd + bwd) + 3 * loop)
    if impl == "torch":
        return (support + query) * fwd + query * bwd + loop
    raise ValueError(f"impl must be 'mtl_keras' or 'torch', got {impl!r}.")
