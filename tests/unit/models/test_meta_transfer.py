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


@pytest.mark.backends
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


@pytest.mark.backends
def test_two_learning_rates_reach_two_optimizers():
    model = _model()
    model.compile(phi_learning_rate=3e-4, head_learning_rate=2e-2)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert float(model.head_optimizer.learning_rate) == pytest.approx(2e-2)
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")


@pytest.mark.backends
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


@pytest.mark.backends
def test_from_pretrained_shares_backbone_and_switches_phase(proto_split):
    pre = PretrainModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), num_classes=8)
    assert "kernel" in {w.name for w in pre.backbone.trainable_weights}
    model = MetaTransferModel.from_pretrained(pre, ways=4, inner_steps=2)
    assert model.backbone is pre.backbone
    assert {w.name for w in model.backbone.trainable_weights} == {"scale", "shift"}


@pytest.mark.parametrize("mode", ["transductive", "transductive_separate"])
def test_transductive_batch_norm_differs_from_frozen_at_the_same_steps(proto_split, mode):
    """Issue 14: in the meta phase BN is untrainable, and Keras uses batch statistics only for
    ``training and trainable``: the old transductive mode equalled frozen exactly."""
    inputs, _ = next(iter(_episodes(proto_split, batches=1)))
    frozen = _model()
    trans = _model(backbone=frozen.backbone, head=frozen.head, batch_norm=mode)
    for training in (False, True):  # the same inner steps on both sides
        a, b = frozen(inputs, training=training).numpy(), trans(inputs, training=training).numpy()
        assert a.shape == b.shape and np.abs(a - b).max() > 1e-3, training


def _support_features(model, inputs):
    support, _ = model._embed_episodes(inputs["support_images"], inputs["query_images"])
    return support.numpy()


def test_transductive_modes_normalise_per_task_and_per_set(proto_split):
    inputs, _ = next(iter(_episodes(proto_split, batches=1)))
    backbone = resnet12((16, 16, 1), widths=(4, 8, 8, 8))
    joint = _model(backbone=backbone, batch_norm="transductive")
    separate = _model(backbone=backbone, head=joint.head, batch_norm="transductive_separate")
    moved = dict(inputs, query_images=inputs["query_images"] * 0.5)
    other_task = dict(
        inputs, support_images=tf.concat([inputs["support_images"][:1], inputs["support_images"][:1]], 0)
    )
    # Joint: the queries shape the support's statistics; separate: they do not.
    assert np.abs(_support_features(joint, inputs) - _support_features(joint, moved)).max() > 1e-4
    np.testing.assert_allclose(
        _support_features(separate, inputs), _support_features(separate, moved), atol=1e-6
    )
    # Either way a task's statistics are its own: task 0 does not see task 1.
    for model in (joint, separate):
        np.testing.assert_allclose(
            _support_features(model, other_task)[0], _support_features(model, inputs)[0], atol=1e-5
        )


@pytest.mark.backends
@pytest.mark.tensorflow_only  # the JAX pass skips it: 21 s there on 2 AVX2 EPYC cores
def test_transductive_fit_keeps_the_pretrained_moving_statistics(proto_split):
    model = _model(batch_norm="transductive", train_batch_norm=True)
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    stats = {v.path: v.numpy().copy() for v in model.backbone.weights if "moving" in v.path}
    model.fit(_episodes(proto_split), epochs=1, verbose=0)
    assert stats
    for v in model.backbone.weights:
        if v.path in stats:
            np.testing.assert_array_equal(stats[v.path], v.numpy(), err_msg=v.path)


@pytest.mark.backends
def test_train_batch_norm_meta_trains_gamma_and_beta_with_phi(proto_split):
    model = _model(train_batch_norm=True)
    names = {w.name for w in model.backbone.trainable_weights}
    assert names == {"scale", "shift", "gamma", "beta"}
    assert {w.name for w in _model().backbone.trainable_weights} == {"scale", "shift"}
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    gammas = [(v, v.numpy().copy()) for v in model.backbone.weights if v.name == "gamma"]
    stats = [(v, v.numpy().copy()) for v in model.backbone.weights if "moving" in v.name]
    model.fit(_episodes(proto_split), epochs=1, verbose=0)
    assert all(not np.array_equal(before, v.numpy()) for v, before in gammas)
    assert all(np.array_equal(before, v.numpy()) for v, before in stats)  # frozen BN: statistics kept
    config = model.get_config()
    assert config["train_batch_norm"] is True


