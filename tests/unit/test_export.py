"""Export round trip: a process that never imports mtl_keras reproduces the model."""

import json
import subprocess
import sys
import textwrap

import numpy as np

from mtl_keras import MetaTransferModel, make_episodes, resnet12
from tests.helpers import patient

LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, data = sys.argv[1], np.load(sys.argv[2])
    fn = tf.saved_model.load(path).signatures["adapt_and_classify"]
    out = fn(support_images=tf.constant(data["support"]), support_labels=tf.constant(data["labels"]),
             query_images=tf.constant(data["query"]))
    np.save(sys.argv[3], out["logits"].numpy())
    np.save(sys.argv[4], out["probabilities"].numpy())
    print(json.dumps({"mtl_keras_imported": "mtl_keras" in sys.modules}))
    """
)


def test_export_round_trip_in_a_subprocess_without_mtl_keras(proto_split, tmp_path):
    model = MetaTransferModel(
        resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=4, inner_steps=2, eval_inner_steps=7, inner_lr=0.5
    )
    model.compile(phi_learning_rate=1e-2)
    model.fit(make_episodes(proto_split, 4, 2, 3, meta_batch_size=2, num_batches=2), epochs=1, verbose=0)
    inputs, _ = next(iter(make_episodes(proto_split, 4, 2, 3, num_batches=1, seed=11)))
    expected = model(inputs).numpy()[0]
    export_dir = tmp_path / "saved"
    model.export(str(export_dir), verbose=False)
    data = tmp_path / "task.npz"
    np.savez(
        data,
        support=inputs["support_images"].numpy()[0],
        labels=inputs["support_labels"].numpy()[0],
        query=inputs["query_images"].numpy()[0],
    )
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    logits_file, probs_file = tmp_path / "logits.npy", tmp_path / "probs.npy"
    result = subprocess.run(
        [sys.executable, str(script), str(export_dir), str(data), str(logits_file), str(probs_file)],
        capture_output=True,
        text=True,
        timeout=patient(300),
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"mtl_keras_imported": False}
    logits = np.load(logits_file)
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    np.testing.assert_allclose(np.load(probs_file).sum(-1), 1.0, atol=1e-5)


def test_export_replaces_existing_folder_atomically(proto_split, tmp_path):
    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3, eval_inner_steps=2)
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    model.export(str(target), verbose=False)
    assert not (target / "stale.txt").exists()
    assert (target / "saved_model.pb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_the_exported_signature_refuses_bad_inputs_with_a_clear_message(tmp_path):
    """Shapes, label count, label range, NaN and 0..255 pixels: each an InvalidArgumentError that
    says what is wrong, never a NaN or a confident answer (a 32x32 image into a 16x16 export used to
    fail as 'Input to reshape is a tensor with ... values'; NaN pixels gave NaN probabilities)."""
    import pytest
    import tensorflow as tf

    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3, eval_inner_steps=2)
    model.export(str(tmp_path / "saved"), verbose=False)
    fn = tf.saved_model.load(str(tmp_path / "saved")).signatures["adapt_and_classify"]
    rng = np.random.default_rng(0)
    support = rng.random((6, 16, 16, 1)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2], dtype="int32")
    query = rng.random((4, 16, 16, 1)).astype("float32")

    def call(s=support, y=labels, q=query):
        return fn(support_images=tf.constant(s), support_labels=tf.constant(y), query_images=tf.constant(q))

    probabilities = call()["probabilities"].numpy()
    assert probabilities.shape == (4, 3) and np.all(np.isfinite(probabilities))
    cases = [
        (
            dict(q=rng.random((4, 32, 32, 1)).astype("float32")),
            r"query_images must have shape \(count, 16, 16, 1\)",
        ),
        (
            dict(s=rng.random((6, 16, 16, 3)).astype("float32")),
            r"support_images must have shape \(count, 16, 16, 1\)",
        ),
        (dict(y=labels[:4]), r"one label per support image; got labels, images:.*4.*6"),
        (dict(y=np.array([0, 0, 1, 1, 7, 7], dtype="int32")), r"support_labels"),
        (dict(q=np.where(query > 0.5, np.nan, query).astype("float32")), r"query_images hold NaN or inf"),
        (dict(s=support * 255), r"support_images must lie in \[0, 1\] \(divide 0..255 images by 255\)"),
    ]
    for kwargs, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call(**kwargs)
