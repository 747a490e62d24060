"""JAX kernel of `mtl_keras.layers.conv.conv2d` on CPUs: the filter gradient as one matrix product.

XLA:CPU computes the kernel's gradient ``∂L/∂W`` of a stride-1 ``"same"`` convolution (what the
scales Φ1 and pretraining need) slowly on large maps: 3–4 GFLOP/s for 160 images of 32×32×64 →
64, on one core, and 10–15 at 16×16 on a 2-core AVX2 CPU (``benchmarks/RESULTS.md``, "The kernel
gradient as one im2col product on JAX CPUs"). The same product written as im2col patches times
``∂L/∂Y`` — one `einsum`, XLA's matmul path — ran 3–5× faster at 32×32 and 2× at 16×16; on 8×8 and
smaller maps the two are even. The meta-training step went from 0.49× to 0.90× the TensorFlow
backend's tasks/s there, for about 1.3 GiB more peak memory. So on a CPU,
for maps of at least `IM2COL_MIN_SIDE` pixels a side, `conv2d` runs the convolution with that
filter gradient (the input gradient stays XLA's); on a GPU XLA's (cuDNN's) own gradients run.
Imported only on the JAX backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Smallest map side (pixels) where the im2col filter gradient is used: below it XLA's own
#: kernel is as fast (8×8×256 and 4×4×512: 0.97–1.03×).
IM2COL_MIN_SIDE = 16

#: Most float32 elements of im2col patches built at once (256 MiB): a larger batch is split into
#: equal slices whose products are summed.
IM2COL_MAX_ELEMENTS = 64 * 2**20

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def im2col_applies(inputs, kernel, strides, padding, dilation_rate) -> bool:
    """Whether `conv2d` on JAX takes the im2col filter gradient: a CPU device, stride 1, no
    dilation, ``"same"`` padding, an odd kernel, no groups, known map sides of at least
    `IM2COL_MIN_SIDE`."""
    if jax.default_backend() != "cpu":
        return False
    if tuple(strides) != (1, 1) or tuple(dilation_rate) != (1, 1) or padding.lower() != "same":
        return False
    kh, kw, kernel_in = kernel.shape[0], kernel.shape[1], kernel.shape[2]
    if kh % 2 == 0 or kw % 2 == 0 or kernel_in != inputs.shape[-1]:
        return False
    h, w = inputs.shape[1], inputs.shape[2]
    return h is not None and w is not None and min(h, w) >= IM2COL_MIN_SIDE


def _conv(inputs, kernel):
    return jax.lax.conv_general_dilated(inputs, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSIONS)


def im2col_filter_gradient(inputs, out_grad, kernel_size):
    """``∂L/∂W`` of a stride-1 ``"same"`` convolution as patches times ``∂L/∂Y``.

    Args:
        inputs: ``(N, H, W, Cin)``, the convolution's input.
        out_grad: ``(N, H, W, Cout)``, ``∂L/∂output``.
        kernel_size: ``(kh, kw)``, both odd.

    Returns:
        ``(kh, kw, Cin, Cout)`` float32 (accumulated in float32 whatever the inputs' dtype).
    """
    kh, kw = kernel_size
    n, h, w, cin = inputs.shape
    padded = jnp.pad(inputs, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    # A symbolic batch (a `jax2tf` export's polymorphic shape) is not split.
    known = isinstance(n, int)
    slices = max(1, -(-(n * h * w * kh * kw * cin) // IM2COL_MAX_ELEMENTS)) if known else 1
    size = -(-n // slices) if known else n
    total = None
    for start in range(0, n, size) if known else (0,):
        part, grad = (
            (padded[start : start + size], out_grad[start : start + size]) if known else (padded, out_grad)
        )
        patches = jnp.stack(
            [part[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)], axis=3
        )  # (n', H, W, kh·kw, Cin)
        product = jnp.einsum("nhwtc,nhwo->tco", patches, grad, preferred_element_type=jnp.float32)
        total = product if total is None else total + product
    return total.reshape(kh, kw, cin, out_grad.shape[-1])


@jax.custom_vjp
def conv_im2col_gradient(inputs, kernel):
    """``conv(inputs, kernel)`` (NHWC, HWIO, stride 1, ``"same"``) whose kernel gradient is
    `im2col_filter_gradient`; the input gradient is XLA's.

    Args:
        inputs: ``(N, H, W, Cin)``.
        kernel: ``(kh, kw, Cin, Cout)``, both odd, the dtype of ``inputs``.

    Returns:
        ``(N, H, W, Cout)``.
    """
    return _conv(inputs, kernel)


def _forward(inputs, kernel):
    return _conv(inputs, kernel), (inputs, kernel)


def _backward(saved, out_grad):
    inputs, kernel = saved
    input_grad = jax.vjp(lambda x: _conv(x, kernel), inputs)[1](out_grad)[0]
    kernel_grad = im2col_filter_gradient(inputs, out_grad, kernel.shape[:2]).astype(kernel.dtype)
    return input_grad, kernel_grad


conv_im2col_gradient.defvjp(_forward, _backward)
