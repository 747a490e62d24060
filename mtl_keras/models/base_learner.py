"""The linear base learner θ and its inner loop, batched over tasks.

The inner loop runs on embeddings only. Its gradient is written in closed form:
for logits ``z = f W + b`` and mean cross-entropy over ``S`` support examples,
``dL/dz = (softmax(z) - onehot(y)) / S``, so ``dL/dW = fᵀ dL/dz`` and
``dL/db = Σ_s dL/dz``. Because these are ordinary differentiable ops, the outer
gradient (a gradient tape on TensorFlow, `jax.value_and_grad` on JAX)
differentiates *through* the updates (second order: the update depends on ``W``
and on the features ``f``, hence on Φ). With ``first_order=True`` the inner
gradients are wrapped in ``stop_gradient``, as the official PyTorch code does
(``torch.autograd.grad`` without ``create_graph``).

Written in `keras.ops` only: the same code runs on every Keras backend (on TensorFlow the
ops are the ones it called before it was ported: einsum, softmax, the fused softmax
cross-entropy with logits, the while loop), with the same results bit for bit
(`tests/unit/models/test_base_learner.py`).
"""

from __future__ import annotations

import keras
from keras import ops

#: Initial value of the learned feature scale of cosine logits: the prototype head's logits are
#: then ``2 · 5 · cos(f, c_k)`` plus a per-class constant, the temperature 10 of Meta-Baseline
#: (Chen et al., ICCV 2021) on cosine similarity.
INITIAL_FEATURE_SCALE = 5.0**0.5


@keras.saving.register_keras_serializable(package="mtl_keras")
class LinearBaseLearner(keras.layers.Layer):
    """Holds the meta-learned initialisation ``(W0 (D, N), b0 (N,))`` of the head.

    Args:
        ways: number of classes ``N`` of a task.
        kernel_initializer: initializer of ``W0`` (default zeros: the inner loop
            alone then decides the first predictions, and an un-meta-trained head is
            a plain linear probe of the features).
        cosine: the head works on L2-normalised features times a learned scale ``s`` (weight
            ``feature_scale``, initialised to `INITIAL_FEATURE_SCALE`): logits are then a
            temperature times a cosine-like similarity, whatever the backbone's feature scale
            ("A Closer Look at Few-shot Classification", Chen et al., ICLR 2019). See
            `head_features`.
    """

    def __init__(self, ways: int, kernel_initializer="zeros", cosine: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.ways = int(ways)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.cosine = bool(cosine)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.ways), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.ways,), initializer="zeros")
        self.feature_scale = (
            self.add_weight(
                name="feature_scale",
                shape=(),
                initializer=keras.initializers.Constant(INITIAL_FEATURE_SCALE),
            )
            if self.cosine
            else None
        )

    def call(self, features):
        """Logits of the *initial* head: ``(..., D) → (..., N)``."""
        return ops.matmul(features, ops.cast(self.kernel, features.dtype)) + ops.cast(
            self.bias, features.dtype
        )

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.ways)

    def get_config(self):
        config = super().get_config()
        config.update(
            ways=self.ways,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            cosine=self.cosine,
        )
        return config


def head_features(features, scale=None):
    """The features the head sees: ``features`` as they are, or — with a ``scale`` (cosine
    logits) — each divided by its L2 norm and multiplied by ``scale``: ``(..., D) → (..., D)``.

    Normalised features make the head's logits, and the inner loop's step, independent of how
    far meta-training stretches the backbone's features.
    """
    if scale is None:
        return features
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(features), axis=-1, keepdims=True), 1e-12))
    return features / norm * ops.cast(scale, features.dtype)


