"""`batch_statistics_view`: a backbone whose batch norms normalise with the statistics of each call."""

from __future__ import annotations

import keras
from keras import ops


class _BatchStatisticsNorm(keras.layers.Layer):
    """``norm`` applied with the mean and variance of the batch it is called on.

    ``γ (x − mean(x)) / √(var(x) + ε) + β`` over every axis but ``norm``'s, with ``norm``'s own
    γ, β and ε (gradients reach them), and **no** update of its moving statistics: the
    pretrained statistics stay as they are, whatever the view is called on. Owns no variables.
    """

    def __init__(self, norm: keras.layers.BatchNormalization, **kwargs):
        kwargs.setdefault("name", f"{norm.name}_batch_statistics")
        super().__init__(dtype=norm.dtype_policy, **kwargs)
        self.norm = norm
        self.built = True

    def call(self, inputs):
        norm = self.norm
        axis = norm.axis if isinstance(norm.axis, int) else norm.axis[0]
        axis = axis % len(inputs.shape)
        reduce = [a for a in range(len(inputs.shape)) if a != axis]
        x = ops.cast(inputs, "float32")  # statistics in float32, as Keras' own BN
        mean, variance = ops.moments(x, axes=reduce, keepdims=True)
        shape = [1] * len(inputs.shape)
        shape[axis] = inputs.shape[axis]
        out = (x - mean) * ops.rsqrt(variance + norm.epsilon)
        if norm.scale:
            out = out * ops.reshape(ops.cast(norm.gamma, "float32"), shape)
        if norm.center:
            out = out + ops.reshape(ops.cast(norm.beta, "float32"), shape)
        return ops.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def batch_statistics_view(model: keras.Model) -> keras.Model:
    """A view of functional ``model`` in which every batch norm uses the statistics of the batch.

    Transductive batch normalisation for meta-learning: call the view on one task's images
    (e.g. its support and query together, or each set on its own, as the official MTL
    TensorFlow code does by running contrib's ``batch_norm`` in training mode) and
    each batch norm normalises with *that* batch's mean and variance. Unlike calling Keras'
    `BatchNormalization` with ``training=True``, the moving statistics are never updated and
    the layers' ``trainable`` flags do not matter (Keras uses batch statistics only for
    ``training and layer.trainable``, and the ``meta`` phase freezes BN).

    The view shares every layer and variable with ``model``; γ and β receive gradients.

    Args:
        model: a functional `keras.Model`.

    Returns:
        A functional `keras.Model` with the same inputs and outputs.

    Raises:
        ValueError: ``model`` has no batch normalisation to switch (transductive BN would be a no-op).
    """
    switched = []

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.BatchNormalization):
            switched.append(layer.name)
            return _BatchStatisticsNorm(layer)(args[0] if args else kwargs["inputs"])
        return layer(*args, **kwargs)

    view = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call_function)
    if not switched:
        raise ValueError(
            f"Model '{model.name}' has no BatchNormalization layer: transductive batch norm would change "
            "nothing. Use batch_norm='frozen'."
        )
    return view


def reestimate_batch_norm(model: keras.Model, batches, max_batches: int | None = None) -> int:
    """Set every batch norm's moving statistics to the mean of its batch statistics over ``batches``.

    After training, each `keras.layers.BatchNormalization` holds an exponential moving average
    of the statistics it saw; on a small set (a few steps per epoch) that average still
    remembers the start of training, and inference-mode features are wrong. This recomputes it
    from the current weights ("precise batch norm", Wu & Johnson 2021, arXiv 2105.07576): for
    the ``i``-th batch (from 0) each layer's momentum is ``i / (i + 1)``, so after the last batch
    its moving mean and variance are the plain averages of the batch means and variances.

    Only the moving statistics change; γ, β and every other weight stay. Layers that do not
    use batch statistics in training (``trainable=False``) are left as they are. Runs eagerly,
    batch by batch (``model(images, training=True)``): give it un-augmented images of the
    training distribution, a few thousand are plenty.

    Args:
        model: a `keras.Model` (e.g. a backbone) ``images → ...``; called with ``training=True``,
            so a dropout inside it is active (pass the backbone, not a model with augmentation).
        batches: an iterable of image batches ``(b, H, W, C)``, or of ``(images, labels)`` pairs
            (labels are ignored), e.g. `mtl_keras.data.pretrain_dataset`.
        max_batches: use at most this many batches (default: all).

    Returns:
        The number of batches used (0: nothing changed).

    Example:
        >>> reestimate_batch_norm(backbone, pretrain_dataset(train, 128), max_batches=20)
    """
    from mtl_keras import keras_private

    norms = [
        layer
        for layer in keras_private.all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    used = 0
    try:
        for batch in batches:
            if max_batches is not None and used >= max_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in norms:
                layer.momentum = used / (used + 1.0)
            model(images, training=True)
            used += 1
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return used
