"""Shared test helpers: the layer/model test (after keras-hub's `TestCase.run_layer_test`), and
Python-2-style pickles for the dataset-loader fixtures."""

from __future__ import annotations

import io
import os
import pickle
import struct

import keras
import numpy as np

#: Subprocess time limits in the tests are guards against hangs, not speed checks: scaled by
#: ``$MTL_KERAS_TEST_TIMEOUT_SCALE`` (default 4), so that a machine busy with other jobs (a
#: fresh-clone run once took 31 minutes instead of 10) does not fail them.
TIMEOUT_SCALE = float(os.environ.get("MTL_KERAS_TEST_TIMEOUT_SCALE", "4"))


def patient(seconds: float) -> float:
    """A subprocess time limit of ``seconds`` on a quiet machine, scaled by `TIMEOUT_SCALE`."""
    return seconds * TIMEOUT_SCALE


def run_layer_test(
    layer_cls,
    init_kwargs: dict,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights: int,
    expected_num_non_trainable_weights: int = 0,
    tmp_path=None,
    run_fit: bool = True,
):
    """Check a layer end to end and return the built layer.

    Checks: config round trip; symbolic call shape; eager call shape and
    ``compute_output_shape``; weight counts; one ``fit`` step on a tiny model;
    ``.keras`` save/reload gives the same outputs (``assertAllClose`` at 1e-6).
    """
    layer = layer_cls(**init_kwargs)
    # Config round trip.
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config, "get_config/from_config do not round-trip"
    # Symbolic call.
    sym = keras.Input(shape=input_data.shape[1:], batch_size=input_data.shape[0])
    out = layer(sym)
    assert tuple(out.shape) == tuple(expected_output_shape), (out.shape, expected_output_shape)
    # Eager call and compute_output_shape.
    y = layer(input_data)
    assert tuple(y.shape) == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(input_data.shape)) == tuple(expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    # One fit step.
    model = keras.Sequential([keras.Input(shape=input_data.shape[1:]), layer])
    if run_fit and expected_num_trainable_weights:
        model.compile("sgd", "mse")
        before = [np.array(w) for w in layer.trainable_weights]
        model.fit(input_data, np.ones_like(np.asarray(y)), epochs=1, verbose=0)
        after = [np.array(w) for w in layer.trainable_weights]
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "fit moved no weight"
    # .keras save/reload.
    if tmp_path is not None:
        path = os.path.join(str(tmp_path), "layer_model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(np.asarray(reloaded(input_data)), np.asarray(model(input_data)), atol=1e-6)
    return layer


def randomise_backbone(backbone, rng):
    """Give a backbone's batch norms and scale/shift (Φ) random non-trivial values, in place."""
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        elif hasattr(layer, "scale") and hasattr(layer, "shift"):
            layer.scale.assign(rng.uniform(0.8, 1.2, layer.scale.shape).astype("float32"))
            layer.shift.assign(rng.normal(0, 0.1, layer.shift.shape).astype("float32"))
    return backbone


def calibrate_batch_norm(model, images):
    """Set every batch norm's moving statistics to its batch statistics on ``images``, in place.

    A randomly initialised ``keras.applications`` model (``weights=None``) has moving mean 0
    and variance 1, so in inference mode its activations and gradients vanish with depth
    (≈1e-19 at MobileNetV2's output); after this it behaves like a pretrained model.
    """
    norms = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    model(images, training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


class _Py2Pickler(pickle._Pickler):
    """Writes every str and bytes as a Python 2 byte string (SHORT_BINSTRING / BINSTRING)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_byte_string(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_byte_string
    dispatch[bytes] = _save_byte_string


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.", b"numpy.core.")  # NumPy 1's module path