@pytest.mark.backends
def test_head_initializer_kaiming_as_the_official_base_learner():
    keras.utils.set_random_seed(0)
    backbone = resnet12((16, 16, 1), widths=(8, 8, 16, 256))
    model = _model(backbone=backbone, ways=5, head_initializer="kaiming")
    kernel = model.head.kernel.numpy()
    assert kernel.shape == (256, 5)
    assert abs(kernel.std() - np.sqrt(2 / 256)) < 0.15 * np.sqrt(2 / 256)
    assert np.abs(kernel).max() > 2.5 * np.sqrt(2 / 256)  # untruncated, as torch's kaiming_normal_
    assert not _model(ways=5).head.kernel.numpy().any()  # zeros by default
    with pytest.raises(ValueError, match="head_initializer"):
        _model(head_initializer="xavier")


@pytest.mark.backends
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


@pytest.mark.backends
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


@pytest.mark.backends
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


# ------------------------------------------------- stock Keras models (issue 16)
def _mobilenet(**kwargs):
    """A tiny MobileNetV2 whose batch norms hold the statistics of some images, like a pretrained one."""
    from tests.helpers import calibrate_batch_norm

    model = keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None, **kwargs)
    return calibrate_batch_norm(model, np.random.default_rng(7).random((16, 32, 32, 3)).astype("float32"))


def _rgb_episodes(ways=3, batches=2, seed=0):
    from tests.conftest import make_prototype_split

    split = make_prototype_split(num_classes=6, per_class=6, size=32, channels=3, seed=seed)
    return make_episodes(split, ways, 1, 2, meta_batch_size=1, num_batches=batches, seed=seed)


def test_stock_backbone_with_nothing_to_meta_train_is_refused_naming_enable_scale_shift():
    stock = _mobilenet(pooling="avg")
    with pytest.raises(ValueError, match=r"nothing to meta-train.*mtl_keras\.enable_scale_shift\(backbone\)"):
        MetaTransferModel(stock, ways=3)
    # The FT row: every weight deliberately trainable, no Φ needed.
    ft = MetaTransferModel(_mobilenet(pooling="avg"), ways=3, set_meta_phase=False)
    assert len(ft.backbone.trainable_variables) > 100


