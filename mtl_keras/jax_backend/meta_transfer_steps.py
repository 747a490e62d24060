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

Under a `keras.distribution` (``DataParallel``) the step is compiled as Keras's JAX trainer
compiles its own: Keras's epoch iterator lays each meta-batch out over the devices (the episode
axis, axis 0 of every input, split among them), and ``jax.jit`` gets the variables' layouts as
``out_shardings`` (replicated under ``DataParallel``), the head optimizer's with the rest. The
step itself is unchanged: XLA partitions it, and the loss is the mean over the whole meta-batch,
so the update equals one device's. A meta-batch the devices cannot split evenly is refused
before the step with a `ValueError` that names its size and the device count.
"""

from __future__ import annotations

import math
import re

import jax
import keras
import numpy as np
from keras import ops

from mtl_keras import keras_private
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
                images = inputs[name]
                if isinstance(images, jax.Array) and _images_pass(images, self.input_range):
                    continue  # checked where the images are (a GPU): three numbers to the host
                check_images(np.asarray(images), name, self.input_range)  # numpy, or the message

    def _restore_variables(self, state, training: bool = True) -> None:
        """Assign Keras's JAX ``state`` back to the variables: the training state (trainable,
        non-trainable, optimizer, metrics), or with ``training=False`` the evaluation state
        (trainable, non-trainable, metrics)."""
        groups = [self.trainable_variables, self.non_trainable_variables]
        groups += [self.optimizer.variables, self.metrics_variables] if training else [self.metrics_variables]
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values or ()):
                variable.assign(value)
        self._jax_state_synced = True

    def _check_variables_distributed(self) -> None:
        """Under a `keras.distribution` over several devices, every variable must have been
        created under it (laid out over its devices); else a `ValueError` that says so, instead
        of JAX's "incompatible devices" error at the first step."""
        distribution = keras.distribution.distribution()
        if distribution is None or distribution.device_mesh.devices.size < 2:
            return
        variables = [*self.variables, *self.optimizer.variables]
        if self.head_optimizer is not None:
            variables += self.head_optimizer.variables
        local = [v for v in variables if len(v.value.sharding.device_set) == 1]
        if local:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': variable '{local[0].path}' (and {len(local) - 1} "
                f"more) lives on one device, but the keras.distribution {type(distribution).__name__} "
                f"spans {distribution.device_mesh.devices.size}: the model was created (or compiled) "
                "before keras.distribution.set_distribution(...). Set the distribution first, then "
                "create and compile the model (or create both inside `with distribution.scope():`)."
            )

    def make_train_function(self, force=False):
        """Keras's JAX train function around `train_step`, carrying the head optimizer's state.

        Compiled with ``jax.jit`` unless ``run_eagerly`` or ``jit_compile=False``; under a
        `keras.distribution` with the variables' layouts as ``out_shardings``, as Keras's own
        JAX trainer does (each meta-batch comes already split over the devices by Keras's epoch
        iterator). Each call runs ``steps_per_execution`` steps; before each, the meta-batch's
        support labels are checked (`_checked_support_labels`: a clear error instead of a
        silently wrong task), after each the per-class query accuracy goes to ``task_feedback``.

        Raises:
            ValueError: (from the returned function) a meta-batch ``(B, ...)`` whose ``B`` the
                distribution's devices cannot split evenly, or failing the input checks; the
                variables keep their values from before the refused meta-batch.
        """
        if self.train_function is not None and not force:
            return
        if self.head_optimizer is None:
            raise RuntimeError("Call model.compile() before fit().")
        head_variables = self.head_optimizer.variables
        step = self.train_step
        self._check_variables_distributed()
        if not self.run_eagerly and self.jit_compile:
            out_shardings = None
            if keras.distribution.distribution() is not None:
                # (logs, (trainable, non-trainable, optimizer, metrics, head optimizer)).
                state = (*keras_private.state_sharding_spec(self), [v.value.sharding for v in head_variables])
                out_shardings = (None, state)
            step = jax.jit(step, donate_argnums=0, out_shardings=out_shardings)

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

        def next_meta_batch(state, iterator):
            try:
                return next(iterator)
            except ValueError:
                if iterator.refused:  # Keras's fit holds the values in `state` only: put them back
                    self._restore_variables(state)
                raise

        def function(state, iterator):
            iterator = _ExplainedIterator(iterator)
            logs, state = one_step(state, next_meta_batch(state, iterator))
            for _ in range(self.steps_per_execution - 1):
                try:
                    data = next_meta_batch(state, iterator)
                except StopIteration:
                    break
                logs, state = one_step(state, data)
            return logs, state

        self.train_function = function

    def make_test_function(self, force=False):
        """Keras's JAX test function (with its ``out_shardings`` under a `keras.distribution`),
        refusing a meta-batch the devices cannot split with the `ValueError` of
        `make_train_function` instead of JAX's sharding error."""
        if self.test_function is not None and not force:
            return
        self._check_variables_distributed()
        super().make_test_function(force=force)
        keras_function = self.test_function

        def function(state, iterator):
            iterator = _ExplainedIterator(iterator)
            try:
                return keras_function(state, iterator)
            except ValueError:
                if iterator.refused and not any(v.is_deleted() for v in jax.tree.leaves(state)):
                    self._restore_variables(state, training=False)  # not yet donated to a step
                raise

        self.test_function = function


