"""Meta-test: adapt on each test episode's support set, score its queries."""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.callbacks import format_duration
from mtl_keras.data.episodes import make_episodes
from mtl_keras.data.split import ClassSplit


@dataclasses.dataclass
class EvaluationResult:
    """Mean query accuracy over episodes, with its 95% confidence interval.

    Attributes:
        mean: mean query accuracy over episodes (0..1).
        ci95: half-width of the 95% confidence interval, ``1.96 · std / √n``.
        episode_accuracies: ``(n,)`` query accuracy of each episode.
        per_step_accuracy: ``(T+1,)`` mean query accuracy after 0..T inner steps.
        per_step_support_loss: ``(T+1,)`` mean support loss after 0..T inner steps.
        ways, shots, queries, inner_steps: the setting.
    """

    mean: float
    ci95: float
    episode_accuracies: np.ndarray
    per_step_accuracy: np.ndarray
    per_step_support_loss: np.ndarray
    ways: int
    shots: int
    queries: int
    inner_steps: int

    @property
    def episodes(self) -> int:
        return len(self.episode_accuracies)

    def __str__(self) -> str:
        return (
            f"{self.ways}-way {self.shots}-shot: {100 * self.mean:.2f} ± {100 * self.ci95:.2f}% "
            f"({self.episodes} episodes, {self.inner_steps} inner steps)"
        )

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "ci95": self.ci95,
            "episodes": self.episodes,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "inner_steps": self.inner_steps,
            "per_step_accuracy": self.per_step_accuracy.tolist(),
        }


def confidence_interval(accuracies: np.ndarray) -> tuple[float, float]:
    """``(mean, 1.96 · std / √n)`` of per-episode accuracies (population std, as the MTL code)."""
    accuracies = np.asarray(accuracies, dtype=np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / math.sqrt(len(accuracies)))


