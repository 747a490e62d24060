"""The head's options beyond the paper: a prototype start, cosine logits, a normalised inner step."""

import keras
import numpy as np
import pytest

from mtl_keras import MetaTransferModel, evaluate_episodes, resnet12
from mtl_keras.evaluation import embed_split, evaluate_nearest_centroid
from mtl_keras.models.base_learner import head_logits, inner_loop, prototype_head

pytestmark = pytest.mark.backends


def _task(batch=3, ways=4, shots=3, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(batch, ways * shots, dim)).astype("float32")
    labels = np.tile(np.repeat(np.arange(ways), shots), (batch, 1)).astype("int32")
    query = rng.normal(size=(batch, 10, dim)).astype("float32")
    return feats, labels, query


def test_prototype_head_ranks_classes_by_distance_to_the_class_means():
    feats, labels, query = _task()
    weights, bias = prototype_head(feats, labels, 4)
    logits = keras.ops.convert_to_numpy(head_logits(query, weights, bias))
    centroids = feats.reshape(3, 4, 3, 6).mean(axis=2)
    distances = ((query[:, :, None] - centroids[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(logits, -distances + (query**2).sum(-1)[..., None], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(logits.argmax(-1), distances.argmin(-1))


def test_normalised_inner_step_makes_the_adapted_logits_independent_of_the_feature_scale():
    feats, labels, query = _task()
    w0, b0 = np.zeros((6, 4), "float32"), np.zeros((4,), "float32")

    def logits(scale, normalize):
        w, b, _ = inner_loop(
            feats * scale, labels, w0, b0, steps=20, learning_rate=1.0, normalize_step=normalize
        )
        return keras.ops.convert_to_numpy(head_logits(query * scale, w, b))

    np.testing.assert_allclose(logits(30.0, True), logits(1.0, True), rtol=1e-4, atol=1e-4)
    # The plain step at the same rate diverges once the features are large.
    assert not np.allclose(logits(30.0, False), logits(1.0, False), atol=1e-2)


def test_normalised_inner_step_lowers_the_support_loss_at_any_feature_scale():
    feats, labels, _ = _task()
    w0, b0 = np.zeros((6, 4), "float32"), np.zeros((4,), "float32")
    for scale in (0.01, 1.0, 1e3):
        _, _, history = inner_loop(
            feats * scale, labels, w0, b0, steps=30, learning_rate=1.9, normalize_step=True
        )
        losses = keras.ops.convert_to_numpy(history["support_loss"])
        assert np.all(np.diff(losses, axis=0) < 1e-5), scale
        assert np.all(losses[-1] < 0.7 * losses[0]), scale


def _model(**kwargs):
    return MetaTransferModel(
        resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=4, inner_steps=2, eval_inner_steps=0, **kwargs
    )


@pytest.mark.parametrize(("logits", "normalization"), [("linear", "UN"), ("cosine", "L2N")])
def test_a_prototype_head_before_any_inner_step_is_nearest_centroid(proto_split, logits, normalization):
    model = _model(head_initializer="prototypes", logits=logits)
    features = embed_split(model, proto_split)
    inner = evaluate_episodes(
        model, proto_split, 4, 2, 3, episodes=12, seed=4, verbose=False, features=features
    )
    centroid = evaluate_nearest_centroid(
        model, proto_split, 4, 2, 3, episodes=12, seed=4, normalization=normalization, features=features
    )
    np.testing.assert_allclose(inner.episode_accuracies, centroid.episode_accuracies)


def test_cosine_head_learns_its_feature_scale_and_saves_it(proto_split, tmp_path):
    from mtl_keras import load_scale_shift_weights, make_episodes, save_scale_shift_weights

    model = _model(head_initializer="prototypes", logits="cosine", normalize_inner_step=True, inner_lr=0.5)
    model.compile(head_learning_rate=0.1)
    before = float(keras.ops.convert_to_numpy(model.head.feature_scale))
    episodes = make_episodes(proto_split, 4, 1, 2, meta_batch_size=2, seed=0)
    model.fit(episodes, steps_per_epoch=3, epochs=1, verbose=0)
    after = float(keras.ops.convert_to_numpy(model.head.feature_scale))
    assert after != before and np.isfinite(after)
    path = str(tmp_path / "phi.npz")
    save_scale_shift_weights(model, path)
    other = _model(head_initializer="prototypes", logits="cosine")
    load_scale_shift_weights(other, path)
    assert float(keras.ops.convert_to_numpy(other.head.feature_scale)) == pytest.approx(after)
    # The config round trip keeps the options.
    clone = MetaTransferModel.from_config(model.get_config())
    assert (clone.head_initializer, clone.logits, clone.normalize_inner_step) == (
        "prototypes",
        "cosine",
        True,
    )


def test_head_options_are_checked():
    with pytest.raises(ValueError, match="logits must be one of"):
        _model(logits="softmax")
    with pytest.raises(ValueError, match="head_initializer must be one of"):
        _model(head_initializer="centroids")


def test_labels_that_do_not_match_the_images_are_named_before_any_step(proto_split):
    from mtl_keras import make_episodes

    model = _model()
    model.compile()
    inputs, query_labels = next(iter(make_episodes(proto_split, 4, 1, 2, meta_batch_size=2, seed=0)))
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    short = {**inputs, "support_labels": inputs["support_labels"][:, :3]}  # 3 labels for 4 images
    with pytest.raises(ValueError, match=r"support_images has 4 images per task but support_labels has 3"):
        model.adapt(short["support_images"], short["support_labels"], short["query_images"])
    with pytest.raises(ValueError, match=r"query_images has 8 images per task but query_labels has 7"):
        model.fit(inputs, np.asarray(query_labels)[:, :7], epochs=1, verbose=0)


def _episode(proto_split):
    from mtl_keras import make_episodes

    inputs, labels = next(iter(make_episodes(proto_split, 4, 1, 2, meta_batch_size=2, seed=0)))
    return {k: np.array(v) for k, v in inputs.items()}, np.asarray(labels)


def test_images_with_nan_or_outside_0_1_are_refused_before_they_train(proto_split):
    model = _model()
    model.compile()
    inputs, labels = _episode(proto_split)
    before = [np.array(v) for v in model.trainable_variables]
    nan = {**inputs, "query_images": inputs["query_images"].copy()}
    nan["query_images"][1, 2, 3, 4, 0] = np.nan
    with pytest.raises(Exception, match=r"query_images hold NaN or inf"):
        model.fit(nan, labels, epochs=1, verbose=0)
    for variable, value in zip(model.trainable_variables, before):  # nothing trained on it
        np.testing.assert_array_equal(np.array(variable), value)
    wide = {**inputs, "support_images": inputs["support_images"] * 255.0}
    with pytest.raises(ValueError, match=r"support_images range over \[0, 2\d\d(\.\d+)?\] .* divide by 255"):
        model.adapt(wide["support_images"], wide["support_labels"], wide["query_images"])
    # input_range=None: another range on purpose is accepted; NaN still is not.
    free = _model(input_range=None)
    free.adapt(wide["support_images"], wide["support_labels"], wide["query_images"])
    with pytest.raises(ValueError, match="NaN"):
        free.adapt(nan["support_images"], nan["support_labels"], nan["query_images"])


def test_jax_checks_images_on_their_device_and_copies_them_only_to_explain(proto_split, monkeypatch):
    """On an accelerator Keras's JAX loop hands the train function device arrays: the finite and
    range checks run there (three numbers come back); only a failing batch is copied for its message."""
    if keras.backend.backend() != "jax":
        pytest.skip("the JAX train function's input checks")
    import jax

    from mtl_keras.jax_backend import meta_transfer_steps

    copied = []
    original = meta_transfer_steps.check_images
    monkeypatch.setattr(
        meta_transfer_steps, "check_images", lambda images, *a: copied.append(a[0]) or original(images, *a)
    )
    model = _model()
    inputs, labels = _episode(proto_split)
    on_device = {k: jax.device_put(v) for k, v in inputs.items()}
    model._check_step_inputs((on_device, labels))
    assert copied == []  # nothing read back
    bad = dict(on_device, query_images=on_device["query_images"].at[1, 2, 3, 4, 0].set(np.nan))
    with pytest.raises(
        ValueError, match=r"query_images hold NaN or inf \(first at index \(1, 2, 3, 4, 0\)\)"
    ):
        model._check_step_inputs((bad, labels))
    wide = dict(on_device, support_images=on_device["support_images"] * 255.0)
    with pytest.raises(ValueError, match=r"support_images range over \[0, 2\d\d(\.\d+)?\] .* divide by 255"):
        model._check_step_inputs((wide, labels))
    assert copied == ["query_images", "support_images"]
