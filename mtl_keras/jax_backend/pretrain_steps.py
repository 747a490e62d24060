"""`PretrainModel`'s steps on JAX: Keras's own stateless steps, compiled with ``jax.jit`` also when
the model holds Keras's random affine image layers.

Those layers (`keras.layers.RandomTranslation`, `RandomZoom`, `RandomRotation`, `RandomShear`,
`RandomPerspective`) set ``supports_jit = False``, and Keras resolves ``jit_compile="auto"`` (and
refuses ``jit_compile=True``) to False for a model holding one, on every backend: on JAX the
whole training step then ran op by op, about 8× slower than compiled (16×16 glyphs, ResNet-12
8-8-8-8, batch 128). Their JAX implementations compile under ``jax.jit`` and draw a new
transform at every step (the seed generators' states travel in the step's non-trainable state).
"""

from __future__ import annotations

import contextlib

import keras

from mtl_keras import keras_private

#: Keras layers that declare ``supports_jit = False`` but run under ``jax.jit`` on JAX.
#: (`keras.layers.RandomCrop` does not: it slices at traced offsets.)
JIT_SAFE_ON_JAX = (
    keras.layers.RandomTranslation,
    keras.layers.RandomZoom,
    keras.layers.RandomRotation,
    keras.layers.RandomShear,
    keras.layers.RandomPerspective,
)


class JaxPretrainSteps:
    """On JAX: Keras's own steps; `compile` lets ``jit_compile`` ("auto", the default, or True)
    compile a model whose only layers without ``supports_jit`` are `JIT_SAFE_ON_JAX`."""

    def compile(self, *args, **kwargs):
        with _jit_safe_layers_allowed(self):
            super().compile(*args, **kwargs)


@contextlib.contextmanager
def _jit_safe_layers_allowed(model):
    """``supports_jit`` set on ``model``'s `JIT_SAFE_ON_JAX` layers while Keras decides
    ``jit_compile``; each layer's own value back afterwards."""
    layers = [
        layer
        for layer in keras_private.all_layers(model)
        if isinstance(layer, JIT_SAFE_ON_JAX) and not layer.supports_jit
    ]
    for layer in layers:
        layer.supports_jit = True
    try:
        yield
    finally:
        for layer in layers:
            layer.supports_jit = False