def evaluate_episodes(
    model,
    split: ClassSplit,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    inner_steps: int | None = None,
    meta_batch_size: int = 10,
    verbose: bool = True,
    return_details: bool = False,
):
    """Mean query accuracy and 95% CI of ``model`` over ``episodes`` test episodes.

    Episodes are drawn from ``split`` with ``seed``, so two models evaluated with
    the same seed see the same episodes.

    Args:
        model: a `MetaTransferModel` (its ``ways`` must equal ``ways``).
        split: test (or validation) classes.
        ways, shots, queries: episode setting.
        episodes: number of episodes (the paper uses 600).
        seed: episode seed.
        inner_steps: inner steps (default ``model.eval_inner_steps``).
        meta_batch_size: episodes adapted per call (speed only; results identical).
        verbose: show a progress bar; where it is not redrawn live (output not a terminal),
            also print the whole evaluation's time as estimated from batches 2-6 (the first
            one traces the graph) of ``meta_batch_size`` episodes.
        return_details: also return per-class statistics from the same pass.

    Returns:
        An `EvaluationResult`; with ``return_details``, ``(result, details)`` where
        ``details`` holds:

        * ``class_ids``, ``class_names``: the split's classes that appeared;
        * ``accuracy``: each one's mean query accuracy over the episodes it was in;
        * ``episodes``: how many episodes it was in;
        * ``worst``: how many times it was its episode's *failure class* (lowest
          accuracy, the hard-task criterion; episodes whose classes all tie count for
          none);
        * ``sample``: the first episode — ``support_images (N*K, H, W, C) uint8``,
          ``support_labels (N*K,)``, ``query_images (N*Q, H, W, C) uint8``,
          ``query_labels``, ``query_predictions (N*Q,)``, ``class_names (N,)``.
    """
    if model.ways != ways:
        raise ValueError(f"The model has a {model.ways}-way head; cannot evaluate {ways}-way episodes.")
    steps = model.eval_inner_steps if inner_steps is None else int(inner_steps)
    batch = max(1, min(meta_batch_size, episodes))
    num_batches = math.ceil(episodes / batch)
    ds = make_episodes(
        split,
        ways,
        shots,
        queries,
        meta_batch_size=batch,
        num_batches=num_batches,
        seed=seed,
        repeatable=True,
    )

    @tf.function(reduce_retracing=True)
    def run(inputs, labels):
        _, history = model.adapt(
            inputs["support_images"],
            inputs["support_labels"],
            inputs["query_images"],
            steps=steps,
            return_history=True,
        )
        logits = history["query_logits"]  # (T+1, B, N*Q, N)
        preds = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_mean(tf.cast(tf.equal(preds, labels[None]), tf.float32), axis=-1)  # (T+1, B)
        class_acc = model.per_class_accuracy(logits[-1], labels, ways)  # (B, N)
        return correct, history["support_loss"], class_acc, preds[-1]

    correct_all, loss_all, class_acc_all, classes_all = [], [], [], []
    sample = None
    # On a terminal a live bar; in a log file one line at the end.
    bar = (
        keras.utils.Progbar(episodes, unit_name="episode", verbose=1 if sys.stdout.isatty() else 2)
        if verbose
        else None
    )
    seen = 0
    # Without a live bar nothing shows until the end: say how long it will take.
    announce_at = min(5, num_batches - 2) if verbose and not sys.stdout.isatty() else 0
    start = first_done = time.perf_counter()
    for index, (inputs, labels) in enumerate(ds):
        correct, loss, class_acc, preds = run(inputs, labels)
        correct_all.append(correct.numpy())
        if announce_at > 0 and index in (0, announce_at):
            now = time.perf_counter()
            if index == 0:
                first_done = now
            else:
                rate = (now - first_done) / announce_at
                total = now - start + (num_batches - 1 - index) * rate
                print(
                    f"{ways}-way {shots}-shot evaluation: about {format_duration(total)} for {episodes} episodes "
                    f"(from batches 2-{index + 1}: {rate:.3g} s per batch of {batch} "
                    f"episode{'s' * (batch != 1)})",
                    flush=True,
                )
        loss_all.append(loss.numpy())
        if return_details:
            class_acc_all.append(class_acc.numpy())
            classes_all.append(inputs["task_classes"].numpy())
            if sample is None:
                sample = _sample_episode(inputs, labels, preds)
        seen += correct.shape[1]
        if bar is not None:
            bar.update(min(seen, episodes))
    correct = np.concatenate(correct_all, axis=1)[:, :episodes]  # (T+1, E)
    losses = np.concatenate(loss_all, axis=1)[:, :episodes]
    final = correct[-1]
    mean, ci = confidence_interval(final)
    result = EvaluationResult(
        mean=mean,
        ci95=ci,
        episode_accuracies=final,
        per_step_accuracy=correct.mean(axis=1),
        per_step_support_loss=losses.mean(axis=1),
        ways=ways,
        shots=shots,
        queries=queries,
        inner_steps=steps,
    )
    if not return_details:
        return result
    class_acc = np.concatenate(class_acc_all, axis=0)[:episodes]  # (E, N)
    task_classes = np.concatenate(classes_all, axis=0)[:episodes]  # (E, N) global ids
    return result, _class_details(split, class_acc, task_classes, sample)


def _sample_episode(inputs, labels, preds) -> dict:
    """The first episode of a meta-batch, images as uint8."""
    return {
        "support_images": np.round(inputs["support_images"][0].numpy() * 255).astype(np.uint8),
        "support_labels": inputs["support_labels"][0].numpy(),
        "query_images": np.round(inputs["query_images"][0].numpy() * 255).astype(np.uint8),
        "query_labels": labels[0].numpy(),
        "query_predictions": preds[0].numpy(),
        "task_classes": inputs["task_classes"][0].numpy(),
    }


def _class_details(split: ClassSplit, class_acc: np.ndarray, task_classes: np.ndarray, sample: dict) -> dict:
    """Per-class accuracy, episode counts and failure-class counts of ``(E, N)`` results."""
    name_of = dict(zip(np.asarray(split.class_ids).tolist(), split.class_names))
    ids, inverse = np.unique(task_classes.reshape(-1), return_inverse=True)
    hits = np.bincount(inverse, weights=class_acc.reshape(-1), minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids))
    failing = class_acc.min(axis=1) < class_acc.max(axis=1)
    worst_ids = task_classes[np.arange(len(task_classes)), class_acc.argmin(axis=1)][failing]
    worst = dict(zip(*np.unique(worst_ids, return_counts=True))) if len(worst_ids) else {}
    sample = dict(sample)
    sample["class_names"] = np.array([name_of[int(c)] for c in sample.pop("task_classes")])
    return {
        "class_ids": ids.tolist(),
        "class_names": [name_of[int(c)] for c in ids],
        "accuracy": (hits / np.maximum(counts, 1)).tolist(),
        "episodes": counts.tolist(),
        "worst": [int(worst.get(c, 0)) for c in ids],
        "sample": sample,
    }
