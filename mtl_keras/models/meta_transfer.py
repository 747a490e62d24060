"""`MetaTransferModel`: meta-transfer learning's inner and outer loops in `fit`.

One Keras model class whose `train_step`, `test_step`, `adapt`, per-class feedback, config and
export signature share its private state; the inner loop itself lives in `base_learner`.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
from keras import ops

from mtl_keras import hardware, keras_private
from mtl_keras.inputs import check_images
from mtl_keras.layers.batch_statistics import batch_statistics_view
from mtl_keras.layers.folding import fold_batch_norm
from mtl_keras.layers.phase import set_phase
from mtl_keras.models.base_learner import (
    LinearBaseLearner,
    head_features,
    head_logits,
    inner_loop,
    prototype_head,
)

EPISODE_KEYS = ("support_images", "support_labels", "query_images")
BATCH_NORM_MODES = ("frozen", "transductive", "transductive_separate")
#: Head initialisations by name: the meta-learned ``(W0, b0)`` starting from zeros or
#: Kaiming-normal, or each task's prototype head plus the meta-learned ``(W0, b0)`` (zeros at first).
HEAD_INITIALIZERS = ("zeros", "kaiming", "prototypes")
#: How the head turns features into logits: a linear map of the features, or of the
#: L2-normalised features times a learned scale (`LinearBaseLearner` ``cosine``).
LOGITS = ("linear", "cosine")
POOLING_MODES = ("avg", "max")


def _backend_steps():
    """The mixin with `MetaTransferModel`'s train/test steps for the Keras backend in use."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from mtl_keras.tensorflow_backend.meta_transfer_steps import TensorFlowSteps

        return TensorFlowSteps
    if backend == "jax":
        from mtl_keras.jax_backend.meta_transfer_steps import JaxSteps

        return JaxSteps
    return _UnsupportedBackendSteps


class _UnsupportedBackendSteps:
    """Steps on a backend mtl_keras does not train on (PyTorch, NumPy): a clear error."""

    def _fail(self, *args, **kwargs):
        raise NotImplementedError(
            f"MetaTransferModel trains on the TensorFlow and JAX backends; Keras runs on "
            f"'{keras.backend.backend()}'. Set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before "
            "importing keras."
        )

    train_step = test_step = _traced_support_labels = _traced_images = _map_tasks = _fail

    def _is_concrete(self, x) -> bool:
        return True


