"""Shared test helpers: the layer test (after keras-hub's `TestCase.run_layer_test`), the model
test (`run_model_test`: config, fit step, ``.keras`` and export round trips), and
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


def run_model_test(model, data, tmp_path, *, frozen=None, trained=None, tol=1e-6, export_tol=5e-5):
    """Check a built, compiled `MetaTransferModel` or `PretrainModel` end to end.

    ``data`` is one ``(inputs, labels)`` batch: for a `MetaTransferModel` one meta-batch of
    `mtl_keras.data.make_episodes` (inputs a dict), for a `PretrainModel` ``(images, labels)``.
    Every output comparison is on ``model(inputs)`` (``training=False``) of this batch.

    Checks, in this order:

    1. config: ``from_config(get_config())`` builds a model whose config is the same and which,
       given the same weights (``set_weights``), gives the same outputs (``tol``, relative and
       absolute);
    2. one ``fit`` step on ``data``: every ``frozen`` variable is bit-identical afterwards, every
       ``trained`` variable changed, the loss (and any other log) is finite, each optimizer
       took exactly one step. Defaults: for a `MetaTransferModel` Θ
       (`mtl_keras.layers.theta_weights`: every backbone weight that is not Φ, BN statistics
       included) frozen, Φ (scales and shifts) and the head initialisation ``(W0, b0)`` trained;
       for a `PretrainModel` Φ frozen (at its pretrain value) and every trainable weight trained;
    3. ``.keras`` save / `keras.saving.load_model` (after the fit step): the same class, the same
       weights bit for bit, the same trainable weights (the phase survives), both optimizers'
       state bit for bit, and the same outputs (``tol``);
    4. ``model.export`` loaded with `tf.saved_model.load`: a `MetaTransferModel`'s
       ``adapt_and_classify`` signature gives task 0's query logits (``export_tol``: the graph
       rounds differently from eager calls, 1.2e-5 seen on logits ≈ 4) and probabilities that
       sum to 1; a `PretrainModel`'s Keras ``serve`` endpoint gives its outputs.

    Returns the reloaded model.
    """
    import tensorflow as tf

    from mtl_keras import MetaTransferModel
    from mtl_keras.layers import phi_weights, theta_weights

    inputs, labels = data
    meta = isinstance(model, MetaTransferModel)
    optimizers = [model.optimizer] + ([model.head_optimizer] if meta else [])
    assert all(opt is not None for opt in optimizers), "compile the model before run_model_test"
    if frozen is None:
        frozen = theta_weights(model.backbone) if meta else phi_weights(model.backbone)
    if trained is None:
        trained = phi_weights(model.backbone) + list(model.head.weights) if meta else model.trainable_weights
    assert frozen and trained, "nothing to check: no frozen or no trained variables"
    assert not {id(v) for v in frozen} & {id(v) for v in trained}, "a variable is both frozen and trained"

    def outputs(m):
        return np.asarray(m(inputs))

    def close(actual, expected, what, tol=tol):
        np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)

    # 1. Config round trip.
    config = model.get_config()
    clone = type(model).from_config(config)  # leaves ``config`` intact (tested in test_model_harness)
    assert clone.get_config() == config, "get_config/from_config do not round-trip"
    assert [v.shape for v in clone.weights] == [v.shape for v in model.weights], "config: other weights"
    clone.set_weights(model.get_weights())
    close(outputs(clone), outputs(model), "from_config + set_weights: other outputs")
    del clone

    # 2. One fit step.
    frozen_before = [np.array(v) for v in frozen]
    trained_before = [np.array(v) for v in trained]
    steps_before = [int(opt.iterations) for opt in optimizers]
    history = model.fit(tf.data.Dataset.from_tensors((inputs, labels)), epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])), f"fit: non-finite loss {history.history['loss']}"
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), f"fit logged a non-finite {name}: {values}"
    for before, v in zip(frozen_before, frozen):
        np.testing.assert_array_equal(np.array(v), before, err_msg=f"fit changed frozen {v.path}")
    unchanged = [v.path for before, v in zip(trained_before, trained) if np.array_equal(np.array(v), before)]
    assert not unchanged, f"fit left trained variables unchanged: {unchanged}"
    assert [int(opt.iterations) for opt in optimizers] == [s + 1 for s in steps_before], "not one step"
    expected = outputs(model)

    # 3. .keras save / load.
    os.makedirs(tmp_path, exist_ok=True)
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model), type(loaded)
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights], "reload: other weights"
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=f"reload changed {b.path}")
    trainable = [v.path for v in model.trainable_weights]
    assert [v.path for v in loaded.trainable_weights] == trainable, "reload: other trainable weights"
    loaded_optimizers = [loaded.optimizer] + ([loaded.head_optimizer] if meta else [])
    for got, want in zip(loaded_optimizers, optimizers):
        assert got is not None and len(got.variables) == len(want.variables), "reload lost an optimizer"
        for a, b in zip(got.variables, want.variables):
            np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=f"reload: optimizer {b.path}")
    close(outputs(loaded), expected, ".keras reload: other outputs")

    # 4. Export.
    folder = os.path.join(str(tmp_path), "exported")
    model.export(folder, verbose=False)
    exported = tf.saved_model.load(folder)  # held: the endpoints' variables die with it
    if meta:
        task = {key: tf.convert_to_tensor(inputs[key])[0] for key in ("support_images", "query_images")}
        task["support_labels"] = tf.cast(tf.convert_to_tensor(inputs["support_labels"])[0], tf.int32)
        result = exported.signatures["adapt_and_classify"](**task)
        close(result["logits"].numpy(), expected[0], "export: other query logits", export_tol)
        close(result["probabilities"].numpy().sum(-1), np.ones(len(expected[0])), "export: probabilities")
    else:
        served = exported.serve(tf.convert_to_tensor(inputs))
        close(np.asarray(served), expected, "export: serve gives other outputs", export_tol)
    return loaded


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
