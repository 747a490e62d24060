"""Evaluation on cached embeddings: with batch norm frozen an image's embedding does not depend
on the other images of its episode, so each split is embedded once per model and every episode's
inner loop runs on gathered features (exactly the episodes of `evaluate_episodes`, same seed);
and `EpisodeValidation`, the validation callback that keeps each row's best epoch."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.evaluation import EpisodeSet, EvaluationResult, confidence_interval, embed_split
from mtl_keras.models.base_learner import inner_loop
from mtl_keras.models.meta_transfer import MetaTransferModel


@tf.function  # static shapes: the inner loop needs the number of ways
def _adapt_on_features(
    support, support_labels, query, query_labels, init_weights, init_bias, steps, learning_rate
):
    _, _, history = inner_loop(
        support,
        support_labels,
        init_weights,
        init_bias,
        steps=steps,
        learning_rate=learning_rate,
        query_features=query,
    )
    preds = tf.argmax(history["query_logits"], axis=-1, output_type=tf.int32)
    correct = tf.reduce_mean(tf.cast(tf.equal(preds, query_labels[None]), tf.float32), axis=-1)
    return correct, history["support_loss"]  # (T+1, B), (T+1, B)


def evaluate_features(
    features: np.ndarray,
    episodes: EpisodeSet,
    init_weights: np.ndarray,
    init_bias: np.ndarray,
    steps: int,
    inner_lr: float,
    chunk: int = 50,
) -> EvaluationResult:
    """`evaluate_episodes` on cached embeddings: same inner loop, same episodes.

    Args:
        features: ``(num_images, D)`` embeddings of the episodes' split (`embed_split`).
        episodes: the episodes (`draw_episodes`).
        init_weights: ``(D, N)`` head initialisation; init_bias: ``(N,)``.
        steps: inner steps ``T``; inner_lr: inner-loop rate.
        chunk: episodes per call (speed and memory only).

    Returns:
        An `EvaluationResult` (accuracy after ``T`` steps, per-step accuracy 0..T).
    """
    n, k, q = episodes.ways, episodes.shots, episodes.queries
    support_labels = np.repeat(np.arange(n, dtype=np.int32), k)
    query_labels = np.repeat(np.arange(n, dtype=np.int32), q)
    w0 = tf.constant(init_weights, tf.float32)
    b0 = tf.constant(init_bias, tf.float32)
    correct_all, loss_all = [], []
    for start in range(0, episodes.episodes, chunk):
        s_items = episodes.support_items[start : start + chunk]
        q_items = episodes.query_items[start : start + chunk]
        b = len(s_items)
        correct, loss = _adapt_on_features(
            tf.constant(features[s_items]),
            tf.constant(np.tile(support_labels, (b, 1))),
            tf.constant(features[q_items]),
            tf.constant(np.tile(query_labels, (b, 1))),
            w0,
            b0,
            int(steps),
            float(inner_lr),
        )
        correct_all.append(correct.numpy())
        loss_all.append(loss.numpy())
    correct = np.concatenate(correct_all, axis=1)
    losses = np.concatenate(loss_all, axis=1)
    mean, ci = confidence_interval(correct[-1])
    return EvaluationResult(
        mean=mean,
        ci95=ci,
        episode_accuracies=correct[-1],
        per_step_accuracy=correct.mean(axis=1),
        per_step_support_loss=losses.mean(axis=1),
        ways=n,
        shots=k,
        queries=q,
        inner_steps=int(steps),
    )


def head_init(model: MetaTransferModel, ways: int) -> tuple[np.ndarray, np.ndarray]:
    """The head initialisation for ``ways``-way episodes.

    ``model.ways``: the meta-learned ``(W0, b0)``. Any other ``ways``: zeros. (A head
    init meta-learned for N positions cannot be reused as is; since class positions are
    random, the natural transfer is its column mean tiled to every class, and a head
    whose columns are all equal gives equal logits — the same softmax, hence the same
    inner loop — as zeros.)
    """
    if ways == model.ways:
        return np.asarray(model.head.kernel), np.asarray(model.head.bias)
    dim = int(model.head.kernel.shape[0])
    return np.zeros((dim, ways), np.float32), np.zeros((ways,), np.float32)


def evaluate_model(
    model: MetaTransferModel, features: np.ndarray, episodes: EpisodeSet, chunk: int = 50
) -> EvaluationResult:
    """A model's accuracy on ``episodes`` from its cached embeddings ``features``."""
    weights, bias = head_init(model, episodes.ways)
    return evaluate_features(features, episodes, weights, bias, model.eval_inner_steps, model.inner_lr, chunk)


class EpisodeValidation(keras.callbacks.Callback):
    """Validation accuracy on fixed episodes after every epoch; keeps the best epoch's weights.

    Args:
        model: the `MetaTransferModel` being trained (also the model whose backbone embeds).
        split: the validation split; episodes: fixed `EpisodeSet` of it.
        initial: the accuracy before training (epoch 0) if already known, else it is
            computed by `evaluate_now`.
        chunk: see `evaluate_features`.

    After ``fit``: ``history`` (accuracy per epoch, epoch 0 first), ``best_epoch``
    (1-based, among the trained epochs; epoch 0 never wins), ``best_weights``.
    """

    def __init__(
        self,
        model: MetaTransferModel,
        split,
        episodes: EpisodeSet,
        initial: float | None = None,
        chunk: int = 50,
    ):
        super().__init__()
        self._row_model = model
        self.split = split
        self.episodes = episodes
        self.chunk = chunk
        self.history = [self.evaluate_now() if initial is None else float(initial)]
        self.best_epoch = None
        self.best_weights = None
        self.best = -1.0

    def evaluate_now(self) -> float:
        features = embed_split(self._row_model.backbone, self.split)
        return float(evaluate_model(self._row_model, features, self.episodes, self.chunk).mean)

    def on_epoch_end(self, epoch, logs=None):
        accuracy = self.evaluate_now()
        self.history.append(accuracy)
        if logs is not None:
            logs["val_accuracy"] = accuracy
        if accuracy > self.best:
            self.best, self.best_epoch = accuracy, epoch + 1
            self.best_weights = self._row_model.get_weights()

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self._row_model.set_weights(self.best_weights)