@keras.saving.register_keras_serializable(package="mtl_keras")
class MetaTransferModel(_backend_steps(), keras_private.SkipSymbolicBuildWhenBuilt, keras.Model):
    """Meta-transfer learning (MTL) over a pretrained backbone.

    Each training step takes a meta-batch of ``B`` episodes (N-way, K-shot,
    Q queries per class), embeds every support and query image in **one**
    backbone call, adapts a linear head on each task's support embeddings for
    ``inner_steps`` gradient steps (batched over tasks), and updates, from the
    query cross-entropy after adaptation:

    * the backbone's trainable weights — in the ``meta`` phase only Φ, the
      scales and shifts of its `ScaleShiftConv2D` layers — with ``optimizer``
      (default ``Adam(1e-4)``), and
    * the head initialisation ``(W0, b0)`` with ``head_optimizer``
      (default ``Adam(1e-3)``).

    These are the two learning rates of the official PyTorch code
    (``meta_lr1=1e-4``, ``meta_lr2=1e-3``). Set them with
    ``model.compile(optimizer=keras.optimizers.Adam(lr_phi),
    head_optimizer=keras.optimizers.Adam(lr_head))`` or simply
    ``model.compile(phi_learning_rate=..., head_learning_rate=...)``.

    Inputs (one element of `mtl_keras.data.make_episodes`)::

        inputs = {
            "support_images": (B, N*K, H, W, C) float32 in [0, 1],
            "support_labels": (B, N*K) int32 in 0..N-1,
            "query_images":   (B, N*Q, H, W, C) float32,
            "task_classes":   (B, N) int32 global class ids (optional, for hard tasks),
        }
        query_labels: (B, N*Q) int32

    ``model(inputs)`` returns the adapted query logits ``(B, N*Q, N)``.

    Per-class query accuracy: every training step computes, for each task, the
    query accuracy of each of its classes, ``(B, N)``. Attach an object with a
    ``report(task_classes (B, N) int, class_accuracy (B, N) float)`` method as
    ``model.task_feedback`` (before `fit`) to receive it after every step — the
    hard-task pool uses this. `per_class_accuracy` computes the same on demand.

    Training logs (per epoch in ``fit``'s History): ``loss`` and ``accuracy`` (query, after
    adaptation) and the outer loop's gradient norms ``phi_grad_norm`` (all trainable backbone
    weights: Φ, plus γ/β with ``train_batch_norm``) and ``head_grad_norm`` (the head
    initialisation), means over the epoch's steps; evaluation logs ``loss`` and ``accuracy``.

    Args:
        backbone: a `keras.Model` ``images → (batch, D)`` features, or ``→ (batch, H, W, D)``
            feature maps (pooled, see ``pooling``); its phase is switched to ``"meta"``
            unless ``set_meta_phase=False`` (e.g. for fine-tuning all weights). In the meta
            phase only the Φ of its scale-and-shift layers train: a stock Keras model
            (``keras.applications``, keras-hub, your own ``Conv2D`` model) has none, and is
            refused — convert it with ``mtl_keras.enable_scale_shift(backbone)`` first.
        ways: ``N``.
        inner_steps: inner-loop steps in training (paper: 20 … 100).
        eval_inner_steps: inner-loop steps in `evaluate`, `adapt` and export.
        inner_lr: inner-loop learning rate.
        first_order: drop second-order terms (``stop_gradient`` on inner gradients).
        batch_norm: how batch normalisation normalises in meta-training *and* at test time:
            ``"frozen"`` (default) with the pretrained moving statistics — an image's embedding
            depends on nothing else, so tasks cannot leak into each other, one backbone call
            embeds the whole meta-batch, and a query's prediction does not depend on the other
            queries; ``"transductive"`` with the statistics of each task's support and query
            images together; ``"transductive_separate"`` with the statistics of the support set
            and, separately, of the query set, as the official MTL TensorFlow code
            (contrib's ``batch_norm`` in training mode, support and query embedded in
            separate calls). The transductive modes call the backbone once per task (twice for
            ``_separate``) through `mtl_keras.layers.batch_statistics_view`: the moving
            statistics are never updated.
        train_batch_norm: in the meta phase also meta-train batch norm's γ and β with Φ (by
            the backbone's ``optimizer``), as the official PyTorch code does (they are in its
            first Adam group); ``False`` (default) trains Φ only, as the paper describes.
        head_initializer: where each task's inner loop starts: ``"zeros"`` (default: the
            meta-learned ``(W0, b0)``, zeros before meta-training — an un-meta-trained model is
            then a plain linear probe, and the first inner step a prototype classifier),
            ``"kaiming"`` (the meta-learned ``(W0, b0)``, ``W0`` Kaiming-normal, fan-in, before
            meta-training, as the official ``BaseLearner``) or ``"prototypes"`` (Proto-MAML: the
            task's own nearest-centroid head `prototype_head` plus the meta-learned ``(W0, b0)``,
            zeros before meta-training — step 0 *is* nearest centroid on the features, and the
            inner loop refines it). The initializer of ``W0`` is ignored when ``head`` is given.
        logits: ``"linear"`` (default: the head is linear in the backbone's features, as in the
            paper) or ``"cosine"``: in the L2-normalised features times a learned scale
            (`head_features`; the scale is meta-trained with the head by ``head_optimizer``).
        normalize_inner_step: divide each task's inner-loop step on ``W`` by the mean squared
            norm of its support features (`inner_loop` ``normalize_step``): the adapted logits no
            longer depend on the features' scale, and any ``inner_lr < 2`` keeps the inner loop
            stable however meta-training scales the features. ``False`` (default): the paper's
            plain step.
        input_range: the ``(low, high)`` pixel range the episodes' images must lie in (default
            ``(0, 1)``, what the loaders give): images outside it, or with NaN / inf, are refused —
            a `ValueError` in eager calls and, on JAX, before each training step; an assert op in a
            TensorFlow graph (``fit``, the exported signature: ``InvalidArgumentError``). One NaN
            pixel would otherwise make every Φ NaN, and 0..255 images give confident nonsense.
            ``None``: only non-finite values are refused (images in another range on purpose).
        set_meta_phase: call ``set_phase(backbone, "meta")`` on construction.
        fold_batch_norm: run the backbone, whenever its batch norm uses stored
            statistics (``batch_norm="frozen"``, evaluation), through a view with each
            BN folded into the convolution before it (`mtl_keras.layers.fold_batch_norm`):
            the same function of the same variables, with fewer passes over the
            activations (and, under ``mixed_bfloat16``, no float32 round trip per BN).
        unroll_training: in training, run the inner loop as ``inner_steps`` copies of the step in
            the graph rather than a while loop, whose gradient TF 2.21 does not compute
            reproducibly (see `inner_loop`): with it, the same seed gives the same model.
            ``False`` keeps the loop (a smaller graph, for very many inner steps).
        pooling: how a backbone whose output is a feature map ``(batch, H, W, D)`` is reduced
            to ``(batch, D)``: ``"avg"`` (default, global average pooling) or ``"max"`` — the
            model's ``backbone`` is then the given one followed by a
            `keras.layers.GlobalAveragePooling2D` (``GlobalMaxPooling2D``), sharing its layers;
            ``None``: a feature-map output is refused. A ``(batch, D)`` output is used as it is.

    Backends: on TensorFlow the steps are `mtl_keras.tensorflow_backend.meta_transfer_steps.TensorFlowSteps` (a gradient tape,
    `tf.distribute`); on JAX `mtl_keras.jax_backend.meta_transfer_steps.JaxSteps` (stateless: ``stateless_call``,
    ``jax.value_and_grad`` through the unrolled inner loop, both optimizers' ``stateless_apply``).
    The forward pass is the same `keras.ops` code; the two give the same steps to float precision
    (`tests/unit/models/test_backends.py`). Under JAX's ``jit`` support labels are checked in
    Python before each training step, not in the compiled step.

    Several devices: `tf.distribute` strategies on TensorFlow (create the model in
    ``strategy.scope()``), ``keras.distribution.DataParallel`` on JAX (call
    ``keras.distribution.set_distribution`` before creating the model): each meta-batch's ``B``
    tasks are split over the devices (``B`` a multiple of their number), the variables replicated,
    and the update is that of the mean loss over all ``B`` tasks, as on one device
    (docs/guides/distributed.md).

    Mixed precision: build the backbone under ``keras.mixed_precision.set_dtype_policy(
    "mixed_bfloat16")`` (CPUs with AVX512-BF16, TPUs) or ``"mixed_float16"`` (GPUs): the
    backbone then computes in 16 bits while its variables, the embeddings, the inner loop,
    the loss and every gradient update stay float32.

    Example:
        >>> backbone = mtl_keras.backbones.resnet12((32, 32, 1), widths=(16, 32, 64, 128))
        >>> model = MetaTransferModel(backbone, ways=5)
        >>> model.compile()
        >>> model.fit(episodes, steps_per_epoch=100, epochs=10)

    Reference:
        Sun et al., "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019.
    """

    def __init__(
        self,
        backbone: keras.Model,
        ways: int,
        inner_steps: int = 20,
        eval_inner_steps: int = 100,
        inner_lr: float = 0.01,
        first_order: bool = False,
        batch_norm: str = "frozen",
        set_meta_phase: bool = True,
        head: LinearBaseLearner | None = None,
        fold_batch_norm: bool = True,
        unroll_training: bool = True,
        pooling: str | None = "avg",
        train_batch_norm: bool = False,
        head_initializer: str = "zeros",
        logits: str = "linear",
        normalize_inner_step: bool = False,
        input_range: tuple[float, float] | None = (0.0, 1.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head_initializer not in HEAD_INITIALIZERS:
            raise ValueError(
                f"head_initializer must be one of {HEAD_INITIALIZERS}, got {head_initializer!r}."
            )
        if logits not in LOGITS:
            raise ValueError(f"logits must be one of {LOGITS}, got {logits!r}.")
        if batch_norm not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {batch_norm!r}.")
        if ways < 2:
            raise ValueError(f"ways must be at least 2, got {ways}.")
        if pooling not in (*POOLING_MODES, None):
            raise ValueError(f"pooling must be one of {POOLING_MODES} or None, got {pooling!r}.")
        self.pooling = pooling
        backbone = _pooled_backbone(backbone, pooling)
        self.backbone = backbone
        self.ways = int(ways)
        self.inner_steps = int(inner_steps)
        self.eval_inner_steps = int(eval_inner_steps)
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.batch_norm = batch_norm
        self.set_meta_phase = bool(set_meta_phase)
        self.fold_batch_norm = bool(fold_batch_norm)
        self.unroll_training = bool(unroll_training)
        self.train_batch_norm = bool(train_batch_norm)
        self.head_initializer = head_initializer
        self.logits = logits
        self.normalize_inner_step = bool(normalize_inner_step)
        if input_range is not None:
            low, high = (float(v) for v in input_range)
            if not low < high:
                raise ValueError(
                    f"input_range must be (low, high) with low < high, or None; got {input_range!r}."
                )
            input_range = (low, high)
        self.input_range = input_range
        try:
            feature_dim = backbone.output_shape[-1]
        except (AttributeError, ValueError) as err:
            raise ValueError(
                f"MetaTransferModel: backbone '{backbone.name}' is not built (no output shape). "
                "Call it once on a batch of images, or use a functional backbone from "
                "mtl_keras.backbones."
            ) from err
        if set_meta_phase:
            set_phase(backbone, "meta", train_batch_norm=self.train_batch_norm)
            if not backbone.trainable_variables:
                raise ValueError(
                    f"MetaTransferModel: backbone '{backbone.name}' has nothing to meta-train: the meta "
                    "phase trains only the scales and shifts (Φ) of scale-and-shift layers "
                    "(ScaleShiftConv2D, ...) and freezes every other weight, and it has none, so only "
                    "the head would learn. Convert it first: backbone = "
                    "mtl_keras.enable_scale_shift(backbone). (To fine-tune all of its weights "
                    "instead, pass set_meta_phase=False.)"
                )
        self.head = head or LinearBaseLearner(
            self.ways,
            kernel_initializer=_head_initializer(head_initializer),
            cosine=logits == "cosine",
            name="head",
        )
        if bool(getattr(self.head, "cosine", False)) != (logits == "cosine"):
            raise ValueError(
                f"logits={logits!r} needs a head built with cosine={logits == 'cosine'}: "
                f"LinearBaseLearner(ways, cosine={logits == 'cosine'})."
            )
        if not self.head.built:
            self.head.build((None, feature_dim))
        self._inference_view = _Untracked(_folded_view(backbone) if self.fold_batch_norm else backbone)
        self._batch_statistics_view = _Untracked(
            batch_statistics_view(backbone) if batch_norm != "frozen" else None
        )
        self.head_optimizer = None
        self.task_feedback = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        # Training only: the outer loop's gradient norms (evidence of whether Φ gets a signal).
        self.phi_grad_norm_tracker = keras.metrics.Mean(name="phi_grad_norm")
        self.head_grad_norm_tracker = keras.metrics.Mean(name="head_grad_norm")
        # Every weight exists now (functional backbone + head built above).
        self.built = True

    # ----------------------------------------------------------------- building
    @classmethod
    def from_pretrained(cls, pretrained, ways: int, **kwargs) -> MetaTransferModel:
        """Build from a trained `PretrainModel`, reusing its backbone weights.

        The backbone object is shared (not copied) and switched to the ``meta``
        phase; the pretraining classifier is dropped.
        """
        return cls(pretrained.backbone, ways=ways, **kwargs)

    @property
    def image_shape(self) -> tuple:
        """``(H, W, C)`` the backbone takes."""
        return tuple(self.backbone.input_shape[1:])

    def compile(
        self,
        optimizer="auto",
        head_optimizer="auto",
        phi_learning_rate: float | None = None,
        head_learning_rate: float | None = None,
        **kwargs,
    ):
        """Configure the outer loop: one optimizer for Φ, one for the head initialisation.

        Each rate is set one way: through the optimizer, or through the ``*_learning_rate``
        argument with the optimizer left at ``"auto"`` — giving both is an error, not a
        silent choice.

        Args:
            optimizer: optimizer of the backbone's trainable weights (Φ; with
                ``train_batch_norm`` also γ/β); ``"auto"`` (or None):
                ``Adam(phi_learning_rate)``, the official code's ``meta_lr1`` optimizer.
            head_optimizer: optimizer of the head initialisation; ``"auto"`` (or None):
                ``Adam(head_learning_rate)`` (``meta_lr2``).
            phi_learning_rate: Φ's rate for the ``"auto"`` optimizer (default 1e-4).
            head_learning_rate: the head's rate for the ``"auto"`` optimizer (default 1e-3).
            **kwargs: passed to `keras.Model.compile` (e.g. ``jit_compile``: default False on
                TensorFlow, True on JAX;
                ``steps_per_execution``). ``loss`` and ``metrics`` are fixed.

        Raises:
            ValueError: ``loss`` or ``metrics`` given; an optimizer and its learning-rate
                argument both given.
        """
        for key in ("loss", "metrics"):
            if kwargs.pop(key, None) is not None:
                raise ValueError(
                    f"MetaTransferModel.compile: `{key}` is fixed (query cross-entropy and "
                    "accuracy after adaptation); do not pass it."
                )
        # TensorFlow: graph mode without XLA (the oneDNN kernels and the custom conv gradients);
        # JAX: compiled by XLA, its only fast path (op by op it ran 3.3x slower a step).
        kwargs.setdefault("jit_compile", keras.backend.backend() == "jax")
        hardware.warn_if_emulated_bfloat16(self.dtype_policy.name, "MetaTransferModel.compile")

        def resolve(given, rate, default, arg, rate_arg, name):
            if given is None or (isinstance(given, str) and given == "auto"):
                return keras.optimizers.Adam(default if rate is None else rate, name=name)
            if rate is not None:
                raise ValueError(
                    f"MetaTransferModel.compile: both `{arg}` and `{rate_arg}` are given; set the rate "
                    f"on the optimizer, or pass `{rate_arg}` and leave `{arg}` at 'auto'."
                )
            return keras.optimizers.get(given)

        optimizer = resolve(optimizer, phi_learning_rate, 1e-4, "optimizer", "phi_learning_rate", "phi_adam")
        head_optimizer = resolve(
            head_optimizer, head_learning_rate, 1e-3, "head_optimizer", "head_learning_rate", "head_adam"
        )
        super().compile(optimizer=optimizer, **kwargs)
        self.head_optimizer = head_optimizer
        self.optimizer.build(self.backbone.trainable_variables)
        self.head_optimizer.build(self.head.trainable_variables)

    def get_compile_config(self):
        if self.head_optimizer is None:
            return None
        return {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "head_optimizer": keras.optimizers.serialize(self.head_optimizer),
        }

    def compile_from_config(self, config):
        """Restore both optimizers when a `.keras` file is loaded (their state follows)."""
        self.compile(
            optimizer=keras.optimizers.deserialize(config["optimizer"]),
            head_optimizer=keras.optimizers.deserialize(config["head_optimizer"]),
        )

    def _built_for_training(self) -> bool:
        # `keras_private.SkipSymbolicBuildWhenBuilt`: everything is built in __init__ and
        # compile, so `fit` need not peek a meta-batch (never trained) to build the model.
        return bool(self.built and self.head_optimizer is not None and self.optimizer.built)

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`, naming both architectures when they differ."""
        from mtl_keras.models.weights import load_weights_checked

        return load_weights_checked(self, filepath, super().load_weights, *args, **kwargs)

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.accuracy_tracker,
            self.phi_grad_norm_tracker,
            self.head_grad_norm_tracker,
        ]

    # ----------------------------------------------------------------- forward
    def embed(self, images, training: bool = False):
        """Backbone features of a flat batch ``(M, H, W, C) → (M, D)`` float32.

        With ``training=False`` (batch norm on stored statistics) the backbone runs
        through its BN-folded view (see ``fold_batch_norm``): same function, same variables.
        """
        backbone = self.backbone if training else self._inference_view.value
        return ops.cast(backbone(images, training=training), "float32")

    def _embed_episodes(self, support_images, query_images, training=False):
        """Embed ``(B, S, ...)`` and ``(B, Q, ...)`` images → ``(B, S, D)``, ``(B, Q, D)``."""
        support_images = ops.convert_to_tensor(support_images)
        query_images = ops.convert_to_tensor(query_images)
        _check_rank(support_images, 5, "support_images", "(B, N*K, H, W, C)")
        _check_rank(query_images, 5, "query_images", "(B, N*Q, H, W, C)")
        self._check_image_shape(support_images, "support_images")
        self._check_image_shape(query_images, "query_images")
        support_images = self._checked_images(support_images, "support_images")
        query_images = self._checked_images(query_images, "query_images")
        # Static sizes where known (on TensorFlow `ops.shape` gives a tensor for an unknown one):
        # convolutions run markedly faster with known H, W, C.
        batch, num_support = ops.shape(support_images)[:2]
        num_query = ops.shape(query_images)[1]
        dynamic = ops.shape(support_images)
        image_shape = [d if d is not None else dynamic[2 + i] for i, d in enumerate(self.image_shape)]
        if self.batch_norm != "frozen":
            # Batch statistics are per task (and per set): one backbone call per task (and set).
            view = self._batch_statistics_view.value

            def embed(images):
                return ops.cast(view(images), "float32")

            if self.batch_norm == "transductive":
                both = ops.concatenate([support_images, query_images], axis=1)
                feats = self._map_tasks(embed, both)
                return feats[:, :num_support], feats[:, num_support:]
            return self._map_tasks(embed, support_images), self._map_tasks(embed, query_images)
        # One backbone call for the whole meta-batch (BN frozen ⇒ no cross-task leak).
        flat = ops.concatenate(
            [ops.reshape(support_images, [-1, *image_shape]), ops.reshape(query_images, [-1, *image_shape])],
            axis=0,
        )
        feats = self.embed(flat, training=training)
        dim = ops.shape(feats)[-1]
        split = batch * num_support
        support = ops.reshape(feats[:split], [batch, num_support, dim])
        query = ops.reshape(feats[split:], [batch, num_query, dim])
        return support, query

    def adapt(
        self,
        support_images,
        support_labels,
        query_images,
        steps: int | None = None,
        training: bool = False,
        return_history: bool = False,
        unroll: bool = False,
    ):
        """Adapt the head on each support set and classify the queries.

        Args:
            support_images: ``(B, N*K, H, W, C)`` float32.
            support_labels: ``(B, N*K)`` int32 in ``0..N-1``.
            query_images: ``(B, N*Q, H, W, C)`` float32.
            steps: inner steps (default ``eval_inner_steps``).
            training: whether the backbone runs in training mode.
            return_history: also return the inner loop's history.
            unroll: unroll the inner loop in the graph (see `inner_loop`): what
                meta-training does, so that its gradients are reproducible.

        Returns:
            ``query_logits (B, N*Q, N)``; with ``return_history`` also a dict
            ``support_loss (T+1, B)``, ``query_logits (T+1, B, N*Q, N)``.
        """
        _check_same_count(support_images, support_labels, "support_images", "support_labels", "N*K")
        support, query = self._embed_episodes(support_images, query_images, training=training)
        support_labels = self._checked_support_labels(ops.cast(support_labels, "int32"))
        logits, history = self.adapt_features(
            support, support_labels, query, steps=steps, return_history=return_history, unroll=unroll
        )
        return (logits, history) if return_history else logits

    def adapt_features(
        self,
        support_features,
        support_labels,
        query_features,
        steps: int | None = None,
        return_history: bool = False,
        unroll: bool = False,
        head=None,
    ):
        """The head's part of `adapt`, on embeddings: start the head, run the inner loop, classify.

        The one place the head is set up — feature normalisation (``logits="cosine"``), the
        initial head (``head_initializer``, e.g. each task's prototypes) and the inner loop's step
        — for training, `adapt`, export and `mtl_keras.evaluation` (on cached embeddings).

        Args:
            support_features: ``(B, S, D)`` float32 backbone embeddings; support_labels: ``(B, S)``
                int32 in ``0..N-1``; query_features: ``(B, M, D)``.
            steps: inner steps (default ``eval_inner_steps``).
            return_history: record the inner loop's history (`inner_loop`).
            unroll: unroll the inner loop (see `adapt`).
            head: ``(W0 (D, N'), b0 (N',))`` to use instead of the meta-learned initialisation
                (e.g. for ``N'``-way episodes; see `mtl_keras.evaluation.head_for_ways`).

        Returns:
            ``(query_logits (B, M, N), history)`` (``history`` empty without ``return_history``).
        """
        steps = self.eval_inner_steps if steps is None else int(steps)
        weights, bias = (self.head.kernel, self.head.bias) if head is None else head
        scale = self.head.feature_scale if self.logits == "cosine" else None
        support = head_features(support_features, scale)
        query = head_features(query_features, scale)
        if self.head_initializer == "prototypes":
            ways = weights.shape[-1]
            proto_weights, proto_bias = prototype_head(support, support_labels, ways)
            weights = proto_weights + ops.cast(weights, support.dtype)[None]
            bias = proto_bias + ops.cast(bias, support.dtype)[None]
        weights, bias, history = inner_loop(
            support,
            support_labels,
            weights,
            bias,
            steps=steps,
            learning_rate=self.inner_lr,
            first_order=self.first_order,
            query_features=query if return_history else None,
            record_history=return_history,
            unroll=unroll,
            normalize_step=self.normalize_inner_step,
        )
        return head_logits(query, weights, bias), history

    def _check_image_shape(self, images, name):
        got = tuple(images.shape[2:])
        want = self.image_shape
        if any(g is not None and w is not None and g != w for g, w in zip(got, want)):
            fmt = "x".join
            raise ValueError(
                f"{name} are {fmt(map(str, got))} images but backbone '{self.backbone.name}' takes "
                f"{fmt(map(str, want))}. Load the data with image_size={want[0]} and "
                f"{want[2]} channel(s), or build the backbone for {fmt(map(str, got))} images."
            )

    def _checked_images(self, images, name: str):
        """``images`` after checking they are finite and inside ``input_range`` (see the class doc)."""
        if self._is_concrete(images):
            check_images(np.asarray(images), name, self.input_range)
            return images
        return self._traced_images(images, name)

    def _checked_support_labels(self, support_labels):
        """``support_labels`` after checking they lie in ``0..N-1`` and cover every class.

        Eager calls raise a `ValueError` naming the task; in a graph (``fit``,
        export) on TensorFlow the same checks run as assert ops; under JAX's ``jit`` they cannot
        run (no data-dependent errors in a traced function): `fit` checks each meta-batch's
        labels in Python before the step instead.
        """
        ways = self.ways
        if self._is_concrete(support_labels):
            labels = np.asarray(support_labels)
            if labels.ndim != 2:
                raise ValueError(f"support_labels must be (B, N*K), got shape {labels.shape}.")
            bad = np.argwhere((labels < 0) | (labels >= ways))
            if len(bad):
                task, pos = bad[0]
                raise ValueError(
                    f"support_labels of task {task} hold {labels[task, pos]}, outside 0..{ways - 1}: "
                    f"label each task's {ways} classes 0..{ways - 1} (episode position, not the "
                    "global class id)."
                )
            for task, row in enumerate(labels):
                missing = sorted(set(range(ways)) - set(row.tolist()))
                if missing:
                    raise ValueError(
                        f"Task {task} has no support example of class {missing[0]} (of 0..{ways - 1}): "
                        f"every class needs at least one support image. Are the episodes {ways}-way, "
                        "like the model?"
                    )
            return support_labels
        return self._traced_support_labels(support_labels)

    def call(self, inputs, training=False):
        """Adapted query logits ``(B, N*Q, N)`` of an episode dict (see class doc)."""
        missing = [k for k in EPISODE_KEYS if k not in inputs]
        if missing:
            raise ValueError(f"MetaTransferModel expects a dict with {EPISODE_KEYS}; missing {missing}.")
        steps = self.inner_steps if training else self.eval_inner_steps
        return self.adapt(
            inputs["support_images"],
            inputs["support_labels"],
            inputs["query_images"],
            steps=steps,
            training=False if self.batch_norm == "frozen" else training,
            # Meta-training differentiates the inner loop: unrolled, its gradient is reproducible.
            unroll=bool(training) and self.unroll_training,
        )

    # ----------------------------------------------------------------- steps
    @staticmethod
    def per_class_accuracy(query_logits, query_labels, ways: int):
        """Query accuracy of each class of each task.

        Args:
            query_logits: ``(B, M, N)``; query_labels: ``(B, M)`` int.
            ways: ``N``.

        Returns:
            ``(B, N)`` float32: fraction of class-``n`` queries classified correctly
            (0 for a class without queries).
        """
        query_labels = ops.cast(query_labels, "int32")
        predicted = ops.cast(ops.argmax(query_logits, axis=-1), "int32")
        correct = ops.cast(ops.equal(predicted, query_labels), "float32")
        onehot = ops.one_hot(query_labels, ways, dtype="float32")
        hits = ops.einsum("bm,bmn->bn", correct, onehot)
        counts = ops.sum(onehot, axis=1)
        return ops.divide_no_nan(hits, counts)

    def _loss_and_accuracy(self, query_logits, query_labels):
        _check_same_count(query_logits, query_labels, "query_images", "query_labels", "N*Q")
        query_labels = ops.cast(query_labels, "int32")
        loss = ops.mean(ops.sparse_categorical_crossentropy(query_labels, query_logits, from_logits=True))
        correct = ops.equal(ops.cast(ops.argmax(query_logits, axis=-1), "int32"), query_labels)
        return loss, ops.mean(ops.cast(correct, "float32"))

    # ----------------------------------------------------------------- export
    def export(self, filepath: str, format: str = "tf_saved_model", verbose: bool = True, **kwargs):
        """Write a TF SavedModel with an ``adapt_and_classify`` signature.

        The signature takes one task (no batch axis)::

            support_images: (S, H, W, C) float32 in [0, 1]
            support_labels: (S,) int32 in 0..N-1
            query_images:   (M, H, W, C) float32

        and returns ``{"logits": (M, N), "probabilities": (M, N)}`` after
        ``eval_inner_steps`` inner steps. Load it anywhere with
        ``tf.saved_model.load(path).signatures["adapt_and_classify"]`` — no
        mtl_keras needed.

        On the JAX backend the model is saved as ``.keras`` and exported by a TensorFlow
        subprocess (`mtl_keras.export.export_through_tensorflow`): TensorFlow must be installed.
        """
        from mtl_keras.export import export_adapt_and_classify

        if format != "tf_saved_model":
            raise ValueError(f"Only format='tf_saved_model' is supported, got {format!r}.")
        return export_adapt_and_classify(self, filepath, verbose=verbose, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            head=keras.saving.serialize_keras_object(self.head),
            ways=self.ways,
            inner_steps=self.inner_steps,
            eval_inner_steps=self.eval_inner_steps,
            inner_lr=self.inner_lr,
            first_order=self.first_order,
            batch_norm=self.batch_norm,
            set_meta_phase=self.set_meta_phase,
            fold_batch_norm=self.fold_batch_norm,
            unroll_training=self.unroll_training,
            pooling=self.pooling,
            train_batch_norm=self.train_batch_norm,
            head_initializer=self.head_initializer,
            logits=self.logits,
            normalize_inner_step=self.normalize_inner_step,
            input_range=list(self.input_range) if self.input_range is not None else None,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Keras empties the nested configs it deserializes
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)


class _Untracked:
    """Holds a value out of Keras' attribute tracking (the BN-folded view shares the
    backbone's layers and variables, and must not be saved or counted twice)."""

    def __init__(self, value):
        self.value = value


def _head_initializer(name: str):
    """The `LinearBaseLearner` kernel initializer of ``name`` (see `HEAD_INITIALIZERS`)."""
    if name == "kaiming":
        # torch.nn.init.kaiming_normal_ on the official (N, D) weight: N(0, 2 / D), untruncated.
        return keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal")
    return "zeros"


def _pooled_backbone(backbone, pooling):
    """``backbone`` when its output is ``(batch, D)``; with a feature-map output ``(batch, H, W, D)``,
    a functional model of ``backbone``'s layers followed by global pooling."""
    try:
        shape = backbone.output_shape
    except (AttributeError, ValueError):
        return backbone  # not built: refused with a clear message by the caller
    if isinstance(shape, list) or (isinstance(shape, tuple) and shape and isinstance(shape[0], tuple)):
        raise ValueError(
            f"MetaTransferModel: backbone '{backbone.name}' has {len(shape)} outputs; it needs one "
            "(images → (batch, D) features or (batch, H, W, D) feature maps)."
        )
    if len(shape) == 2:
        return backbone
    if len(shape) != 4:
        raise ValueError(
            f"MetaTransferModel: backbone '{backbone.name}' outputs shape {shape}; it needs (batch, D) "
            "features or (batch, H, W, D) feature maps."
        )
    if pooling is None:
        raise ValueError(
            f"MetaTransferModel: backbone '{backbone.name}' outputs feature maps {shape}, and pooling=None. "
            "Pass pooling='avg' (or 'max'), or end the backbone with a pooling layer (keras.applications: "
            "pooling='avg')."
        )
    pool_cls = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
    pool = pool_cls(name=f"{backbone.name}_{pooling}_pool")
    try:  # functional or Sequential: one flat graph, so the BN-folded view still sees conv → BN
        inputs, outputs = backbone.inputs, backbone.outputs
    except AttributeError:
        inputs = outputs = None
    if inputs and outputs:
        inputs = inputs[0] if len(inputs) == 1 else inputs
        return keras.Model(inputs, pool(outputs[0]), name=backbone.name)
    images = keras.Input(shape=backbone.input_shape[1:], name="images")
    return keras.Model(images, pool(backbone(images)), name=backbone.name)


def _folded_view(backbone):
    """`fold_batch_norm(backbone)`, or ``backbone`` itself when it cannot be folded."""
    try:
        return fold_batch_norm(backbone)
    except (TypeError, ValueError, AttributeError):  # e.g. a subclassed, non-functional backbone
        return backbone


def _check_same_count(images, labels, images_name, labels_name, what):
    """Images ``(B, M, ...)`` and labels ``(B, M)`` must agree on ``M`` (where both are known). Images
    of another rank are left to the rank check, which names the expected shape."""
    if len(tuple(images.shape)) not in (3, 5):  # (B, M, N) logits or (B, M, H, W, C) images
        return
    got_images = tuple(images.shape)[:2]
    got_labels = tuple(getattr(labels, "shape", ()))
    if len(got_labels) != 2:
        if len(got_labels) and len(got_images) == 2:
            raise ValueError(
                f"{labels_name} must have shape (B, {what}) (one label per image of {images_name}, "
                f"{got_images}), got shape {got_labels}."
            )
        return
    for axis, name in ((0, "tasks"), (1, "images per task")):
        a, b = got_images[axis], got_labels[axis]
        if a is not None and b is not None and int(a) != int(b):
            raise ValueError(
                f"{images_name} has {int(a)} {name} but {labels_name} has {int(b)} (shapes "
                f"({', '.join(map(str, got_images))}, …) and {got_labels}): give one label per image, ({what}) "
                "per task, class-major."
            )


def _check_rank(tensor, rank, name, expected):
    got = getattr(tensor.shape, "rank", len(tensor.shape))  # TensorFlow: None for an unknown rank
    if got is not None and got != rank:
        raise ValueError(
            f"{name} must have shape {expected} (rank {rank}), got shape {tuple(tensor.shape)}. "
            "For a single task, add a leading batch axis."
        )
