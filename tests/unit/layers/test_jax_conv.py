"""`mtl_keras.jax_backend.conv`: on JAX on a CPU, `conv2d`'s kernel gradient is one im2col matrix
product (XLA:CPU's own ran 2-5x slower on 16×16 and 32×32 maps), equal to XLA's gradient, and
only where it pays: stride 1, ``"same"``, odd kernels, maps of 16 pixels a side or more, a CPU."""

import keras
import numpy as np
import pytest

pytestmark = [
    pytest.mark.backends,
    pytest.mark.skipif(
        keras.backend.backend() != "jax", reason="the JAX backend's kernel (runs in the JAX pass)"
    ),
]


def _arrays(shape, kernel_size, cout, seed=0):
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(shape, np.float32))
    w = jnp.asarray(rng.standard_normal((*kernel_size, shape[-1], cout), np.float32) * 0.3)
    return x, w, jnp.asarray(rng.standard_normal(cout, np.float32))


def _lax_conv(x, w):
    import jax

    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize(
    "shape, kernel_size, cout, max_elements",
    [
        ((3, 16, 16, 5), (3, 3), 7, None),
        ((2, 20, 17, 4), (5, 3), 6, None),
        ((5, 16, 16, 3), (1, 1), 4, None),
        ((5, 16, 16, 3), (3, 3), 4, 1000),  # the batch split into slices (5 of one image each)
    ],
)
def test_the_im2col_kernel_gradient_equals_xlas(shape, kernel_size, cout, max_elements, monkeypatch):
    import jax
    import jax.numpy as jnp

    from mtl_keras.jax_backend import conv as jax_conv
    from mtl_keras.layers.conv import conv2d

    if max_elements is not None:
        monkeypatch.setattr(jax_conv, "IM2COL_MAX_ELEMENTS", max_elements)
    x, w, b = _arrays(shape, kernel_size, cout)
    assert jax_conv.im2col_applies(x, w, (1, 1), "same", (1, 1))

    def ours(x, w, b):
        return jnp.sum(jnp.sin(conv2d(x, w, b)))

    def xla(x, w, b):
        return jnp.sum(jnp.sin(_lax_conv(x, w) + b))

    np.testing.assert_allclose(ours(x, w, b), xla(x, w, b), rtol=1e-6)
    for got, want in zip(jax.grad(ours, (0, 1, 2))(x, w, b), jax.grad(xla, (0, 1, 2))(x, w, b)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(want))))
    # Second order (MTL's meta-gradient differentiates gradients): the input gradient's own
    # gradient with respect to the kernel.
    second = [jax.grad(lambda w, f=f: jnp.sum(jax.grad(f)(x, w, b) ** 2))(w) for f in (ours, xla)]
    np.testing.assert_allclose(
        second[0], second[1], rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(second[1])))
    )


def test_conv2d_takes_the_im2col_gradient_on_a_cpu_and_xlas_elsewhere(monkeypatch):
    import jax

    from mtl_keras.jax_backend import conv as jax_conv
    from mtl_keras.layers.conv import conv2d

    x, w, b = _arrays((2, 16, 16, 3), (3, 3), 4)
    applies = jax_conv.im2col_applies
    assert applies(x, w, (1, 1), "same", (1, 1))
    small, _, _ = _arrays((2, 8, 8, 3), (3, 3), 4)
    assert not applies(small, w, (1, 1), "same", (1, 1))  # below IM2COL_MIN_SIDE: XLA is as fast
    assert not applies(x, w, (2, 2), "same", (1, 1))
    assert not applies(x, w, (1, 1), "valid", (1, 1))
    assert not applies(x, w, (1, 1), "same", (2, 2))
    _, even, _ = _arrays((2, 16, 16, 3), (2, 2), 4)
    assert not applies(x, even, (1, 1), "same", (1, 1))
    grouped = w[:, :, :1, :]  # kernel_in 1 of 3 input channels: a grouped convolution
    assert not applies(x, grouped, (1, 1), "same", (1, 1))

    def uses_custom_vjp():
        jaxpr = jax.make_jaxpr(lambda x, w, b: conv2d(x, w, b))(x, w, b)
        return "custom_vjp_call" in str(jaxpr)

    assert uses_custom_vjp()
    # Placed on a GPU, XLA's (cuDNN's) own gradients run: the plan is for CPUs only.
    monkeypatch.setattr(jax_conv.jax, "default_backend", lambda: "gpu")
    assert not applies(x, w, (1, 1), "same", (1, 1))
    assert not uses_custom_vjp()
