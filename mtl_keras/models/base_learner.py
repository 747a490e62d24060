"""The linear base learner θ and its inner loop, batched over tasks.

The inner loop runs on embeddings only. Its gradient is written in closed form:
for logits ``z = f W + b`` and mean cross-entropy over ``S`` support examples,
``dL/dz = (softmax(z) - onehot(y)) / S``, so ``dL/dW = fᵀ dL/dz`` and
``dL/db = Σ_s dL/dz``. Because these are ordinary differentiable ops, an outer
`tf.GradientTape` differentiates *through* the updates (second order: the
update depends on ``W`` and on the features ``f``, hence on Φ). With
``first_order=True`` the inner gradients are wrapped in `tf.stop_gradient`,
as the official PyTorch code does (``torch.autograd.grad`` without
``create_graph``).
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mtl_keras")
class LinearBaseLearner(keras.layers.Layer):
    """Holds the meta-learned initialisation ``(W0 (D, N), b0 (N,))`` of the head.

    Args:
        ways: number of classes ``N`` of a task.
        kernel_initializer: initializer of ``W0`` (default zeros: the inner loop
            alone then decides the first predictions, and an un-meta-trained head is
            a plain linear probe of the features).
    """

    def __init__(self, ways: int, kernel_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.ways = int(ways)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.ways), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.ways,), initializer="zeros")

    def call(self, features):
        """Logits of the *initial* head: ``(..., D) → (..., N)``."""
        return tf.matmul(features, tf.cast(self.kernel, features.dtype)) + tf.cast(self.bias, features.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.ways)

    def get_config(self):
        config = super().get_config()
        config.update(
            ways=self.ways,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def head_logits(features, weights, bias):
    """Per-task logits: ``features (B, M, D)``, ``weights (B, D, N)``, ``bias (B, N)`` → ``(B, M, N)``."""
    return tf.einsum("bmd,bdn->bmn", features, weights) + bias[:, None, :]


def support_loss_and_grads(features, onehot, weights, bias, with_loss: bool = True):
    """Mean support cross-entropy per task and its closed-form gradient.

    Args:
        features: ``(B, S, D)`` support embeddings.
        onehot: ``(B, S, N)`` one-hot support labels.
        weights: ``(B, D, N)``; bias: ``(B, N)``.
        with_loss: compute the loss (``None`` in its place otherwise).

    Returns:
        ``loss (B,)``, ``grad_w (B, D, N)``, ``grad_b (B, N)``.
    """
    logits = head_logits(features, weights, bias)
    loss = None
    if with_loss:
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits), axis=1)
    num_support = tf.cast(tf.shape(features)[1], features.dtype)
    dlogits = (tf.nn.softmax(logits) - onehot) / num_support
    grad_w = tf.einsum("bsd,bsn->bdn", features, dlogits)
    grad_b = tf.reduce_sum(dlogits, axis=1)
    return loss, grad_w, grad_b


def inner_loop(
    support_features,
    support_labels,
    init_weights,
    init_bias,
    steps: int,
    learning_rate: float,
    first_order: bool = False,
    query_features=None,
    record_history: bool = True,
    unroll: bool = False,
):
    """Adapt the head on each task's support set by ``steps`` gradient steps.

    Args:
        support_features: ``(B, S, D)`` float32.
        support_labels: ``(B, S)`` int32 in ``0..N-1``.
        init_weights: ``(D, N)`` initial head weights (shared by all tasks).
        init_bias: ``(N,)``.
        steps: number of gradient steps ``T`` (0 returns the initial head).
        learning_rate: inner-loop step size.
        first_order: stop gradients through the inner gradients.
        query_features: optional ``(B, Q, D)``; when given, the query logits after
            every step are recorded.
        record_history: record the support loss (and query logits) per step; ``False``
            returns an empty history and keeps the loop to the update alone (training: fewer
            ops per step, forward and backward).
        unroll: run the ``T`` steps as ``T`` copies of the step in the graph instead of a
            ``tf.while_loop``. Use it when the result is differentiated (meta-training): in
            TF 2.21 the gradient of a ``tf.while_loop`` is not reproducible — the same step on
            the same inputs returns gradients that differ at the last bits from call to call,
            even on one thread — so two runs with the same seed drift apart;
            unrolled they are identical (`tests/models/test_determinism.py`).

    Returns:
        ``(weights (B, D, N), bias (B, N), history)`` where ``history`` is a dict with
        ``support_loss (T+1, B)`` (before each step, and after the last) and, with
        query features, ``query_logits (T+1, B, Q, N)``.
    """
    ways = init_weights.shape[-1]
    batch = tf.shape(support_features)[0]
    dtype = support_features.dtype
    onehot = tf.one_hot(support_labels, ways, dtype=dtype)
    weights = tf.tile(tf.cast(init_weights, dtype)[None], [batch, 1, 1])
    bias = tf.tile(tf.cast(init_bias, dtype)[None], [batch, 1])
    lr = tf.cast(learning_rate, dtype)
    record_query = query_features is not None and record_history

    def step(weights, bias, with_loss=True):
        """One gradient step on the support loss: ``(loss before it, weights, bias)``."""
        loss, grad_w, grad_b = support_loss_and_grads(support_features, onehot, weights, bias, with_loss)
        if first_order:
            grad_w, grad_b = tf.stop_gradient(grad_w), tf.stop_gradient(grad_b)
        return loss, weights - lr * grad_w, bias - lr * grad_b

    def run(body, state):
        """``steps`` applications of ``body`` to ``state``: unrolled, or as a ``tf.while_loop``."""
        if unroll:
            for _ in range(steps):
                state = body(*state)
            return state
        if steps > 0:
            state = tf.while_loop(lambda i, *_: i < steps, body, state, maximum_iterations=steps)
        return state

    if not record_history:

        def update(i, weights, bias):
            _, weights, bias = step(weights, bias, with_loss=False)
            return i + 1, weights, bias

        _, weights, bias = run(update, (tf.constant(0), weights, bias))
        return weights, bias, {}

    # Only the recorded histories are loop variables: an unwritten TensorArray in the loop
    # breaks XLA compilation of its gradient (ZerosLike of an uninitialised TensorList).
    arrays = {"support_loss": tf.TensorArray(dtype, size=steps + 1, element_shape=None)}
    if record_query:
        arrays["query_logits"] = tf.TensorArray(dtype, size=steps + 1, element_shape=None)

    def record(i, arrays, loss, weights, bias):
        arrays = dict(arrays, support_loss=arrays["support_loss"].write(i, loss))
        if record_query:
            arrays["query_logits"] = arrays["query_logits"].write(
                i, head_logits(query_features, weights, bias)
            )
        return arrays

    def body(i, weights, bias, arrays):
        loss, new_weights, new_bias = step(weights, bias)
        arrays = record(i, arrays, loss, weights, bias)  # the head before the step
        return i + 1, new_weights, new_bias, arrays

    _, weights, bias, arrays = run(body, (tf.constant(0), weights, bias, arrays))
    final_loss, _, _ = support_loss_and_grads(support_features, onehot, weights, bias)
    arrays = record(steps, arrays, final_loss, weights, bias)
    history = {name: array.stack() for name, array in arrays.items()}
    return weights, bias, history
