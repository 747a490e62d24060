"""SavedModel export with an ``adapt_and_classify`` signature (one task per call).

A SavedModel is a TensorFlow format: this module imports TensorFlow when it exports, not
when it is imported, and says what to install where TensorFlow is missing. A model trained
on another backend exports after loading its ``.keras`` file on the TensorFlow backend.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from mtl_keras._tensorflow import import_tensorflow


def export_adapt_and_classify(model, filepath: str, verbose: bool = True) -> str:
    """Write ``model`` (a `MetaTransferModel`) as a TF SavedModel.

    The SavedModel has one signature, ``adapt_and_classify(support_images (S, H, W, C)
    float32, support_labels (S,) int32, query_images (M, H, W, C) float32)`` returning
    ``{"logits": (M, N), "probabilities": (M, N)}`` after ``model.eval_inner_steps``
    inner steps. It refuses, before anything is computed, with an ``InvalidArgumentError``
    whose message says what is wrong and what it must be: images of another ``H, W, C``; a
    label count other than ``S``; labels outside ``0..N-1`` or a class with no support image;
    images with NaN / inf or outside the model's ``input_range`` (0..255 images, say). A
    SavedModel never answers NaN or a confident guess for such inputs.

    The folder is written next to ``filepath`` (``.export-<name>-*``) and renamed into place,
    so a crash never leaves a half-written model at ``filepath``; the temporary folder a killed
    export left behind is removed by the next export to the same path.

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
    import keras

    if keras.backend.backend() != "tensorflow":
        return export_through_tensorflow(model, filepath, verbose=verbose)
    tf = import_tensorflow("export_adapt_and_classify (SavedModel export)")
    from keras.export import ExportArchive

    if not model.backbone.built or not model.head.built:
        raise ValueError("Cannot export an unbuilt model: build the backbone (call it on images) first.")
    h, w, c = model.image_shape
    image_spec = tf.TensorSpec((None, h, w, c), tf.float32)

    def adapt_and_classify(support_images, support_labels, query_images):
        support_images, support_labels, query_images = _checked_signature_inputs(
            tf, (h, w, c), support_images, support_labels, query_images
        )
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
    prefix = f".export-{os.path.basename(os.path.abspath(filepath))}-"
    for stale in os.listdir(parent):  # left by an export killed before its rename
        if stale.startswith(prefix) and os.path.isdir(os.path.join(parent, stale)):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
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


def _checked_signature_inputs(tf, image_shape, support_images, support_labels, query_images):
    """The signature's inputs behind assert ops on their shapes and counts (the TensorSpecs of a
    loaded signature are not enforced: a 32x32 image reached the backbone and failed in a reshape).
    The labels' range and the pixels are checked by `MetaTransferModel.adapt` itself."""
    want = ", ".join(map(str, image_shape))
    checks = [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(images)[1:], tf.constant(image_shape, tf.int32))),
            [f"{name} must have shape (count, {want}) (this model's images); got shape", tf.shape(images)],
        )
        for name, images in (("support_images", support_images), ("query_images", query_images))
    ]
    checks.append(
        tf.debugging.Assert(
            tf.equal(tf.shape(support_labels)[0], tf.shape(support_images)[0]),
            [
                "support_labels must hold one label per support image; got labels, images:",
                tf.shape(support_labels)[0],
                tf.shape(support_images)[0],
            ],
        )
    )
    with tf.control_dependencies(checks):
        return tf.identity(support_images), tf.identity(support_labels), tf.identity(query_images)


#: What the TensorFlow process of `export_through_tensorflow` runs: load the ``.keras`` file on
#: the TensorFlow backend and export it as that backend's own models are exported.
_EXPORT_SCRIPT = """
import sys
import keras
import mtl_keras  # noqa: F401  (registers the classes the file names)
from mtl_keras.export import export_adapt_and_classify
model = keras.saving.load_model(sys.argv[1], compile=False)
export_adapt_and_classify(model, sys.argv[2], verbose=False)
"""


def export_through_tensorflow(model, filepath: str, verbose: bool = True) -> str:
    """Export a model built on another Keras backend (JAX): through its ``.keras`` file, loaded on
    the TensorFlow backend in a subprocess, which writes the same SavedModel a TensorFlow-trained
    model gets (`export_adapt_and_classify`).

    Needs TensorFlow installed beside the other backend (``pip install tensorflow``); the
    training process itself need not import it.

    Raises:
        ImportError: TensorFlow is not installed.
        RuntimeError: the TensorFlow process failed (its last lines of output in the message).
    """
    from mtl_keras._tensorflow import tensorflow_installed

    if not tensorflow_installed():
        raise ImportError(
            "SavedModel export needs TensorFlow (a SavedModel is TensorFlow's format), and it is not "
            "installed: pip install tensorflow. The model can still be saved with model.save('model.keras') "
            "and exported later on a machine with TensorFlow."
        )
    filepath = os.fspath(filepath)
    with tempfile.TemporaryDirectory(prefix="mtl-keras-export-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        done = subprocess.run(
            [sys.executable, "-c", _EXPORT_SCRIPT, path, os.path.abspath(filepath)],
            env=env,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"Export through the TensorFlow backend failed (exit {done.returncode}):\n{tail}")
    if verbose:
        h, w, c = model.image_shape
        print(
            f"Saved adapt_and_classify SavedModel to {filepath} through the TensorFlow backend "
            f"(ways={model.ways}, images {h}x{w}x{c}, {model.eval_inner_steps} inner steps)."
        )
    return filepath