def prototype_head(support_features, support_labels, ways: int):
    """The linear head that *is* nearest centroid: ``W_k = 2 c_k``, ``b_k = −‖c_k‖²``.

    With ``c_k`` the mean support embedding of class ``k``, the logits ``f·W_k + b_k =
    −‖f − c_k‖² + ‖f‖²`` rank the classes as the squared Euclidean distance to their prototype
    does (Proto-MAML: Triantafillou et al., "Meta-Dataset", ICLR 2020). As the inner loop's
    starting point, step 0 is a prototype classifier and the inner loop refines it.

    Args:
        support_features: ``(B, S, D)``.
        support_labels: ``(B, S)`` int in ``0..N-1`` (every class present).
        ways: ``N``.

    Returns:
        ``weights (B, D, N)``, ``bias (B, N)``; differentiable in the features.
    """
    onehot = ops.one_hot(ops.cast(support_labels, "int32"), ways, dtype=support_features.dtype)
    counts = ops.maximum(ops.sum(onehot, axis=1), 1.0)  # (B, N)
    centroids = ops.einsum("bsn,bsd->bnd", onehot, support_features) / counts[:, :, None]
    return 2.0 * ops.transpose(centroids, (0, 2, 1)), -ops.sum(ops.square(centroids), axis=-1)


