"""`MetaTransferModel`'s steps on the JAX backend: stateless, `jax.value_and_grad` through the
unrolled inner loop, both optimizers' `stateless_apply`.

Keras's JAX trainer threads one state through ``fit``: ``(trainable, non-trainable, optimizer,
metrics)`` variables, where "optimizer" is ``model.optimizer``'s. Meta-transfer learning has two
outer optimizers — Φ's (``model.optimizer``) and the head initialisation's
(``model.head_optimizer``) — so the training state here carries a fifth element, the head
optimizer's variables: `make_train_function` reads them from the head optimizer before each
step and writes them back after it (a few small arrays: the head is ``D × N``), and hands
Keras's own loop the four-element state it expects. The same wrapper, outside the compiled
step where values are concrete, checks each meta-batch's support labels (a traced function
cannot raise on data) and reports the per-class query accuracy to ``model.task_feedback``
(the hard-task pool), which the TensorFlow step does through `tf.numpy_function`.

Everything between — the backbone call, the inner loop, the loss — is the model's own
backend-agnostic forward pass (`MetaTransferModel.call`), run by `keras.Model.stateless_call`.
"""

from __future__ import annotations

import jax
import keras
import numpy as np
from keras import ops

from mtl_keras.inputs import check_images

#: Keys of the training step's logs that carry the per-class feedback out of the compiled step
#: (taken out of the logs before Keras sees them).
_FEEDBACK_KEYS = ("_task_classes", "_class_accuracy")


