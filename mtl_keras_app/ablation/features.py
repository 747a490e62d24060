"""The ablation's evaluation, on the library's one path: `evaluate_episodes` on embeddings
computed once per model and split (`embed_split`; with batch norm frozen an image's embedding
does not depend on the other images of its episode), shared by every setting of a row
(N-way 1-shot, 5-shot, the harder ``hard_ways``-way); and `EpisodeValidation`, the validation
callback that keeps each row's epoch by the one rule (`mtl_keras.evaluation.kept_epoch`)."""

from __future__ import annotations

import numpy as np

from mtl_keras.evaluation import (
    EpisodeAccuracy,
    EpisodeSet,
    EvaluationResult,
    evaluate_episodes,
    head_for_ways,
    kept_epoch,
)
from mtl_keras.models.meta_transfer import MetaTransferModel


def evaluate_model(
    model: MetaTransferModel,
    split,
    episodes: EpisodeSet,
    features: np.ndarray | None = None,
    chunk: int = 50,
) -> EvaluationResult:
    """`evaluate_episodes` of ``model`` on the episodes ``episodes`` describes (its setting and
    seed), from ``features`` (``embed_split(model, split)``, computed once per model) when given.

    Another number of ways than the model's starts the inner loop from a zero head
    (`head_for_ways`). ``chunk``: episodes adapted per call (speed and memory only).
    """
    ways = episodes.ways
    return evaluate_episodes(
        model,
        split,
        ways,
        episodes.shots,
        episodes.queries,
        episodes=episodes.episodes,
        seed=episodes.seed,
        meta_batch_size=chunk,
        verbose=False,
        features=features,
        head=None if ways == model.ways else head_for_ways(model, ways),
        cached=True,
    )


class EpisodeValidation(EpisodeAccuracy):
    """`EpisodeAccuracy` on fixed validation episodes that keeps the kept epoch's weights in memory.

    Args:
        model: the `MetaTransferModel` being trained (also the model whose backbone embeds).
        split: the validation split; episodes: fixed `EpisodeSet` of it.
        initial: the accuracy before training (epoch 0) if already known, else it is
            computed at construction.
        chunk: episodes adapted per call (speed only).

    After ``fit``: ``history`` (accuracy per epoch, epoch 0 first), ``best_epoch`` (by
    `kept_epoch`: epoch 0, the model before meta-training, competes; ties go to the earlier
    epoch), ``best_weights``; `restore_best` puts them back.
    """

    def __init__(
        self,
        model: MetaTransferModel,
        split,
        episodes: EpisodeSet,
        initial: float | None = None,
        chunk: int = 50,
    ):
        super().__init__(
            split, episodes.ways, episodes.shots, episodes.queries, episodes.episodes, episodes.seed
        )
        self._row_model = model
        self.episode_set = episodes
        self.chunk = chunk
        self.history = [self.evaluate_now() if initial is None else float(initial)]
        self.best_epoch = 0
        self.best_weights = model.get_weights()

    def evaluate(self, model=None) -> EvaluationResult:
        model = model or self._row_model
        return evaluate_model(model, self.split, self.episode_set, chunk=self.chunk)

    def evaluate_now(self) -> float:
        return float(self.evaluate().mean)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)  # evaluates once and logs val_accuracy, val_loss, its CI
        self.history.append(float(self.result.mean))
        if kept_epoch(self.history) == len(self.history) - 1:
            self.best_epoch = epoch + 1
            self.best_weights = self._row_model.get_weights()

    def restore_best(self) -> None:
        self._row_model.set_weights(self.best_weights)