def head_logits(features, weights, bias):
    """Per-task logits: ``features (B, M, D)``, ``weights (B, D, N)``, ``bias (B, N)`` → ``(B, M, N)``."""
    return ops.einsum("bmd,bdn->bmn", features, weights) + bias[:, None, :]


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
        loss = ops.mean(ops.categorical_crossentropy(onehot, logits, from_logits=True), axis=1)
    num_support = ops.cast(ops.shape(features)[1], features.dtype)
    dlogits = (ops.softmax(logits) - onehot) / num_support
    grad_w = ops.einsum("bsd,bsn->bdn", features, dlogits)
    grad_b = ops.sum(dlogits, axis=1)
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
    normalize_step: bool = False,
):
    """Adapt the head on each task's support set by ``steps`` gradient steps.

    Args:
        support_features: ``(B, S, D)`` float32.
        support_labels: ``(B, S)`` int32 in ``0..N-1``.
        init_weights: ``(D, N)`` initial head weights shared by all tasks, or ``(B, D, N)``
            one per task (e.g. `prototype_head`).
        init_bias: ``(N,)``, or ``(B, N)``.
        steps: number of gradient steps ``T`` (0 returns the initial head).
        learning_rate: inner-loop step size (with ``normalize_step``: see there).
        normalize_step: divide each task's step on ``W`` by the mean squared norm of its support
            features, ``ρ² = mean_s ‖f_s‖²`` (a constant for the outer gradient); ``b``'s step
            stays ``learning_rate``. That is plain gradient descent on the head of the features
            ``f / ρ`` (with ``ρ W`` in place of ``W``): the logits after every step do not change
            when the features are scaled by any factor, and since the support loss's curvature
            there is at most 1 (`softmax` cross-entropy: ≤ ½ λ_max of the inputs' second moment,
            ``‖[f / ρ, 1]‖²`` averaging 2), any ``learning_rate < 2`` keeps the inner loop
            stable however meta-training scales the features. Without it the step is stable
            only while ``learning_rate · ρ²`` stays small: meta-training that grows the features
            can turn the inner loop — and its second-order gradients — unstable.
        first_order: stop gradients through the inner gradients.
        query_features: optional ``(B, Q, D)``; when given, the query logits after
            every step are recorded.
        record_history: record the support loss (and query logits) per step; ``False``
            returns an empty history and keeps the loop to the update alone (training: fewer
            ops per step, forward and backward).
        unroll: run the ``T`` steps as ``T`` copies of the step in the graph instead of a
            ``keras.ops.while_loop``. Use it when the result is differentiated (meta-training): in
            TF 2.21 the gradient of TensorFlow's while loop is not reproducible — the same step on
            the same inputs returns gradients that differ at the last bits from call to call,
            even on one thread — so two runs with the same seed drift apart;
            unrolled they are identical (`tests/unit/models/test_determinism.py`).

    Returns:
        ``(weights (B, D, N), bias (B, N), history)`` where ``history`` is a dict with
        ``support_loss (T+1, B)`` (before each step, and after the last) and, with
        query features, ``query_logits (T+1, B, Q, N)``.
    """
    ways = init_weights.shape[-1]
    batch = ops.shape(support_features)[0]
    dtype = support_features.dtype
    onehot = ops.one_hot(support_labels, ways, dtype=dtype)
    weights = ops.cast(init_weights, dtype)
    bias = ops.cast(init_bias, dtype)
    if len(weights.shape) == 2:
        weights = ops.tile(weights[None], [batch, 1, 1])
    if len(bias.shape) == 1:
        bias = ops.tile(bias[None], [batch, 1])
    lr = ops.cast(learning_rate, dtype)
    if normalize_step:
        squared_norm = ops.mean(ops.sum(ops.square(support_features), axis=-1), axis=-1)  # (B,)
        lr_w = (lr / ops.stop_gradient(ops.maximum(squared_norm, 1e-12)))[:, None, None]
        lr_b = lr
    else:
        lr_w = lr_b = lr
    record_query = query_features is not None and record_history

    def step(weights, bias, with_loss=True):
        """One gradient step on the support loss: ``(loss before it, weights, bias)``."""
        loss, grad_w, grad_b = support_loss_and_grads(support_features, onehot, weights, bias, with_loss)
        if first_order:
            grad_w, grad_b = ops.stop_gradient(grad_w), ops.stop_gradient(grad_b)
        return loss, weights - lr_w * grad_w, bias - lr_b * grad_b

    if not record_history:
        if unroll:
            for _ in range(steps):
                _, weights, bias = step(weights, bias, with_loss=False)
        elif steps > 0:

            def update(i, weights, bias):
                _, weights, bias = step(weights, bias, with_loss=False)
                return i + 1, weights, bias

            _, weights, bias = ops.while_loop(
                lambda i, *_: i < steps, update, (0, weights, bias), maximum_iterations=steps
            )
        return weights, bias, {}

    def recorded(loss, weights, bias):
        """What one entry of the history holds: the support loss (and query logits) of a head."""
        entry = {"support_loss": loss}
        if record_query:
            entry["query_logits"] = head_logits(query_features, weights, bias)
        return entry

    if unroll:
        entries = []
        for _ in range(steps):
            loss, new_weights, new_bias = step(weights, bias)
            entries.append(recorded(loss, weights, bias))  # the head before the step
            weights, bias = new_weights, new_bias
        final_loss, _, _ = support_loss_and_grads(support_features, onehot, weights, bias)
        entries.append(recorded(final_loss, weights, bias))
        history = {name: ops.stack([entry[name] for entry in entries]) for name in entries[0]}
        return weights, bias, history

    # In a loop the history is a (T+1, ...) buffer per entry, row i written at step i with
    # `where` (exact, and a non-finite value stays in its own row).
    def write(buffers, i, entry):
        out = {}
        for name, buffer in buffers.items():
            row = ops.equal(ops.arange(steps + 1), i)
            row = ops.reshape(row, (steps + 1,) + (1,) * (len(buffer.shape) - 1))
            out[name] = ops.where(row, ops.expand_dims(entry[name], 0), buffer)
        return out

    buffers = {"support_loss": ops.zeros((steps + 1, batch), dtype=dtype)}
    if record_query:
        queries = ops.shape(query_features)[1]
        buffers["query_logits"] = ops.zeros((steps + 1, batch, queries, ways), dtype=dtype)
    if steps > 0:

        def body(i, weights, bias, buffers):
            loss, new_weights, new_bias = step(weights, bias)
            buffers = write(buffers, i, recorded(loss, weights, bias))  # the head before the step
            return i + 1, new_weights, new_bias, buffers

        _, weights, bias, buffers = ops.while_loop(
            lambda i, *_: i < steps, body, (0, weights, bias, buffers), maximum_iterations=steps
        )
    final_loss, _, _ = support_loss_and_grads(support_features, onehot, weights, bias)
    history = write(buffers, steps, recorded(final_loss, weights, bias))
    return weights, bias, history
