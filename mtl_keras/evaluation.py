"""Meta-test: adapt on each test episode's support set, score its queries.

`evaluate_episodes` is the library's one evaluation path (the workflow, its validation callback
`EpisodeAccuracy`, the ablation and ``mtl-keras evaluate`` call it), with `kept_epoch`, the one
model-selection rule. An episode is embedded in one of two ways: each image once (cached
embeddings), or each episode on its own for transductive batch norm.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import weakref

import keras
import numpy as np
from keras import ops

from mtl_keras.callbacks import format_duration
from mtl_keras.data.episode_stream import open_stream
from mtl_keras.data.episodes import _image_loader, make_episodes, pretrain_dataset, tf_data_pipelines
from mtl_keras.data.numpy_batches import pretrain_source
from mtl_keras.data.numpy_episodes import episode_source, numpy_image_loader
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
        query_loss: mean query cross-entropy after the last inner step (nan when unknown).
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
    query_loss: float = float("nan")

    @property
    def episodes(self) -> int:
        return len(self.episode_accuracies)

    def __str__(self) -> str:
        steps = f"{self.inner_steps} inner steps" if self.inner_steps else "no inner loop"
        return (
            f"{self.ways}-way {self.shots}-shot: {100 * self.mean:.2f} ± {100 * self.ci95:.2f}% "
            f"({self.episodes} episodes, {steps})"
        )

    @classmethod
    def from_dict(cls, values: dict) -> EvaluationResult:
        """The result `to_dict` wrote (e.g. read back from a run folder's ``metrics.json``)."""
        accuracies = np.asarray(values["episode_accuracies"], np.float64)
        curve = np.asarray(values.get("per_step_accuracy") or [values["mean"]], np.float64)
        return cls(
            mean=float(values["mean"]),
            ci95=float(values["ci95"]),
            episode_accuracies=accuracies,
            per_step_accuracy=curve,
            per_step_support_loss=np.full(len(curve), np.nan),
            ways=int(values["ways"]),
            shots=int(values["shots"]),
            queries=int(values["queries"]),
            inner_steps=int(values["inner_steps"]),
            query_loss=float(values.get("query_loss", float("nan"))),
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
            "query_loss": self.query_loss,
            "episode_accuracies": np.asarray(self.episode_accuracies).tolist(),
        }


def confidence_interval(accuracies: np.ndarray) -> tuple[float, float]:
    """``(mean, 1.96 · std / √n)`` of per-episode accuracies (population std, as the MTL code)."""
    accuracies = np.asarray(accuracies, dtype=np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / math.sqrt(len(accuracies)))


@dataclasses.dataclass
class EpisodeSet:
    """Fixed episodes as item indices of one split.

    Attributes:
        support_items: ``(E, N*K)`` int64, class-major (labels ``repeat(arange(N), K)``).
        query_items: ``(E, N*Q)`` int64, class-major.
        task_classes: ``(E, N)`` int32 global class ids.
        ways, shots, queries, seed: how they were drawn.
    """

    support_items: np.ndarray
    query_items: np.ndarray
    task_classes: np.ndarray
    ways: int
    shots: int
    queries: int
    seed: int

    @property
    def episodes(self) -> int:
        return len(self.support_items)


def draw_episodes(
    split, ways: int, shots: int, queries: int, episodes: int, seed: int, meta_batch_size: int = 10
) -> EpisodeSet:
    """The episodes `make_episodes` (``repeatable=True``, same ``seed``) yields, as item indices.

    Draws the index stream of `make_episodes` itself — the same `EpisodeStream` its
    generator reads — for ``ceil(episodes / B)`` meta-batches, and keeps the first
    ``episodes`` tasks (task ``j`` depends only on ``(seed, j)``, not on ``B``).
    """
    batch = max(1, min(meta_batch_size, episodes))
    stream = open_stream(split, ways, shots, queries, batch, seed)
    parts = list(stream.batches(math.ceil(episodes / batch), repeatable=True))

    def cat(key):
        return np.concatenate([p[key] for p in parts])[:episodes]

    return EpisodeSet(
        cat("support_items").astype(np.int64),
        cat("query_items").astype(np.int64),
        cat("task_classes"),
        int(ways),
        int(shots),
        int(queries),
        int(seed),
    )


def embed_split(model, split: ClassSplit, batch_size: int = 256) -> np.ndarray:
    """Embeddings ``(num_images, D)`` float32 of every image of ``split``, in item order.

    Args:
        model: a `MetaTransferModel` (embedded with `MetaTransferModel.embed`: batch norm on
            its stored statistics, through the BN-folded view) or a backbone ``keras.Model``
            (called with ``training=False``).
        split: the images (in memory or file-backed).
        batch_size: images per call (speed and memory only).
    """
    if tf_data_pipelines():
        images = pretrain_dataset(split, batch_size=batch_size, shuffle=False).map(lambda x, y: x)
    else:  # no tf.data: the same pixels, decoded by numpy (in memory) or Pillow (files)
        images = (x for x, _ in pretrain_source(split, batch_size=batch_size, shuffle=False))
    embed = _embed_function(model)
    return np.concatenate([np.asarray(embed(x)) for x in images]).astype(np.float32)


def split_features(model, split: ClassSplit, features: np.ndarray | None = None) -> np.ndarray:
    """``features`` checked against ``split`` (one embedding per image), or `embed_split` when None."""
    if features is None:
        return embed_split(model, split)
    if len(features) != split.num_images:
        raise ValueError(
            f"features: {len(features)} embeddings for the {split.num_images} images of split '{split.name}'; "
            "compute them with embed_split(model, split)."
        )
    return features


#: Compiled functions per model: ``{model: {key: function}}``. Each is made once and reused by
#: every later evaluation of the model (a new one per call retraced every time, and TensorFlow
#: warned about it), so it must read the weights when it runs: a `tf.function` does; on JAX the
#: weights are arguments (`mtl_keras.jax_backend.compiled.WeightsAsArguments`). The functions
#: hold their model by weak reference, so that the cache keeps no model alive.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


#: `MetaTransferModel` settings (plain Python values) that its compiled functions read.
_TRACED_SETTINGS = (
    "inner_lr",
    "first_order",
    "normalize_inner_step",
    "head_initializer",
    "logits",
    "batch_norm",
    "input_range",
)


def _embed_function(model):
    """``images (b, H, W, C) → (b, D)`` float32 of ``model``, compiled (`embed_split`)."""
    ref = weakref.ref(model)
    if hasattr(model, "embed"):
        return _compiled(model, ("embed",), lambda x: ref().embed(x, training=False))
    return _compiled(model, ("embed",), lambda x: ops.cast(ref()(x, training=False), "float32"))


def _compiled(model, key, fn):
    """``fn`` compiled by the backend, once per ``model`` and hashable ``key`` (which names
    everything ``fn`` holds other than the model and its arguments): `tf.function` (retracing
    only on new shapes) or, on JAX, ``jax.jit`` with the model's variables as arguments (compiled
    again only on new shapes). ``fn`` must reach the model through a weak reference. The model's
    plain settings are part of the key: a compiled function holds the values it was traced with."""
    key = (*key, *(getattr(model, name, None) for name in _TRACED_SETTINGS))
    functions = _COMPILED.setdefault(model, {})
    if key in functions:
        return functions[key]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, reduce_retracing=True)
    elif backend == "jax":
        from mtl_keras.jax_backend.compiled import WeightsAsArguments

        compiled = WeightsAsArguments(model, fn)
    else:
        compiled = fn
    functions[key] = compiled
    return compiled


