"""`MetaTransferModel`: meta-transfer learning's inner and outer loops in `fit`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.layers.phase import set_phase
from mtl_keras.models.base_learner import LinearBaseLearner, head_logits, inner_loop

EPISODE_KEYS = ("support_images", "support_labels", "query_images")
BATCH_NORM_MODES = ("frozen", "transductive")


@keras.saving.register_keras_serializable(package="mtl_keras")
class MetaTransferModel(keras.Model):
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

    Args:
        backbone: a `keras.Model` ``images → (batch, D)`` features; its phase is
            switched to ``"meta"`` unless ``set_meta_phase=False`` (e.g. for
            fine-tuning all weights).
        ways: ``N``.
        inner_steps: inner-loop steps in training (paper: 20 … 100).
        eval_inner_steps: inner-loop steps in `evaluate`, `adapt` and export.
        inner_lr: inner-loop learning rate.
        first_order: drop second-order terms (``stop_gradient`` on inner gradients).
        batch_norm: ``"frozen"`` (default: pretrained statistics, tasks independent)
            or ``"transductive"`` (each task normalised with its own batch statistics;
            one backbone call per task).
        set_meta_phase: call ``set_phase(backbone, "meta")`` on construction.

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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if batch_norm not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {batch_norm!r}.")
        if ways < 2:
            raise ValueError(f"ways must be at least 2, got {ways}.")
        self.backbone = backbone
        self.ways = int(ways)
        self.inner_steps = int(inner_steps)
        self.eval_inner_steps = int(eval_inner_steps)
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.batch_norm = batch_norm
        self.set_meta_phase = bool(set_meta_phase)
        if set_meta_phase:
            set_phase(backbone, "meta")
        feature_dim = backbone.output_shape[-1]
        self.head = head or LinearBaseLearner(self.ways, name="head")
        if not self.head.built:
            self.head.build((None, feature_dim))
        self.head_optimizer = None
        self.task_feedback = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
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
        optimizer=None,
        head_optimizer=None,
        phi_learning_rate: float = 1e-4,
        head_learning_rate: float = 1e-3,
        **kwargs,
    ):
        """Configure the outer loop.

        Args:
            optimizer: optimizer of the backbone's trainable weights (Φ);
                default ``Adam(phi_learning_rate)``.
            head_optimizer: optimizer of the head initialisation; default
                ``Adam(head_learning_rate)``.
            phi_learning_rate: Φ learning rate when ``optimizer`` is not given.
            head_learning_rate: head learning rate when ``head_optimizer`` is not given.
            **kwargs: passed to `keras.Model.compile` (e.g. ``jit_compile``,
                ``steps_per_execution``). ``loss`` and ``metrics`` are fixed.
        """
        for key in ("loss", "metrics"):
            if kwargs.pop(key, None) is not None:
                raise ValueError(
                    f"MetaTransferModel.compile: `{key}` is fixed (query cross-entropy and "
                    "accuracy after adaptation); do not pass it."
                )
        kwargs.setdefault("jit_compile", False)
        optimizer = optimizer or keras.optimizers.Adam(phi_learning_rate, name="phi_adam")
        optimizer = keras.optimizers.get(optimizer)
        super().compile(optimizer=optimizer, **kwargs)
        self.head_optimizer = keras.optimizers.get(
            head_optimizer or keras.optimizers.Adam(head_learning_rate, name="head_adam")
        )
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

    def fit(self, x=None, y=None, *args, shuffle: bool = False, **kwargs):
        """`keras.Model.fit` on an episodic dataset (see `make_episodes`).

        ``shuffle`` defaults to False: episodes are already random.
        """
        return super().fit(x, y, *args, shuffle=shuffle, **kwargs)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    # ----------------------------------------------------------------- forward
    def embed(self, images, training: bool = False):
        """Backbone features of a flat batch ``(M, H, W, C) → (M, D)`` float32."""
        return tf.cast(self.backbone(images, training=training), tf.float32)

    def _embed_episodes(self, support_images, query_images, training=False):
        """Embed ``(B, S, ...)`` and ``(B, Q, ...)`` images → ``(B, S, D)``, ``(B, Q, D)``."""
        support_images = tf.convert_to_tensor(support_images)
        query_images = tf.convert_to_tensor(query_images)
        _check_rank(support_images, 5, "support_images", "(B, N*K, H, W, C)")
        _check_rank(query_images, 5, "query_images", "(B, N*Q, H, W, C)")
        batch = tf.shape(support_images)[0]
        num_support = tf.shape(support_images)[1]
        num_query = tf.shape(query_images)[1]
        # Static image shape where known: convolutions run markedly faster with known H, W, C.
        dynamic = tf.shape(support_images)
        image_shape = [d if d is not None else dynamic[2 + i] for i, d in enumerate(self.image_shape)]
        if self.batch_norm == "transductive":
            # Batch statistics are per task: one backbone call per task.
            both = tf.concat([support_images, query_images], axis=1)
            feats = tf.map_fn(
                lambda x: self.embed(x, training=True),
                both,
                fn_output_signature=tf.float32,
            )
            return feats[:, :num_support], feats[:, num_support:]
        # One backbone call for the whole meta-batch (BN frozen ⇒ no cross-task leak).
        flat = tf.concat(
            [tf.reshape(support_images, [-1, *image_shape]), tf.reshape(query_images, [-1, *image_shape])],
            axis=0,
        )
        feats = self.embed(flat, training=training)
        dim = tf.shape(feats)[-1]
        split = batch * num_support
        support = tf.reshape(feats[:split], tf.stack([batch, num_support, dim]))
        query = tf.reshape(feats[split:], tf.stack([batch, num_query, dim]))
        return support, query

    def adapt(
        self,
        support_images,
        support_labels,
        query_images,
        steps: int | None = None,
        training: bool = False,
        return_history: bool = False,
    ):
        """Adapt the head on each support set and classify the queries.

        Args:
            support_images: ``(B, N*K, H, W, C)`` float32.
            support_labels: ``(B, N*K)`` int32 in ``0..N-1``.
            query_images: ``(B, N*Q, H, W, C)`` float32.
            steps: inner steps (default ``eval_inner_steps``).
            training: whether the backbone runs in training mode.
            return_history: also return the inner loop's history.

        Returns:
            ``query_logits (B, N*Q, N)``; with ``return_history`` also a dict
            ``support_loss (T+1, B)``, ``query_logits (T+1, B, N*Q, N)``.
        """
        steps = self.eval_inner_steps if steps is None else int(steps)
        support_labels = tf.cast(support_labels, tf.int32)
        support, query = self._embed_episodes(support_images, query_images, training=training)
        weights, bias, history = inner_loop(
            support,
            support_labels,
            self.head.kernel,
            self.head.bias,
            steps=steps,
            learning_rate=self.inner_lr,
            first_order=self.first_order,
            query_features=query if return_history else None,
        )
        logits = head_logits(query, weights, bias)
        return (logits, history) if return_history else logits

    def call(self, inputs, training=False):
        """Adapted query logits ``(B, N*Q, N)`` of an episode dict (see class doc)."""
        missing = [k for k in EPISODE_KEYS if k not in inputs]
        if missing:
            raise ValueError(
                f"MetaTransferModel expects a dict with {EPISODE_KEYS}; missing {missing}."
            )
        steps = self.inner_steps if training else self.eval_inner_steps
        return self.adapt(
            inputs["support_images"],
            inputs["support_labels"],
            inputs["query_images"],
            steps=steps,
            training=False if self.batch_norm == "frozen" else training,
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
        query_labels = tf.cast(query_labels, tf.int32)
        correct = tf.cast(tf.equal(tf.argmax(query_logits, -1, output_type=tf.int32), query_labels), tf.float32)
        onehot = tf.one_hot(query_labels, ways, dtype=tf.float32)
        hits = tf.einsum("bm,bmn->bn", correct, onehot)
        counts = tf.reduce_sum(onehot, axis=1)
        return tf.math.divide_no_nan(hits, counts)

    def _loss_and_accuracy(self, query_logits, query_labels):
        query_labels = tf.cast(query_labels, tf.int32)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=query_labels, logits=query_logits)
        )
        correct = tf.equal(tf.argmax(query_logits, -1, output_type=tf.int32), query_labels)
        return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

    def train_step(self, data):
        inputs, query_labels = data
        if self.head_optimizer is None:
            raise RuntimeError("Call model.compile() before fit().")
        backbone_vars = self.backbone.trainable_variables
        head_vars = self.head.trainable_variables
        with tf.GradientTape() as tape:
            logits = self(inputs, training=True)
            loss, accuracy = self._loss_and_accuracy(logits, query_labels)
        grads = tape.gradient(loss, backbone_vars + head_vars)
        if backbone_vars:
            self.optimizer.apply_gradients(zip(grads[: len(backbone_vars)], backbone_vars))
        self.head_optimizer.apply_gradients(zip(grads[len(backbone_vars) :], head_vars))
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(accuracy)
        if self.task_feedback is not None and "task_classes" in inputs:
            class_acc = self.per_class_accuracy(logits, query_labels, self.ways)
            tf.numpy_function(
                self._report_feedback, [inputs["task_classes"], class_acc], [], stateful=True
            )
        return {m.name: m.result() for m in self.metrics}

    def _report_feedback(self, task_classes, class_accuracy):
        self.task_feedback.report(np.asarray(task_classes), np.asarray(class_accuracy))
        return []

    def test_step(self, data):
        inputs, query_labels = data
        logits = self(inputs, training=False)
        loss, accuracy = self._loss_and_accuracy(logits, query_labels)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(accuracy)
        return {m.name: m.result() for m in self.metrics}

    def predict_step(self, data):
        inputs = data[0] if isinstance(data, tuple) else data
        return self(inputs, training=False)

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
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)


def _check_rank(tensor, rank, name, expected):
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(
            f"{name} must have shape {expected} (rank {rank}), got shape {tuple(tensor.shape)}. "
            "For a single task, add a leading batch axis."
        )