class JaxSteps:
    """`train_step` / `test_step` of `MetaTransferModel` on JAX (stateless, Keras's JAX contract).

    ``train_step(state, data) → (logs, state)`` with ``state = (trainable, non_trainable,
    optimizer, metrics, head_optimizer)`` variable values; ``test_step(state, data)`` with
    Keras's ``(trainable, non_trainable, metrics)``.
    """

    def _is_concrete(self, x) -> bool:
        """Whether ``x`` holds values now (not a tracer inside ``jax.jit``)."""
        return not isinstance(x, jax.core.Tracer)

    def _traced_support_labels(self, support_labels):
        # No data-dependent error inside jit: `make_train_function` checks the labels before the step.
        return support_labels

    def _traced_images(self, images, name: str):
        # No data-dependent error inside jit: `make_train_function` checks the images before the step.
        return images

    @staticmethod
    def _map_tasks(fn, images):
        """``fn`` over the task axis of ``images (B, M, H, W, C)`` → ``(B, M, D)`` float32."""
        return ops.map(fn, images)

    # ----------------------------------------------------------------- variables
    def _outer_indices(self):
        """Positions of Φ (the backbone's trainable weights) and of the head initialisation in
        ``self.trainable_variables``, in the order each optimizer was built on."""
        position = {id(v): i for i, v in enumerate(self.trainable_variables)}
        phi = [position[id(v)] for v in self.backbone.trainable_variables]
        head = [position[id(v)] for v in self.head.trainable_variables]
        return phi, head

    def _stateless_metrics(self, metrics_variables, updates, logged):
        """Apply ``updates`` (``[(metric, value)]``) to the metric state; ``(logs of the metrics
        ``logged``, new state)``."""
        mapping = list(zip(self.metrics_variables, metrics_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            for metric, value in updates:
                metric.update_state(value)
            logs = {m.name: m.result() for m in logged}
        new = []
        for ref, old in zip(self.metrics_variables, metrics_variables):
            value = scope.get_current_value(ref)
            new.append(old if value is None else value)
        return logs, new

    # ----------------------------------------------------------------- steps
    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables, head_optimizer_variables = state
        inputs, query_labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        phi_index, head_index = self._outer_indices()

        def loss_fn(trainable):
            logits, new_non_trainable = self.stateless_call(trainable, non_trainable, inputs, training=True)
            loss, accuracy = self._loss_and_accuracy(logits, query_labels)
            return loss, (logits, accuracy, new_non_trainable)

        (loss, (logits, accuracy, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            list(trainable)
        )
        trainable = list(trainable)

        def apply(optimizer, optimizer_state, index):
            """One optimizer's update of the weights at ``index``: its new state and gradient norm."""
            part = [grads[i] for i in index]
            new, optimizer_state = optimizer.stateless_apply(
                optimizer_state, part, [trainable[i] for i in index]
            )
            for i, value in zip(index, new):
                trainable[i] = value
            return optimizer_state, _global_norm(part)

        updates = [(self.loss_tracker, loss), (self.accuracy_tracker, accuracy)]
        if phi_index:
            optimizer_variables, norm = apply(self.optimizer, optimizer_variables, phi_index)
            updates.append((self.phi_grad_norm_tracker, norm))
        head_optimizer_variables, norm = apply(self.head_optimizer, head_optimizer_variables, head_index)
        updates.append((self.head_grad_norm_tracker, norm))
        logs, metrics_variables = self._stateless_metrics(metrics_variables, updates, self.metrics)
        if self.task_feedback is not None and "task_classes" in inputs:
            logs[_FEEDBACK_KEYS[0]] = inputs["task_classes"]
            logs[_FEEDBACK_KEYS[1]] = self.per_class_accuracy(logits, query_labels, self.ways)
        state = (trainable, non_trainable, optimizer_variables, metrics_variables, head_optimizer_variables)
        return logs, state

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        inputs, query_labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits, non_trainable = self.stateless_call(trainable, non_trainable, inputs, training=False)
        loss, accuracy = self._loss_and_accuracy(logits, query_labels)
        logs, metrics_variables = self._stateless_metrics(
            metrics_variables,
            [(self.loss_tracker, loss), (self.accuracy_tracker, accuracy)],
            (self.loss_tracker, self.accuracy_tracker),
        )
        return logs, (trainable, non_trainable, metrics_variables)

    def _check_step_inputs(self, data) -> None:
        """The data-dependent checks no jitted step can raise: labels, then images (ValueError)."""
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if "support_labels" in inputs:
            self._checked_support_labels(np.asarray(inputs["support_labels"]))
        for name in ("support_images", "query_images"):
            if name in inputs:
                check_images(np.asarray(inputs[name]), name, self.input_range)

    def _restore_variables(self, state) -> None:
        """Assign Keras's JAX training ``state`` (trainable, non-trainable, optimizer, metrics) back."""
        groups = (
            self.trainable_variables,
            self.non_trainable_variables,
            self.optimizer.variables,
            self.metrics_variables,
        )
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values or ()):
                variable.assign(value)
        self._jax_state_synced = True

    def make_train_function(self, force=False):
        """Keras's JAX train function around `train_step`, carrying the head optimizer's state.

        Compiled with ``jax.jit`` unless ``run_eagerly`` or ``jit_compile=False``. Each call runs
        ``steps_per_execution`` steps; before each, the meta-batch's support labels are checked
        (`_checked_support_labels`: a clear error instead of a silently wrong task), after each the
        per-class query accuracy goes to ``task_feedback``.
        """
        if self.train_function is not None and not force:
            return
        if self.head_optimizer is None:
            raise RuntimeError("Call model.compile() before fit().")
        step = self.train_step
        if not self.run_eagerly and self.jit_compile:
            step = jax.jit(step, donate_argnums=0)
        head_variables = self.head_optimizer.variables

        def one_step(state, data):
            try:
                self._check_step_inputs(data)
            except Exception:
                # Keras's JAX fit has taken the values out of the variables into `state`; put them
                # back, or a refused batch would leave a model that cannot even be read.
                self._restore_variables(state)
                raise
            state = (*state, [v.value for v in head_variables])
            logs, state = step(state, data)
            for variable, value in zip(head_variables, state[4]):
                variable.assign(value)
            feedback = [logs.pop(key, None) for key in _FEEDBACK_KEYS]
            if feedback[0] is not None:
                self.task_feedback.report(np.asarray(feedback[0]), np.asarray(feedback[1]))
            return logs, tuple(state[:4])

        def function(state, iterator):
            logs, state = one_step(state, next(iterator))
            for _ in range(self.steps_per_execution - 1):
                try:
                    data = next(iterator)
                except StopIteration:
                    break
                logs, state = one_step(state, data)
            return logs, state

        self.train_function = function


def _global_norm(tensors):
    """``√(Σ‖t‖²)`` over ``tensors`` (`tf.linalg.global_norm`)."""
    return ops.sqrt(sum(ops.sum(ops.square(t)) for t in tensors))
