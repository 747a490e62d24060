"""Evaluation's compiled functions are made once per model and shape, and follow the weights.

On JAX the weights are arguments of the compiled functions, not constants: a second evaluation
of the same model after training compiles nothing and computes with the new weights.
"""

import keras
import numpy as np
import pytest

from mtl_keras import MetaTransferModel, evaluate_episodes, evaluate_nearest_centroid, resnet12
from mtl_keras.evaluation import embed_split

#: Backend-agnostic: also run in the second pytest pass, on JAX (conftest.py).
pytestmark = pytest.mark.backends

_COMPILES = []  # the XLA compilations JAX reports (one entry each), for the JAX checks


def _count_compiles():
    """A function returning how many XLA compilations have run since this call (JAX only)."""
    import jax

    if not _COMPILES:
        _COMPILES.append(0)

        def listener(event, duration, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                _COMPILES[0] += 1

        jax.monitoring.register_event_duration_secs_listener(listener)
    start = _COMPILES[0]
    return lambda: _COMPILES[0] - start


def _model(batch_norm="frozen"):
    return MetaTransferModel(
        resnet12((16, 16, 1), widths=(4, 8, 8, 8)),
        ways=4,
        inner_steps=2,
        eval_inner_steps=4,
        inner_lr=0.5,
        batch_norm=batch_norm,
    )


def _new_weights(model, seed):
    """Every weight of ``model`` changed (batch norm's statistics and the head included)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = np.asarray(variable)
        if not np.issubdtype(value.dtype, np.floating) or not value.size:
            continue
        changed = value * rng.uniform(0.7, 1.3, value.shape)
        if "variance" not in variable.path:
            changed = changed + 0.1 * rng.normal(size=value.shape)
        variable.assign(changed.astype(value.dtype))


def _fresh_copy(model, batch_norm="frozen"):
    copy = _model(batch_norm)
    copy.set_weights(model.get_weights())
    return copy


@pytest.mark.parametrize("batch_norm", ["frozen", "transductive"])
def test_a_second_evaluation_with_new_weights_compiles_nothing_and_uses_them(proto_split, batch_norm):
    model = _model(batch_norm)
    kwargs = dict(ways=4, shots=2, queries=3, episodes=6, meta_batch_size=3, seed=2, verbose=False)
    first = evaluate_episodes(model, proto_split, **kwargs)
    _new_weights(model, seed=1)
    on_jax = keras.backend.backend() == "jax"
    compiles = _count_compiles() if on_jax else None
    second = evaluate_episodes(model, proto_split, **kwargs)
    if on_jax:
        assert compiles() == 0
    fresh = evaluate_episodes(_fresh_copy(model, batch_norm), proto_split, **kwargs)
    assert not np.allclose(second.per_step_support_loss, first.per_step_support_loss)
    np.testing.assert_allclose(second.per_step_support_loss, fresh.per_step_support_loss, rtol=1e-5)
    np.testing.assert_allclose(second.episode_accuracies, fresh.episode_accuracies, atol=1e-6)
    assert second.query_loss == pytest.approx(fresh.query_loss, rel=1e-5)


def test_a_second_embedding_with_new_weights_compiles_nothing_and_uses_them(proto_split):
    model = _model()
    before = embed_split(model, proto_split, batch_size=40)
    mean = before.mean(axis=0)
    evaluate_nearest_centroid(model, proto_split, 4, 2, 3, episodes=4, mean_feature=mean)
    _new_weights(model, seed=3)
    on_jax = keras.backend.backend() == "jax"
    compiles = _count_compiles() if on_jax else None
    after = embed_split(model, proto_split, batch_size=40)
    centroid = evaluate_nearest_centroid(model, proto_split, 4, 2, 3, episodes=4, mean_feature=mean)
    if on_jax:
        assert compiles() == 0
    fresh = _fresh_copy(model)
    np.testing.assert_allclose(after, embed_split(fresh, proto_split, batch_size=40), rtol=1e-5, atol=1e-6)
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(
        centroid.episode_accuracies,
        evaluate_nearest_centroid(
            fresh, proto_split, 4, 2, 3, episodes=4, mean_feature=mean
        ).episode_accuracies,
    )


def test_a_backbone_is_embedded_with_its_current_weights(proto_split):
    backbone = resnet12((16, 16, 1), widths=(4, 4, 4, 4))
    before = embed_split(backbone, proto_split)
    for variable in backbone.trainable_variables:
        variable.assign(np.asarray(variable) * 1.5 + 0.05)
    after = embed_split(backbone, proto_split)
    expected = np.asarray(backbone(proto_split.images.astype("float32") / 255.0, training=False))
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)


def test_the_compiled_functions_keep_no_model_alive(proto_split):
    import gc
    import weakref

    from mtl_keras import evaluation

    model = _model()
    evaluate_episodes(model, proto_split, 4, 1, 2, episodes=2, verbose=False)
    assert model in evaluation._COMPILED
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
