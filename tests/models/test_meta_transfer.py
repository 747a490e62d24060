import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import MetaTransferModel, PretrainModel, make_episodes, resnet12
from mtl_keras.layers import phi_weights, theta_weights


def _model(ways=4, backbone=None, **kwargs):
    backbone = backbone or resnet12((16, 16, 1), widths=(4, 8, 8, 8))
    kwargs.setdefault("inner_steps", 3)
    kwargs.setdefault("eval_inner_steps", 5)
    kwargs.setdefault("inner_lr", 0.5)
    return MetaTransferModel(backbone, ways=ways, **kwargs)


def _episodes(split, ways=4, batches=3, seed=0):
    return make_episodes(split, ways, 2, 3, meta_batch_size=2, num_batches=batches, seed=seed)


def test_fit_leaves_theta_bit_identical_and_moves_phi_and_head(proto_split):
    model = _model()
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    theta = [v.numpy().copy() for v in theta_weights(model.backbone)]
    phi = [v.numpy().copy() for v in phi_weights(model.backbone)]
    head = [v.numpy().copy() for v in model.head.weights]
    model.fit(_episodes(proto_split), epochs=1, verbose=0)
    for before, v in zip(theta, theta_weights(model.backbone)):
        np.testing.assert_array_equal(before, v.numpy(), err_msg=v.path)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(phi, phi_weights(model.backbone)))
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(head, model.head.weights))


def test_meta_gradients_reach_phi_and_head_init_and_nothing_else(proto_split):
    model = _model()
    trainable = {id(v) for v in model.trainable_weights}
    expected = {id(v) for v in phi_weights(model.backbone)} | {id(v) for v in model.head.weights}
    assert trainable == expected
    inputs, labels = next(iter(_episodes(proto_split)))
    with tf.GradientTape() as tape:
        logits = model(inputs, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_two_learning_rates_reach_two_optimizers():
    model = _model()
    model.compile(phi_learning_rate=3e-4, head_learning_rate=2e-2)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert float(model.head_optimizer.learning_rate) == pytest.approx(2e-2)
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")


def test_fit_reports_per_class_accuracy_to_task_feedback(proto_split):
    class Recorder:
        def __init__(self):
            self.calls = []

        def report(self, task_classes, class_accuracy):
            self.calls.append((task_classes, class_accuracy))

    model = _model()
    model.task_feedback = recorder = Recorder()
    model.compile()
    model.fit(_episodes(proto_split, batches=3), epochs=1, verbose=0)
    assert len(recorder.calls) == 3
    classes, acc = recorder.calls[0]
    assert classes.shape == (2, 4) and acc.shape == (2, 4)
    assert set(classes.ravel()) <= set(proto_split.class_ids)
    assert np.all((acc >= 0) & (acc <= 1))


def test_per_class_accuracy_counts_each_class():
    logits = tf.constant([[[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0], [0, 0, 5.0], [5.0, 0, 0]]])
    labels = tf.constant([[0, 0, 1, 1, 2, 2]])
    acc = MetaTransferModel.per_class_accuracy(logits, labels, 3).numpy()
    np.testing.assert_allclose(acc, [[0.5, 0.0, 0.5]])


def test_keras_round_trip_reproduces_outputs(proto_split, tmp_path):
    model = _model()
    model.compile()
    model.fit(_episodes(proto_split, batches=1), epochs=1, verbose=0)
    inputs, _ = next(iter(_episodes(proto_split, batches=1, seed=5)))
    expected = model(inputs).numpy()
    path = tmp_path / "mtl.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MetaTransferModel)
    assert loaded.inner_steps == 3 and loaded.eval_inner_steps == 5
    np.testing.assert_allclose(loaded(inputs).numpy(), expected, atol=1e-5)
    assert {w.name for w in loaded.backbone.trainable_weights} == {"scale", "shift"}


def test_from_pretrained_shares_backbone_and_switches_phase(proto_split):
    pre = PretrainModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), num_classes=8)
    assert "kernel" in {w.name for w in pre.backbone.trainable_weights}
    model = MetaTransferModel.from_pretrained(pre, ways=4, inner_steps=2)
    assert model.backbone is pre.backbone
    assert {w.name for w in model.backbone.trainable_weights} == {"scale", "shift"}


