import numpy as np
import tensorflow as tf

from mtl_keras.models.base_learner import head_logits, inner_loop, support_loss_and_grads


def _task(batch=3, support=10, dim=7, ways=5, seed=0):
    rng = np.random.default_rng(seed)
    feats = tf.constant(rng.normal(size=(batch, support, dim)).astype("float32"))
    labels = tf.constant(np.tile(np.arange(ways).repeat(support // ways), (batch, 1)).astype("int32"))
    w0 = tf.Variable(rng.normal(size=(dim, ways)).astype("float32") * 0.1)
    b0 = tf.Variable(rng.normal(size=(ways,)).astype("float32") * 0.1)
    return feats, labels, w0, b0


def test_analytic_inner_gradient_equals_autodiff():
    feats, labels, w0, b0 = _task()
    onehot = tf.one_hot(labels, 5)
    w = tf.Variable(tf.tile(w0[None], [3, 1, 1]) + tf.random.normal((3, 7, 5), seed=1))
    b = tf.Variable(tf.tile(b0[None], [3, 1]))
    with tf.GradientTape() as tape:
        logits = head_logits(feats, w, b)
        per_task = tf.reduce_mean(
            tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits), axis=1
        )
        total = tf.reduce_sum(per_task)  # tasks are independent: d total / d W_b = d loss_b / d W_b
    auto_w, auto_b = tape.gradient(total, [w, b])
    loss, grad_w, grad_b = support_loss_and_grads(feats, onehot, w, b)
    np.testing.assert_allclose(loss, per_task, atol=1e-6)
    np.testing.assert_allclose(grad_w, auto_w, atol=1e-5)
    np.testing.assert_allclose(grad_b, auto_b, atol=1e-5)


def test_support_loss_falls_across_inner_steps():
    feats, labels, w0, b0 = _task()
    _, _, history = inner_loop(feats, labels, w0, b0, steps=30, learning_rate=0.5)
    losses = history["support_loss"].numpy()  # (31, 3)
    assert losses.shape == (31, 3)
    assert np.all(np.diff(losses, axis=0) < 1e-6), "support loss rose during adaptation"
    assert np.all(losses[-1] < 0.5 * losses[0])


def test_zero_steps_returns_initial_head():
    feats, labels, w0, b0 = _task()
    w, b, _ = inner_loop(feats, labels, w0, b0, steps=0, learning_rate=0.5)
    np.testing.assert_array_equal(w.numpy(), np.tile(w0.numpy()[None], (3, 1, 1)))
    np.testing.assert_array_equal(b.numpy(), np.tile(b0.numpy()[None], (3, 1)))


def _meta_gradient(first_order):
    feats, labels, w0, b0 = _task()
    phi = tf.Variable(tf.ones((7,)))  # stands in for Φ: it scales the features
    query = tf.constant(np.random.default_rng(5).normal(size=(3, 10, 7)).astype("float32"))
    with tf.GradientTape() as tape:
        w, b, _ = inner_loop(feats * phi, labels, w0, b0, steps=5, learning_rate=0.5, first_order=first_order)
        logits = head_logits(query * phi, w, b)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return [g.numpy() for g in tape.gradient(loss, [phi, w0, b0])]


def test_second_order_and_first_order_meta_gradients_differ():
    second = _meta_gradient(first_order=False)
    first = _meta_gradient(first_order=True)
    for g2, g1 in zip(second, first):
        assert np.all(np.isfinite(g2)) and np.all(np.isfinite(g1))
        assert np.abs(g2 - g1).max() > 1e-4


def test_second_order_gradient_matches_finite_differences():
    """The outer gradient really flows through the inner updates."""
    feats, labels, w0, b0 = _task()
    query = tf.constant(np.random.default_rng(5).normal(size=(3, 10, 7)).astype("float32"))

    def outer(w_init):
        w, b, _ = inner_loop(feats, labels, w_init, b0, steps=5, learning_rate=0.5)
        logits = head_logits(query, w, b)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))

    w64 = tf.Variable(w0)
    with tf.GradientTape() as tape:
        loss = outer(w64)
    grad = tape.gradient(loss, w64).numpy()
    eps = 1e-2
    direction = np.random.default_rng(9).normal(size=w0.shape).astype("float32")
    direction /= np.linalg.norm(direction)
    numeric = (outer(w0 + eps * direction) - outer(w0 - eps * direction)).numpy() / (2 * eps)
    np.testing.assert_allclose(numeric, (grad * direction).sum(), rtol=2e-2, atol=1e-4)


def test_loop_without_history_adapts_and_differentiates_identically():
    feats, labels, w0, b0 = _task()
    phi = tf.Variable(tf.ones((7,)))
    query = tf.constant(np.random.default_rng(5).normal(size=(3, 10, 7)).astype("float32"))
    results = []
    for record in (True, False):
        with tf.GradientTape() as tape:
            w, b, history = inner_loop(
                feats * phi, labels, w0, b0, steps=5, learning_rate=0.5, record_history=record
            )
            logits = head_logits(query * phi, w, b)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        results.append(
            (w.numpy(), b.numpy(), [g.numpy() for g in tape.gradient(loss, [phi, w0, b0])], history)
        )
    (w1, b1, g1, h1), (w2, b2, g2, h2) = results
    assert set(h1) == {"support_loss"} and h2 == {}
    np.testing.assert_allclose(w2, w1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b2, b1, rtol=1e-6, atol=1e-6)
    for a, c in zip(g2, g1):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_unrolled_inner_loop_computes_what_the_while_loop_computes():
    feats, labels, w0, b0 = _task()
    query = tf.constant(np.random.default_rng(1).normal(size=(3, 6, 7)).astype("float32"))

    def run(unroll, record_history):
        with tf.GradientTape() as tape:
            tape.watch(feats)
            w, b, history = inner_loop(
                feats, labels, w0, b0, steps=7, learning_rate=0.5, query_features=query,
                record_history=record_history, unroll=unroll,
            )  # fmt: skip
            loss = tf.reduce_sum(head_logits(query, w, b) ** 2)
        return [w, b, *tape.gradient(loss, [feats, w0, b0]), *history.values()]

    for record_history in (False, True):
        looped, unrolled = run(False, record_history), run(True, record_history)
        assert len(looped) == len(unrolled) == (7 if record_history else 5)
        for a, b in zip(looped, unrolled):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
