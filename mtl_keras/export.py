"""SavedModel export with an ``adapt_and_classify`` signature (one task per call).

A SavedModel is a TensorFlow format: this module imports TensorFlow when it exports, not
when it is imported, and says what to install where TensorFlow is missing. A model trained
on another backend exports after loading its ``.keras`` file on the TensorFlow backend.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from mtl_keras._quiet import import_tensorflow


def export_adapt_and_classify(model, filepath: str, verbose: bool = True) -> str:
    """Write ``model`` (a `MetaTransferModel`) as a TF SavedModel.

    The SavedModel has one signature, ``adapt_and_classify(support_images (S, H, W, C)
    float32, support_labels (S,) int32, query_images (M, H, W, C) float32)`` returning
    ``{"logits": (M, N), "probabilities": (M, N)}`` after ``model.eval_inner_steps``
    inner steps. The folder is written next to ``filepath`` and renamed into place,
    so a crash never leaves a half-written model at ``filepath``.

    Args:
        model: a built `MetaTransferModel`.
        filepath: destination folder (replaced if it exists).
        verbose: print what was written.

    Returns:
        ``filepath``.

    Raises:
        ImportError: TensorFlow is not installed (a SavedModel is written by TensorFlow).
        ValueError: the model is not built.
    """
    tf = import_tensorflow("export_adapt_and_classify (SavedModel export)")
    from keras.export import ExportArchive

    if not model.backbone.built or not model.head.built:
        raise ValueError("Cannot export an unbuilt model: build the backbone (call it on images) first.")
    h, w, c = model.image_shape
    image_spec = tf.TensorSpec((None, h, w, c), tf.float32)

    def adapt_and_classify(support_images, support_labels, query_images):
        logits = model.adapt(support_images[None], support_labels[None], query_images[None], training=False)[
            0
        ]
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "adapt_and_classify",
        adapt_and_classify,
        input_signature=[
            tf.TensorSpec((None, h, w, c), tf.float32, name="support_images"),
            tf.TensorSpec((None,), tf.int32, name="support_labels"),
            tf.TensorSpec(image_spec.shape, tf.float32, name="query_images"),
        ],
    )
    filepath = os.fspath(filepath)
    parent = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        archive.write_out(tmp, verbose=False)
        if os.path.exists(filepath):
            shutil.rmtree(filepath)
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(
            f"Saved adapt_and_classify SavedModel to {filepath} "
            f"(ways={model.ways}, images {h}x{w}x{c}, {model.eval_inner_steps} inner steps)."
        )
    return filepath
