"""`MetaTransferModel`'s steps on the TensorFlow backend: `tf.GradientTape`, `tf.distribute`.

The model's forward pass (`MetaTransferModel.adapt`, the inner loop) is backend-agnostic
`keras.ops`; what only TensorFlow does lives here, as a mixin the model class takes when Keras
runs on TensorFlow (`mtl_keras.models.meta_transfer`): the training step under a gradient tape
with both optimizers, the replica handling of `tf.distribute`, the in-graph checks of the support
labels, and the per-class feedback through `tf.numpy_function`. The JAX counterpart is
`mtl_keras.jax_backend.meta_transfer_steps`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import keras_private


class TensorFlowSteps:
    """`train_step` / `test_step` / `predict_step` of `MetaTransferModel` on TensorFlow."""

    def _is_concrete(self, x) -> bool:
        """Whether values can be read now (eager), not only traced into a graph."""
        return tf.executing_eagerly()

    def _traced_support_labels(self, support_labels):
        """``support_labels`` behind assert ops: in ``0..N-1``, every class present."""
        ways = self.ways
        in_range = tf.reduce_all((support_labels >= 0) & (support_labels < ways))
        present = tf.reduce_all(tf.reduce_sum(tf.one_hot(support_labels, ways), axis=-2) > 0)
        checks = [
            tf.debugging.Assert(
                in_range,
                [f"support_labels must lie in 0..{ways - 1} (episode positions); got", support_labels],
            ),
            tf.debugging.Assert(
                present, [f"every one of the {ways} classes needs a support example; got", support_labels]
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(support_labels)

    def _traced_images(self, images, name: str):
        """``images`` behind assert ops: finite, and inside ``input_range`` (if set)."""
        values = tf.cast(images, tf.float32)
        checks = [
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(values)),
                [f"{name} hold NaN or inf: fix the images; one such pixel would make every weight NaN."],
            )
        ]
        if self.input_range is not None:
            low, high = self.input_range
            checks.append(
                tf.debugging.Assert(
                    tf.logical_and(tf.reduce_min(values) >= low - 1e-6, tf.reduce_max(values) <= high + 1e-6),
                    [
                        f"{name} must lie in [{low:g}, {high:g}] (divide 0..255 images by 255); got min, max",
                        tf.reduce_min(values),
                        tf.reduce_max(values),
                    ],
                )
            )
        with tf.control_dependencies(checks):
            return tf.identity(images)

    @staticmethod
    def _map_tasks(fn, images):
        """``fn`` over the task axis of ``images (B, M, H, W, C)`` → ``(B, M, D)`` float32."""
        return tf.map_fn(fn, images, fn_output_signature=tf.float32)

    def train_step(self, data):
        inputs, query_labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.head_optimizer is None:
            raise RuntimeError("Call model.compile() before fit().")
        backbone_vars = self.backbone.trainable_variables
        head_vars = self.head.trainable_variables
        # Under tf.distribute each replica holds B / R tasks and the optimizers *sum*
        # the replicas' gradients: scale by 1/R so the update is that of the mean
        # loss over the whole meta-batch.
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        checks = self._check_training_inputs(inputs, replica, replicas)
        with tf.GradientTape() as tape, tf.control_dependencies(checks):
            logits = self(inputs, training=True)
            loss, accuracy = self._loss_and_accuracy(logits, query_labels)
            scaled_loss = loss / replicas if replicas > 1 else loss
        grads = tape.gradient(scaled_loss, backbone_vars + head_vars)
        if backbone_vars:
            self.optimizer.apply_gradients(zip(grads[: len(backbone_vars)], backbone_vars))
        self.head_optimizer.apply_gradients(zip(grads[len(backbone_vars) :], head_vars))
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(accuracy)
        # Norms of this replica's gradient of its own tasks' mean loss (undoing the 1/R).
        if backbone_vars:
            self.phi_grad_norm_tracker.update_state(
                tf.linalg.global_norm(grads[: len(backbone_vars)]) * replicas
            )
        self.head_grad_norm_tracker.update_state(
            tf.linalg.global_norm(grads[len(backbone_vars) :]) * replicas
        )
        if self.task_feedback is not None and "task_classes" in inputs:
            class_acc = self.per_class_accuracy(logits, query_labels, self.ways)
            task_classes = inputs["task_classes"]
            if replicas > 1:
                # Report the whole meta-batch (replica order = batch order) once per worker:
                # every worker's pipeline draws the same stream, so every pool needs it.
                task_classes = _gather_replicas(replica, task_classes, replicas)
                class_acc = _gather_replicas(replica, class_acc, replicas)
            if _reports_here(replica, replicas):
                tf.numpy_function(self._report_feedback, [task_classes, class_acc], [], stateful=True)
        return self._metric_logs(self.metrics)

    def _check_training_inputs(self, inputs, replica, replicas: int) -> list:
        """Checks of a training step's inputs; returns the ops the step must run after.

        While ``fit`` traces the step: the activations must fit in memory
        (`mtl_keras.tensorflow_backend.memory.check_step_memory`, raises `MemoryError` before any step
        runs). Under a `tf.distribute` strategy whose replicas' shares have no static size (a
        meta-batch split unevenly, or any multi-worker pipeline), every step asserts that all
        replicas got the same number of tasks (``tf.errors.InvalidArgumentError`` naming
        the fix; the loss is a mean of the replicas' means). One 2-float all-reduce per step.
        """
        from mtl_keras.tensorflow_backend.memory import check_step_memory

        support = inputs["support_images"].shape
        check_step_memory(self, support, inputs["query_images"].shape, replicas)
        if replicas <= 1 or support.rank is None or support[0] is not None:
            return []  # a static per-replica size: the split is even
        tasks = tf.cast(tf.shape(inputs["support_images"])[0], tf.float32)
        total = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack([tasks, tasks * tasks]))
        # Σb² · R = (Σb)² exactly when every replica has the same b (Cauchy-Schwarz).
        even = tf.equal(total[1] * float(replicas), total[0] * total[0])
        return [
            tf.debugging.Assert(
                even,
                [
                    f"The meta-batch does not split evenly over the {replicas} replicas: use a "
                    f"meta_batch_size that is a multiple of {replicas} (make_episodes(..., "
                    "meta_batch_size=...)). Tasks in all replicas:",
                    total[0],
                ],
            )
        ]

    def _metric_logs(self, metrics=None) -> dict:
        """``{name: value}`` of ``metrics`` (default: loss and accuracy, what evaluation reports)."""
        logs = {m.name: m.result() for m in (metrics or (self.loss_tracker, self.accuracy_tracker))}
        if keras_private.in_multi_worker_mode(tf.distribute.get_strategy()):
            # Keras 3.15 reduces multi-worker step logs with strategy.reduce(MEAN, axis=0),
            # which needs an axis: give each scalar one (the reduced log is a scalar again).
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _report_feedback(self, task_classes, class_accuracy):
        self.task_feedback.report(np.asarray(task_classes), np.asarray(class_accuracy))
        return []

    def test_step(self, data):
        inputs, query_labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(inputs, training=False)
        loss, accuracy = self._loss_and_accuracy(logits, query_labels)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(accuracy)
        return self._metric_logs()

    def predict_step(self, data):
        inputs = data[0] if isinstance(data, tuple) else data
        return self(inputs, training=False)


def _gather_replicas(replica, x, replicas: int):
    """Concatenate ``x`` of every replica along axis 0, in replica order.

    Written with ``all_reduce`` (each replica fills its own slot of a zero tensor):
    ``ReplicaContext.all_gather`` fails under MultiWorkerMirroredStrategy in a
    graph ("destinations can not be empty", TF 2.21). Values must be exact in
    float32 (class ids < 2**24, accuracies).
    """
    slot = tf.one_hot(replica.replica_id_in_sync_group, replicas, dtype=tf.float32)
    slot = tf.reshape(slot, [replicas] + [1] * x.shape.rank)
    spread = slot * tf.cast(x, tf.float32)[None]
    total = replica.all_reduce(tf.distribute.ReduceOp.SUM, spread)
    return tf.cast(tf.reshape(total, tf.concat([[-1], tf.shape(x)[1:]], 0)), x.dtype)


def _reports_here(replica, replicas: int) -> bool:
    """True on the first local replica of each worker (always without a strategy)."""
    if replicas <= 1:
        return True
    replica_id = tf.get_static_value(replica.replica_id_in_sync_group)
    local = len(tf.distribute.get_strategy().extended.worker_devices)
    return replica_id is None or int(replica_id) % max(1, local) == 0
