import numpy as np
import pytest

from mtl_keras import MetaTransferModel, evaluate_episodes, load_benchmark, make_episodes, resnet12
from mtl_keras.evaluation import confidence_interval

#: Backend-agnostic: also run in the second pytest pass, on JAX (conftest.py).
pytestmark = pytest.mark.backends


def test_confidence_interval_is_196_std_over_sqrt_n():
    acc = np.array([0.2, 0.4, 0.6, 0.8])
    mean, ci = confidence_interval(acc)
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(1.96 * acc.std() / 2)


def _model(ways=4, steps=10):
    return MetaTransferModel(
        resnet12((16, 16, 1), widths=(4, 8, 8, 8)),
        ways=ways,
        inner_steps=3,
        eval_inner_steps=steps,
        inner_lr=0.5,
    )


def test_evaluate_episodes_reports_mean_ci_and_per_step_curve(proto_split):
    model = _model()
    result = evaluate_episodes(
        model, proto_split, ways=4, shots=2, queries=3, episodes=13, meta_batch_size=5, verbose=False
    )
    assert result.episodes == 13
    assert result.per_step_accuracy.shape == (11,)
    assert result.per_step_support_loss.shape == (11,)
    assert result.per_step_accuracy[-1] == pytest.approx(result.mean, abs=1e-6)
    assert result.per_step_support_loss[-1] < result.per_step_support_loss[0]
    assert 0 <= result.mean <= 1 and result.ci95 > 0
    assert "4-way 2-shot" in str(result)


def test_meta_batch_size_does_not_change_results(proto_split):
    model = _model()
    a = evaluate_episodes(model, proto_split, 4, 1, 2, episodes=12, meta_batch_size=4, verbose=False)
    b = evaluate_episodes(model, proto_split, 4, 1, 2, episodes=12, meta_batch_size=3, verbose=False)
    # Same seed: same episodes, whatever the batching.
    np.testing.assert_allclose(a.episode_accuracies, b.episode_accuracies, atol=1e-6)


def test_evaluate_rejects_ways_mismatch(proto_split):
    with pytest.raises(ValueError, match="4-way head"):
        evaluate_episodes(_model(), proto_split, ways=5, shots=1, episodes=2, verbose=False)