def test_feature_map_backbone_is_pooled_and_the_folded_view_still_folds(tmp_path):
    from mtl_keras import enable_scale_shift
    from tests.helpers import randomise_backbone

    features = enable_scale_shift(_mobilenet())  # (batch, 1, 1, 1280) at 32×32: use an earlier map
    inner = keras.Model(features.input, features.get_layer("block_6_expand_relu").output, name="trunk")
    assert len(inner.output_shape) == 4 and inner.output_shape[1:3] == (4, 4)
    randomise_backbone(inner, np.random.default_rng(0))
    images = np.random.default_rng(1).random((5, 32, 32, 3)).astype("float32")
    maps = np.asarray(inner(images, training=False))
    avg = MetaTransferModel(inner, ways=3)
    assert avg.backbone.output_shape == (None, maps.shape[-1])
    np.testing.assert_allclose(avg.embed(images), maps.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(avg.embed(images, training=True), maps.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    view = avg._inference_view.value
    assert view is not avg.backbone  # BN still folded through the pooled backbone
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in view.layers)
    maxed = MetaTransferModel(inner, ways=3, pooling="max")
    np.testing.assert_allclose(maxed.embed(images), maps.max(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="feature maps .* pooling=None"):
        MetaTransferModel(inner, ways=3, pooling=None)
    # .keras round trip: the pooled backbone is saved as it is, not pooled twice.
    inputs, _ = next(iter(_rgb_episodes()))
    expected = avg(inputs).numpy()
    avg.save(tmp_path / "pooled.keras")
    loaded = keras.saving.load_model(tmp_path / "pooled.keras")
    assert loaded.pooling == "avg" and loaded.backbone.output_shape == avg.backbone.output_shape
    np.testing.assert_allclose(loaded(inputs).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_meta_training_a_converted_keras_application_changes_only_phi_and_the_head():
    from mtl_keras import enable_scale_shift

    model = MetaTransferModel(enable_scale_shift(_mobilenet()), ways=3, inner_steps=2, eval_inner_steps=2)
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    backbone = model.backbone
    assert {id(v) for v in backbone.trainable_variables} == {id(v) for v in phi_weights(backbone)}
    theta = [v.numpy().copy() for v in theta_weights(backbone)]
    phi = [v.numpy().copy() for v in phi_weights(backbone)]
    head = [v.numpy().copy() for v in model.head.weights]
    assert len(phi) == 2 * (35 + 17)  # every Conv2D and DepthwiseConv2D of MobileNetV2
    model.fit(_rgb_episodes(), epochs=1, verbose=0)
    for before, v in zip(theta, theta_weights(backbone)):
        np.testing.assert_array_equal(before, v.numpy(), err_msg=v.path)  # Θ and BN statistics
    moved = [not np.array_equal(b, v.numpy()) for b, v in zip(phi, phi_weights(backbone))]
    assert all(moved), f"only {sum(moved)} of {len(moved)} Φ variables moved"
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(head, model.head.weights))


def test_fit_logs_the_outer_gradient_norms_and_evaluation_does_not(proto_split):
    model = _model()
    model.compile(phi_learning_rate=1e-2, head_learning_rate=1e-2)
    episodes = _episodes(proto_split)
    expected = {}

    class Probe(keras.callbacks.Callback):  # the norms of the first step's gradients, by hand
        def on_train_begin(self, logs=None):
            inputs, labels = next(iter(_episodes(proto_split, batches=1)))
            with tf.GradientTape() as tape:
                loss, _ = model._loss_and_accuracy(model(inputs, training=True), labels)
            phi, head = model.backbone.trainable_variables, model.head.trainable_variables
            grads = tape.gradient(loss, phi + head)
            expected["phi"] = float(tf.linalg.global_norm(grads[: len(phi)]))
            expected["head"] = float(tf.linalg.global_norm(grads[len(phi) :]))

    history = model.fit(episodes, steps_per_epoch=1, epochs=1, verbose=0, callbacks=[Probe()])
    assert history.history["phi_grad_norm"][0] == pytest.approx(expected["phi"], rel=1e-4)
    assert history.history["head_grad_norm"][0] == pytest.approx(expected["head"], rel=1e-4)
    assert expected["phi"] > 0 and expected["head"] > 0
    assert set(model.evaluate(_episodes(proto_split, batches=1), verbose=0, return_dict=True)) == {
        "loss",
        "accuracy",
    }


@pytest.mark.backends
def test_compile_sets_each_rate_one_way():
    model = _model()
    model.compile()  # "auto": the official code's two Adams
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    assert float(model.head_optimizer.learning_rate) == pytest.approx(1e-3)
    model.compile(optimizer="auto", phi_learning_rate=3e-3, head_optimizer=keras.optimizers.SGD(0.5))
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)
    assert isinstance(model.head_optimizer, keras.optimizers.SGD)
    with pytest.raises(ValueError, match="both `optimizer` and `phi_learning_rate`"):
        model.compile(optimizer=keras.optimizers.Adam(1e-2), phi_learning_rate=1e-3)
    with pytest.raises(ValueError, match="both `head_optimizer` and `head_learning_rate`"):
        model.compile(head_optimizer="sgd", head_learning_rate=1e-3)


def test_a_pretrain_model_builds_without_keras_unbuilt_state_warning():
    """`pretrain` builds the model before `fit` (so a backup can be loaded): with augmentation and
    dropout that printed Keras's "`build()` was called on layer 'pretrain_model', however the layer
    does not have a `build()` method implemented ..." in every run, `make demo` included."""
    import warnings

    from mtl_keras.data.augment import pretrain_augmentation

    model = PretrainModel(
        resnet12((16, 16, 1), widths=(4, 8, 8, 8)),
        num_classes=8,
        augmentation=pretrain_augmentation(seed=0),
        dropout=0.2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logits = model(np.zeros((2, 16, 16, 1), "float32"), training=False)
    assert model.built and tuple(logits.shape) == (2, 8)