def test_transductive_batch_norm_runs_and_differs_from_frozen(proto_split):
    inputs, _ = next(iter(_episodes(proto_split, batches=1)))
    frozen = _model()
    trans = _model(backbone=frozen.backbone, head=frozen.head, batch_norm="transductive")
    a, b = frozen(inputs).numpy(), trans(inputs, training=True).numpy()
    assert a.shape == b.shape and not np.allclose(a, b)


def test_bad_inputs_are_named(proto_split):
    model = _model()
    with pytest.raises(ValueError, match="missing"):
        model({"support_images": np.zeros((1, 4, 16, 16, 1), "float32")})
    with pytest.raises(ValueError, match=r"support_images must have shape \(B, N\*K, H, W, C\)"):
        model.adapt(
            np.zeros((4, 16, 16, 1), "float32"), np.zeros((4,), "int32"), np.zeros((4, 16, 16, 1), "float32")
        )
    with pytest.raises(ValueError, match="batch_norm"):
        _model(batch_norm="train")


def test_keras_round_trip_restores_both_optimizers(proto_split, tmp_path):
    model = _model()
    model.compile(phi_learning_rate=2e-3, head_learning_rate=3e-2)
    model.fit(_episodes(proto_split, batches=2), epochs=1, verbose=0)
    path = tmp_path / "mtl.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(2e-3)
    assert float(loaded.head_optimizer.learning_rate) == pytest.approx(3e-2)
    assert int(loaded.head_optimizer.iterations) == int(model.head_optimizer.iterations) == 2
    for a, b in zip(model.head_optimizer.variables, loaded.head_optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _bf16_model(**kwargs):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        return _model(**kwargs)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_mixed_bfloat16_fit_updates_float32_phi_and_head(proto_split):
    model = _bf16_model()
    assert model.backbone.layers[1].compute_dtype == "bfloat16"
    phi = phi_weights(model.backbone)
    assert all(v.dtype == "float32" for v in phi + model.head.weights)
    inputs, labels = next(iter(_episodes(proto_split, batches=1)))
    with tf.GradientTape() as tape:
        logits = model(inputs, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    assert logits.dtype == tf.float32  # inner loop and loss in float32
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g.dtype == tf.float32 and np.isfinite(g.numpy()).all() for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    before = [v.numpy().copy() for v in phi]
    history = model.fit(_episodes(proto_split, batches=2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, phi))


def test_mixed_bfloat16_logits_are_close_to_float32(proto_split):
    f32, bf16 = _model(), _bf16_model()
    bf16.set_weights(f32.get_weights())
    inputs, _ = next(iter(_episodes(proto_split, batches=1)))
    a, b = f32(inputs).numpy(), bf16(inputs).numpy()
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=0.05 * np.abs(a).max())
    assert np.mean(a.argmax(-1) == b.argmax(-1)) >= 0.9


def test_train_step_compiles_with_xla(proto_split):
    model = _model()
    model.compile(jit_compile=True)
    history = model.fit(_episodes(proto_split, batches=1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_folded_batch_norm_gives_the_same_logits_and_gradients(proto_split):
    folded = _model()
    plain = _model(backbone=folded.backbone, head=folded.head, fold_batch_norm=False)
    assert len(folded.weights) == len(plain.weights)
    inputs, labels = next(iter(_episodes(proto_split, batches=1)))
    np.testing.assert_allclose(folded(inputs).numpy(), plain(inputs).numpy(), rtol=1e-4, atol=1e-5)
    grads = []
    for model in (folded, plain):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        grads.append(tape.gradient(loss, model.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(tf.reduce_max(tf.abs(b))) + 1e-7)


def test_train_on_batch_and_test_on_batch_accept_x_y(proto_split):
    model = _model()
    model.compile()
    inputs, labels = next(iter(_episodes(proto_split, batches=1)))
    logs = model.train_on_batch(inputs, labels, return_dict=True)
    assert set(logs) >= {"loss", "accuracy"} and np.isfinite(logs["loss"])
    logs = model.test_on_batch(inputs, labels, return_dict=True)
    assert 0.0 <= logs["accuracy"] <= 1.0