class _ExplainedIterator:
    """Keras's batch iterator, whose JAX sharding error on a meta-batch that the distribution's
    devices cannot split (Keras lays each batch out over them as it hands it over) becomes a
    `ValueError` naming the meta-batch's size, the device count and the fix; ``refused`` says
    that it did."""

    def __init__(self, iterator):
        self.iterator = iterator
        self.refused = False

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self.iterator)
        except ValueError as err:
            explained = _indivisible_meta_batch(err)
            if explained is None:
                raise
            self.refused = True
            raise explained from err


@jax.jit
def _image_summary(images):
    """``[all finite (1/0), min, max]`` of ``images``, computed on their device(s)."""
    values = images.astype("float32")
    return jax.numpy.stack(
        [jax.numpy.all(jax.numpy.isfinite(values)).astype("float32"), values.min(), values.max()]
    )


def _images_pass(images: jax.Array, input_range: tuple[float, float] | None) -> bool:
    """Whether `check_images` would pass ``images``, decided without copying them to the host.

    Keras's JAX epoch iterator puts each meta-batch on the accelerator before the train function
    sees it (one batch ahead): reading the images back for a host-side check moved the whole
    meta-batch (about 70 MB at 84x84, 8 tasks of 100 images) back over PCIe every step. A batch
    that fails is checked again on the host, by `check_images`, for its message.
    """
    if images.size == 0:
        return True
    finite, low, high = (float(v) for v in np.asarray(_image_summary(images)))
    if finite != 1.0:
        return False
    if input_range is None:
        return True
    return low >= input_range[0] - 1e-6 and high <= input_range[1] + 1e-6


def _indivisible_meta_batch(error: ValueError) -> ValueError | None:
    """The clear error for JAX's ``IndivisibleError`` under a `keras.distribution`, else None."""
    distribution = keras.distribution.distribution()
    if distribution is None or type(error).__name__ != "IndivisibleError":
        return None
    mesh = distribution.device_mesh
    devices = int(mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)])
    # JAX names the array's global shape: "... (full shape: (3, 12, 16, 16, 1), ...".
    found = re.search(r"full shape: \((\d+)", str(error))
    size = int(found.group(1)) if found else None
    suggestion = devices * max(1, math.ceil(size / devices)) if size else 2 * devices
    what = f"A meta-batch of {size} tasks" if size else "A meta-batch"
    return ValueError(
        f"{what} cannot be split evenly over the {devices} devices of the keras.distribution "
        f"{type(distribution).__name__}, which divides the episode axis (axis 0 of every input) among "
        f"them. Make meta_batch_size a multiple of {devices} (e.g. make_episodes(..., "
        f"meta_batch_size={suggestion})); with arrays, a batch_size that is a multiple of {devices} and "
        f"divides the number of tasks; or give the distribution a number of devices that divides the "
        "meta-batch."
    )


def _global_norm(tensors):
    """``√(Σ‖t‖²)`` over ``tensors`` (`tf.linalg.global_norm`)."""
    return ops.sqrt(sum(ops.sum(ops.square(t)) for t in tensors))