def head_for_ways(model, ways: int) -> tuple[np.ndarray, np.ndarray]:
    """The inner loop's initial head ``(W0 (D, ways), b0 (ways,))`` for ``ways``-way episodes.

    ``model.ways``: the meta-learned head. Any other ``ways``: zeros. (A head init meta-learned
    for N positions cannot be reused as is; since class positions are random, the natural
    transfer is its column mean tiled to every class, and a head whose columns are all equal
    gives equal logits — the same softmax, hence the same inner loop — as zeros.)
    """
    if ways == model.ways:
        return np.asarray(model.head.kernel), np.asarray(model.head.bias)
    dim = int(model.head.kernel.shape[0])
    return np.zeros((dim, ways), np.float32), np.zeros((ways,), np.float32)


def kept_epoch(accuracies) -> int:
    """The one model-selection rule: which epoch of a meta-training to keep.

    Args:
        accuracies: validation accuracy of epoch 0 (the model before meta-training) and of
            each trained epoch, ``[a0, a1, ..., aE]`` (NaN: never kept).

    Returns:
        The index of the highest accuracy — epoch 0 competes, so a meta-training that never
        beats its starting point keeps it — the earliest one on ties. The workflow's
        `meta_train`, the ablation's rows and the tuner's objective all use it.
    """
    values = [float(a) if a == a else -math.inf for a in accuracies]
    if not values:
        raise ValueError("kept_epoch: no accuracies.")
    return int(max(range(len(values)), key=lambda i: (values[i], -i)))