@pytest.mark.slow  # `make test-slow`: 39 s in the JAX pass of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_a_few_fit_steps_on_glyphs_beat_chance(glyph_cache):
    train, val, _ = load_benchmark("glyphs", image_size=16, cache_dir=glyph_cache, verbose=False)
    model = MetaTransferModel(
        resnet12((16, 16, 1), widths=(8, 16, 16, 32)),
        ways=5,
        inner_steps=10,
        eval_inner_steps=30,
        inner_lr=0.5,
    )
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    history = model.fit(
        make_episodes(train, 5, 1, 5, meta_batch_size=4, seed=0), steps_per_epoch=8, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()
    result = evaluate_episodes(model, val, 5, 1, 5, episodes=100, verbose=False)
    assert result.mean - result.ci95 > 0.2 + 0.05, result


def test_cached_embeddings_give_the_numbers_of_embedding_every_episode(proto_split):
    """The one evaluation path: with frozen BN each image is embedded once; same episodes, same
    per-episode accuracies, per-step curve and per-class details as embedding every episode."""
    model = _model()
    kwargs = dict(ways=4, shots=2, queries=3, episodes=13, meta_batch_size=5, seed=4, verbose=False)
    cached, cached_details = evaluate_episodes(model, proto_split, return_details=True, **kwargs)
    full, full_details = evaluate_episodes(model, proto_split, return_details=True, cached=False, **kwargs)
    np.testing.assert_allclose(cached.episode_accuracies, full.episode_accuracies, atol=1e-6)
    np.testing.assert_allclose(cached.per_step_accuracy, full.per_step_accuracy, atol=1e-6)
    np.testing.assert_allclose(cached.per_step_support_loss, full.per_step_support_loss, rtol=1e-4)
    for key in ("class_ids", "accuracy", "episodes", "worst"):
        np.testing.assert_allclose(cached_details[key], full_details[key], atol=1e-6, err_msg=key)
    for key, value in full_details["sample"].items():
        np.testing.assert_array_equal(cached_details["sample"][key], value, err_msg=key)


def test_transductive_models_are_evaluated_episode_by_episode(proto_split):
    model = MetaTransferModel(
        resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=4, eval_inner_steps=3, batch_norm="transductive"
    )
    result = evaluate_episodes(model, proto_split, 4, 2, 3, episodes=4, verbose=False)
    assert result.episodes == 4
    with pytest.raises(ValueError, match="cached=True needs batch_norm='frozen'"):
        evaluate_episodes(model, proto_split, 4, 2, 3, episodes=4, verbose=False, cached=True)


def test_embeddings_computed_once_serve_several_settings_with_the_same_numbers(proto_split):
    """``features=``: the ablation embeds a split once per model and evaluates 1-shot, 2-shot and
    a wider setting from it; the numbers are those of evaluate_episodes embedding by itself."""
    from mtl_keras.evaluation import embed_split

    model = _model()
    features = embed_split(model, proto_split)
    for shots in (1, 2):
        kwargs = dict(ways=4, shots=shots, queries=3, episodes=9, meta_batch_size=4, seed=3, verbose=False)
        own = evaluate_episodes(model, proto_split, **kwargs)
        shared = evaluate_episodes(model, proto_split, features=features, **kwargs)
        np.testing.assert_array_equal(shared.episode_accuracies, own.episode_accuracies)
        np.testing.assert_array_equal(shared.per_step_accuracy, own.per_step_accuracy)
    with pytest.raises(ValueError, match="embed_split"):
        evaluate_episodes(model, proto_split, 4, 1, 3, episodes=2, features=features[:-1], verbose=False)


def test_a_given_head_starts_the_inner_loop_and_allows_other_ways(proto_split):
    from mtl_keras.evaluation import head_for_ways

    model = _model(ways=4)
    model.head.kernel.assign(np.random.default_rng(0).normal(size=model.head.kernel.shape).astype("float32"))
    kwargs = dict(shots=1, queries=3, episodes=8, seed=5, verbose=False)
    zeros = head_for_ways(model, 3)
    assert zeros[0].shape == (model.head.kernel.shape[0], 3) and not zeros[0].any()
    wider = evaluate_episodes(
        model, proto_split, ways=3, head=zeros, **kwargs
    )  # a 4-way model, 3-way episodes
    assert wider.ways == 3 and wider.episodes == 8
    # head= replaces the meta-learned head: a zero head equals the model with its head zeroed.
    given = evaluate_episodes(model, proto_split, ways=4, head=head_for_ways(model, 4), **kwargs)
    np.testing.assert_array_equal(
        given.episode_accuracies, evaluate_episodes(model, proto_split, 4, **kwargs).episode_accuracies
    )
    with_zero = evaluate_episodes(
        model,
        proto_split,
        ways=4,
        head=(np.zeros_like(zeros[0][:, :1].repeat(4, 1)), np.zeros(4, "float32")),
        **kwargs,
    )
    model.head.kernel.assign(np.zeros(model.head.kernel.shape, "float32"))
    model.head.bias.assign(np.zeros(model.head.bias.shape, "float32"))
    np.testing.assert_array_equal(
        with_zero.episode_accuracies, evaluate_episodes(model, proto_split, 4, **kwargs).episode_accuracies
    )
    with pytest.raises(ValueError, match="cached"):
        evaluate_episodes(model, proto_split, ways=3, head=zeros, cached=False, **kwargs)


def test_the_one_model_selection_rule():
    from mtl_keras.evaluation import kept_epoch

    assert kept_epoch([0.70, 0.69, 0.68]) == 0  # no epoch beat the model before meta-training
    assert kept_epoch([0.70, 0.72, 0.75, 0.75]) == 2  # ties: the earlier epoch
    assert kept_epoch([0.70, float("nan"), 0.71]) == 2  # NaN is never kept
    with pytest.raises(ValueError):
        kept_epoch([])


def _naive_nearest_centroid(features, split, ways, shots, queries, episodes, seed, center=None):
    """Episode by episode, class by class, with explicit loops: the reference."""
    from mtl_keras.evaluation import draw_episodes

    drawn = draw_episodes(split, ways, shots, queries, episodes, seed)
    feats = features.astype(np.float64)
    if center is not None:
        feats = feats - center
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    out = []
    for e in range(episodes):
        support = feats[drawn.support_items[e]]
        centroids = [support[k * shots : (k + 1) * shots].mean(0) for k in range(ways)]
        hits = 0
        for j, item in enumerate(drawn.query_items[e]):
            d = [np.sum((feats[item] - c) ** 2) for c in centroids]
            hits += int(np.argmin(d) == j // queries)
        out.append(hits / (ways * queries))
    return np.array(out)


@pytest.mark.parametrize("normalization", ["L2N", "CL2N"])
def test_nearest_centroid_equals_the_loop_over_episodes_and_classes(proto_split, normalization):
    from mtl_keras.evaluation import evaluate_nearest_centroid

    rng = np.random.default_rng(0)
    features = rng.normal(size=(proto_split.num_images, 6)).astype(np.float32) + 0.5
    center = features.mean(0) if normalization == "CL2N" else None
    result = evaluate_nearest_centroid(
        None,
        proto_split,
        4,
        2,
        3,
        episodes=9,
        seed=3,
        normalization=normalization,
        mean_feature=center,
        features=features,
        meta_batch_size=4,
    )
    expected = _naive_nearest_centroid(features, proto_split, 4, 2, 3, 9, 3, center)
    np.testing.assert_allclose(result.episode_accuracies, expected)
    assert result.inner_steps == 0 and result.episodes == 9
    assert result.mean == pytest.approx(expected.mean())


def test_nearest_centroid_pairs_with_evaluate_episodes_on_the_same_episodes(proto_split):
    from mtl_keras.evaluation import base_feature_mean, evaluate_nearest_centroid, paired_difference

    model = _model()
    mtl = evaluate_episodes(model, proto_split, 4, 1, 3, episodes=10, seed=5, verbose=False)
    centroid = evaluate_nearest_centroid(
        model,
        proto_split,
        4,
        1,
        3,
        episodes=10,
        seed=5,
        mean_feature=base_feature_mean(model, proto_split, max_images=20),
    )
    mean, ci = paired_difference(mtl, centroid)
    assert np.isfinite(mean) and np.isfinite(ci)
    # On pixels a prototype + noise split is easy: nearest centroid is near perfect.
    pixels = proto_split.images.reshape(proto_split.num_images, -1).astype(np.float32)
    easy = evaluate_nearest_centroid(
        None, proto_split, 4, 1, 3, 10, seed=5, normalization="UN", features=pixels
    )
    assert easy.mean > 0.9


def test_nearest_centroid_names_what_cl2n_needs(proto_split):
    from mtl_keras.evaluation import evaluate_nearest_centroid

    with pytest.raises(ValueError, match="base_feature_mean"):
        evaluate_nearest_centroid(_model(), proto_split, 4, 1, 3, episodes=2, normalization="CL2N")
    with pytest.raises(ValueError, match="normalization must be one of"):
        evaluate_nearest_centroid(_model(), proto_split, 4, 1, 3, episodes=2, normalization="cosine")