def paired_difference(a: EvaluationResult, b: EvaluationResult) -> tuple[float, float]:
    """``(mean, 95% CI half-width)`` of the per-episode accuracy difference ``a - b``.

    Both results must come from the same episodes (same seed and setting): the CI of the
    paired differences is much tighter than two overlapping per-method CIs suggest.
    """
    if a.episodes != b.episodes:
        raise ValueError(f"paired_difference: {a.episodes} vs {b.episodes} episodes; need the same episodes.")
    return confidence_interval(np.asarray(a.episode_accuracies) - np.asarray(b.episode_accuracies))


class EpisodeAccuracy(keras.callbacks.Callback):
    """Mean query accuracy on fixed episodes after every epoch, as ``logs["val_accuracy"]``.

    The validation of meta-training: `evaluate_episodes` on the same ``episodes`` episodes of
    ``split`` (seed ``seed``) at every epoch end — embedded once per image when batch norm is
    frozen, so 600 validation episodes cost about as much as embedding the split. Put it
    before callbacks that read ``val_accuracy`` (`mtl_keras.callbacks.BestCheckpoint`).

    Args:
        split: the validation classes.
        ways: ``N``, classes per episode.
        shots: ``K``, support images per class.
        queries: ``Q``, query images per class.
        episodes: episodes per evaluation.
        seed: episode seed.
    """

    def __init__(self, split: ClassSplit, ways: int, shots: int, queries: int, episodes: int, seed: int):
        super().__init__()
        self.split, self.ways, self.shots, self.queries = split, ways, shots, queries
        self.episodes, self.seed = episodes, seed

    def evaluate(self, model=None) -> EvaluationResult:
        """`evaluate_episodes` of ``model`` (default: the model being trained) on the episodes."""
        return evaluate_episodes(
            model or self.model,
            self.split,
            self.ways,
            self.shots,
            self.queries,
            episodes=self.episodes,
            seed=self.seed,
            verbose=False,
        )

    def on_epoch_end(self, epoch, logs=None):
        self.result = result = self.evaluate()  # the epoch's `EvaluationResult`, for subclasses
        if logs is not None:
            logs["val_accuracy"] = result.mean
            logs["val_loss"] = result.query_loss
            logs["val_accuracy_ci95"] = result.ci95


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
    cached: bool | None = None,
    features: np.ndarray | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Mean query accuracy and 95% CI of ``model`` over ``episodes`` test episodes.

    Episodes are drawn from ``split`` with ``seed``, so two models evaluated with
    the same seed see the same episodes.

    With batch norm frozen (``model.batch_norm == "frozen"``, the default) an image's
    embedding does not depend on the other images of its episode, so every image of the
    split is embedded **once** (`embed_split`) and each episode's inner loop runs on
    gathered embeddings — the same episodes, the same numbers (tested) and, at 600
    episodes of 80 images on a 12,000-image split, a quarter of the backbone work. The
    transductive modes embed every episode on its own (``cached=False`` forces that path).

    Args:
        model: a `MetaTransferModel` (its ``ways`` must equal ``ways``).
        split: test (or validation) classes.
        ways: ``N``, classes per episode.
        shots: ``K``, support images per class.
        queries: ``Q``, query images per class.
        episodes: number of episodes (the paper uses 600).
        seed: episode seed.
        inner_steps: inner steps (default ``model.eval_inner_steps``).
        meta_batch_size: episodes adapted per call (speed only; results identical).
        verbose: show a progress bar; where it is not redrawn live (output not a terminal),
            also print the whole evaluation's time as estimated from batches 2-6 (the first
            one traces the graph) of ``meta_batch_size`` episodes.
        return_details: also return per-class statistics from the same pass.
        cached: embed each image once (default: when batch norm is frozen).
        features: ``(num_images, D)`` float32 embeddings of ``split`` already computed with
            ``embed_split(model, split)`` (implies ``cached``): several settings of one model
            (1-shot, 5-shot, 20-way) then share one embedding pass.
        head: the inner loop's initial head ``(W0 (D, ways), b0 (ways,))`` instead of the
            model's meta-learned one (cached path only); with it ``ways`` may differ from
            ``model.ways`` (e.g. `head_for_ways`).

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

    Raises:
        ValueError: a model of other ``ways``; ``cached=True`` with transductive batch norm.
    """
    if head is not None and tuple(np.shape(head[1])) != (ways,):
        raise ValueError(
            f"head: a bias of shape {np.shape(head[1])} for {ways}-way episodes; need ({ways},)."
        )
    if model.ways != ways and head is None:
        raise ValueError(
            f"The model has a {model.ways}-way head; cannot evaluate {ways}-way episodes "
            "(pass head=head_for_ways(model, ways) to start the inner loop from another head)."
        )
    frozen = getattr(model, "batch_norm", "frozen") == "frozen"
    if (features is not None or head is not None) and cached is False:
        raise ValueError("features= and head= work on cached embeddings: they need cached=True (or None).")
    if features is not None or head is not None:
        cached = True
    if cached and not frozen:
        raise ValueError(
            f"cached=True needs batch_norm='frozen': with batch_norm={model.batch_norm!r} an image's "
            "embedding depends on its episode."
        )
    cached = frozen if cached is None else bool(cached)
    steps = model.eval_inner_steps if inner_steps is None else int(inner_steps)
    batch = max(1, min(meta_batch_size, episodes))
    num_batches = math.ceil(episodes / batch)
    if cached:
        batches = _cached_batches(
            model, split, ways, shots, queries, episodes, seed, batch, steps, features, head
        )
    else:
        batches = _episode_batches(model, split, ways, shots, queries, num_batches, seed, batch, steps)

    correct_all, loss_all, class_acc_all, classes_all, query_loss_all = [], [], [], [], []
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
    for index, out in enumerate(batches):
        correct_all.append(out["correct"])
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
        loss_all.append(out["loss"])
        query_loss_all.append(out["query_loss"])
        if return_details:
            class_acc_all.append(out["class_acc"])
            classes_all.append(out["task_classes"])
            if sample is None:
                sample = out["sample"]()
        seen += out["correct"].shape[1]
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
        query_loss=float(np.concatenate(query_loss_all)[:episodes].mean()),
    )
    if not return_details:
        return result
    class_acc = np.concatenate(class_acc_all, axis=0)[:episodes]  # (E, N)
    task_classes = np.concatenate(classes_all, axis=0)[:episodes]  # (E, N) global ids
    return result, _class_details(split, class_acc, task_classes, sample)


#: Feature normalisations of `evaluate_nearest_centroid` (SimpleShot's names).
CENTROID_NORMALIZATIONS = ("UN", "L2N", "CL2N")


def base_feature_mean(model, split: ClassSplit, max_images: int = 5000, seed: int = 0) -> np.ndarray:
    """The mean embedding ``(D,)`` float32 of ``split``'s images (the base classes): SimpleShot's
    centring vector for ``"CL2N"``.

    Args:
        model: a `MetaTransferModel` or a backbone (as `embed_split`).
        split: the base (training) classes.
        max_images: embed at most this many images, spread evenly over the classes (chosen with
            ``seed``): the mean of a few thousand is the mean of all to a fraction of a percent,
            at a fraction of the cost on a large split.
        seed: which images when subsampled.
    """
    if split.num_images > max_images:
        rng = np.random.default_rng(seed)
        per_class = max(1, max_images // split.num_classes)
        items = np.sort(
            np.concatenate([rng.permutation(split.items_of(c))[:per_class] for c in range(split.num_classes)])
        )
        split = dataclasses.replace(
            split,
            labels=split.labels[items],
            images=None if split.images is None else split.images[items],
            paths=None if split.paths is None else split.paths[items],
        )
    return embed_split(model, split).mean(axis=0).astype(np.float32)


def evaluate_nearest_centroid(
    model,
    split: ClassSplit,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    normalization: str = "CL2N",
    mean_feature: np.ndarray | None = None,
    features: np.ndarray | None = None,
    meta_batch_size: int = 10,
) -> EvaluationResult:
    """Nearest-centroid accuracy on the embeddings of ``model``: the simple baseline beside MTL.

    SimpleShot (Wang et al. 2019, arXiv 1911.04623): embed every image, normalise the embeddings,
    classify each query by the nearest (Euclidean) mean of its episode's support embeddings per
    class. No training and no inner loop; the episodes are `evaluate_episodes`' for the same
    ``(split, ways, shots, queries, seed)`` (`draw_episodes`), so the two results pair episode by
    episode (`paired_difference`).

    Args:
        model: a `MetaTransferModel` (embedded as `embed_split` does: batch norm on its stored
            statistics) or a backbone ``keras.Model``.
        split: test (or validation) classes.
        ways: ``N``, classes per episode (as in `evaluate_episodes`).
        shots: ``K``, support images per class.
        queries: ``Q``, query images per class.
        episodes: number of episodes.
        seed: episode seed (the same seed gives `evaluate_episodes`' episodes).
        normalization: ``"UN"`` (the embeddings as they are), ``"L2N"`` (each divided by its L2
            norm) or ``"CL2N"`` (``mean_feature`` subtracted, then L2-normalised; SimpleShot's
            best).
        mean_feature: ``(D,)`` the mean embedding of the *base* classes (`base_feature_mean` of
            the training split); required for ``"CL2N"``.
        features: ``(num_images, D)`` embeddings of ``split`` already computed (`embed_split`).
        meta_batch_size: how the episodes are drawn (results do not depend on it).

    Returns:
        An `EvaluationResult` with ``inner_steps=0`` (``per_step_accuracy`` holds the one accuracy).

    Raises:
        ValueError: an unknown ``normalization``; ``"CL2N"`` without ``mean_feature``; features
            that do not match the split.
    """
    if normalization not in CENTROID_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {CENTROID_NORMALIZATIONS}, got {normalization!r}.")
    if normalization == "CL2N" and mean_feature is None:
        raise ValueError(
            "normalization='CL2N' centres the embeddings on the base classes' mean: pass "
            "mean_feature=base_feature_mean(model, train_split)."
        )
    features = split_features(model, split, features)
    feats = np.asarray(features, np.float64)
    if normalization == "CL2N":
        feats = feats - np.asarray(mean_feature, np.float64)[None]
    if normalization in ("L2N", "CL2N"):
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    batch = max(1, min(meta_batch_size, episodes))
    drawn = draw_episodes(split, ways, shots, queries, episodes, seed, meta_batch_size=batch)
    support = feats[drawn.support_items].reshape(drawn.episodes, ways, shots, -1)  # class-major
    centroids = support.mean(axis=2)  # (E, N, D)
    query = feats[drawn.query_items]  # (E, N*Q, D)
    # ‖q − c‖² = ‖q‖² − 2 q·c + ‖c‖² (no (E, N*Q, N, D) intermediate).
    distances = (
        (query**2).sum(-1)[:, :, None]
        - 2 * np.einsum("emd,end->emn", query, centroids)
        + (centroids**2).sum(-1)[:, None, :]
    )  # (E, N*Q, N)
    labels = np.repeat(np.arange(ways), queries)
    accuracies = (distances.argmin(-1) == labels[None]).mean(axis=1)
    mean, ci = confidence_interval(accuracies)
    return EvaluationResult(
        mean=mean,
        ci95=ci,
        episode_accuracies=accuracies,
        per_step_accuracy=np.array([mean]),
        per_step_support_loss=np.array([np.nan]),
        ways=ways,
        shots=shots,
        queries=queries,
        inner_steps=0,
    )


def _scores(model, logits, losses, labels, ways):
    """Per-step accuracy ``(T+1, B)``, support loss, final per-class accuracy, predictions, query loss."""
    labels = ops.cast(labels, "int32")
    preds = ops.cast(ops.argmax(logits, axis=-1), "int32")  # (T+1, B, N*Q)
    correct = ops.mean(ops.cast(ops.equal(preds, labels[None]), "float32"), axis=-1)
    class_acc = model.per_class_accuracy(logits[-1], labels, ways)  # (B, N)
    query_loss = ops.mean(
        ops.sparse_categorical_crossentropy(labels, logits[-1], from_logits=True), axis=-1
    )  # (B,)
    return correct, losses, class_acc, preds[-1], query_loss


def _episode_batches(model, split, ways, shots, queries, num_batches, seed, batch, steps):
    """Each meta-batch of episodes through the whole model (images → adapted logits)."""
    episodes = make_episodes if tf_data_pipelines() else episode_source
    ds = episodes(
        split,
        ways,
        shots,
        queries,
        meta_batch_size=batch,
        num_batches=num_batches,
        seed=seed,
        repeatable=True,
    )

    ref = weakref.ref(model)

    def run(inputs, labels):
        model = ref()
        _, history = model.adapt(
            inputs["support_images"],
            inputs["support_labels"],
            inputs["query_images"],
            steps=steps,
            return_history=True,
        )
        return _scores(model, history["query_logits"], history["support_loss"], labels, ways)

    run = _compiled(model, ("episodes", ways, steps), run)
    for inputs, labels in ds:
        correct, loss, class_acc, preds, query_loss = run(inputs, labels)
        yield {
            "query_loss": np.asarray(query_loss),
            "correct": np.asarray(correct),
            "loss": np.asarray(loss),
            "class_acc": np.asarray(class_acc),
            "preds": np.asarray(preds),
            "task_classes": np.asarray(inputs["task_classes"]),
            "sample": lambda inputs=inputs, labels=labels, preds=preds: _sample_episode(
                inputs, labels, preds
            ),
        }


def _cached_batches(
    model, split, ways, shots, queries, episodes, seed, batch, steps, features=None, head=None
):
    """The same episodes' inner loops on embeddings computed once per image of ``split``."""
    features = split_features(model, split, features)
    given = (
        None
        if head is None
        else (
            ops.convert_to_tensor(np.asarray(head[0], np.float32)),
            ops.convert_to_tensor(np.asarray(head[1], np.float32)),
        )
    )
    drawn = draw_episodes(split, ways, shots, queries, episodes, seed, meta_batch_size=batch)
    support_labels = np.tile(np.repeat(np.arange(ways, dtype=np.int32), shots), (batch, 1))
    query_labels = np.tile(np.repeat(np.arange(ways, dtype=np.int32), queries), (batch, 1))

    ref = weakref.ref(model)

    def run(support, support_labels, query, labels, head):
        model = ref()
        _, history = model.adapt_features(
            support, support_labels, query, steps=steps, return_history=True, head=head
        )
        return _scores(model, history["query_logits"], history["support_loss"], labels, ways)

    # The head is an argument (None: the model's own), so one function serves every given head.
    run = _compiled(model, ("cached", ways, steps), run)
    for start in range(0, drawn.episodes, batch):
        s_items = drawn.support_items[start : start + batch]
        q_items = drawn.query_items[start : start + batch]
        b = len(s_items)
        correct, loss, class_acc, preds, query_loss = run(
            features[s_items], support_labels[:b], features[q_items], query_labels[:b], given
        )

        def sample(s_items=s_items, q_items=q_items, preds=preds, task_classes=drawn.task_classes[start]):
            return {
                "support_images": _split_images(split, s_items[0]),
                "support_labels": support_labels[0],
                "query_images": _split_images(split, q_items[0]),
                "query_labels": query_labels[0],
                "query_predictions": np.asarray(preds[0]),
                "task_classes": np.asarray(task_classes),
            }

        yield {
            "query_loss": np.asarray(query_loss),
            "correct": np.asarray(correct),
            "loss": np.asarray(loss),
            "class_acc": np.asarray(class_acc),
            "preds": np.asarray(preds),
            "task_classes": drawn.task_classes[start : start + b],
            "sample": sample,
        }


def _split_images(split: ClassSplit, items: np.ndarray) -> np.ndarray:
    """``(n, H, W, C) uint8`` images ``items`` of ``split`` (decoded as the episodes decode them)."""
    if not split.is_file_backed:
        return split.images[items]
    if tf_data_pipelines():  # decoded as the tf.data episodes decode them
        import tensorflow as tf

        pixels = _image_loader(split)(tf.constant(items, tf.int64)).numpy()
    else:  # as `episode_source` decodes them (Pillow), without TensorFlow
        pixels = numpy_image_loader(split)(items)
    return np.round(pixels * 255).astype(np.uint8)


def _sample_episode(inputs, labels, preds) -> dict:
    """The first episode of a meta-batch, images as uint8."""
    return {
        "support_images": np.round(np.asarray(inputs["support_images"][0]) * 255).astype(np.uint8),
        "support_labels": np.asarray(inputs["support_labels"][0]),
        "query_images": np.round(np.asarray(inputs["query_images"][0]) * 255).astype(np.uint8),
        "query_labels": np.asarray(labels[0]),
        "query_predictions": np.asarray(preds[0]),
        "task_classes": np.asarray(inputs["task_classes"][0]),
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
