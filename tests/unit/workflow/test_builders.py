"""`mtl_keras_app.workflow` pieces that need no training: precision, strategy checks, output folders."""

from __future__ import annotations

import keras
import pytest

from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.workflow import build_meta_model, check_strategy, output_dir

TINY = ExperimentConfig(image_size=16, widths=(4, 4, 4, 4), shots=(1,))


def _compute_dtypes(model):
    return {layer.compute_dtype for layer in model.backbone.layers if layer.weights}


def test_meta_model_builds_the_backbone_under_config_precision_and_restores_the_policy():
    keras.mixed_precision.set_dtype_policy("float32")
    bf16 = build_meta_model(TINY.replace(precision="mixed_bfloat16"), 1, None)
    assert _compute_dtypes(bf16) == {"bfloat16"}
    assert {w.dtype for w in bf16.backbone.trainable_weights} == {"float32"}  # variables stay float32
    assert keras.mixed_precision.dtype_policy().name == "float32"
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        f32 = build_meta_model(TINY, 1, None)  # the config wins over the global policy
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert _compute_dtypes(f32) == {"float32"}


def test_precision_is_validated_by_name():
    with pytest.raises(ValueError, match="precision.*mixed_bfloat16.*mixed_float16"):
        TINY.replace(precision="mixed_float16").validate()


def test_strategy_checks_and_output_folders_without_a_strategy(tmp_path):
    check_strategy(TINY.replace(meta_batch_size=3), None)  # one replica: anything splits
    assert output_dir(str(tmp_path), None) == str(tmp_path)


def test_paper_presets_carry_the_official_optimizer_and_meta_phase():
    """The official PyTorch meta phase: Adam ε 1e-8 (torch's default), both rates halved every
    10 epochs, batch norm's γ/β trained with Φ, a Kaiming-normal head."""
    from mtl_keras_app.config import get_config

    config = get_config("paper-mini_imagenet-1shot").replace(
        image_size=16, widths=(4, 4, 4, 4), steps_per_epoch=3
    )
    model = build_meta_model(config, 1, None)
    assert model.optimizer.epsilon == model.head_optimizer.epsilon == 1e-8

    from mtl_keras.callbacks import DivergenceGuard, OuterRateDecay
    from mtl_keras_app.workflow import meta_training_callbacks

    decay, guard = meta_training_callbacks(config)
    assert isinstance(decay, OuterRateDecay) and (decay.every, decay.rate) == (10, 0.5)
    assert isinstance(guard, DivergenceGuard)
    decay.set_model(model)
    for epoch in range(21):
        decay.on_epoch_begin(epoch)
        if epoch in (9, 10, 20):
            rate = {9: 1e-4, 10: 5e-5, 20: 2.5e-5}[epoch]
            assert float(model.optimizer.learning_rate) == pytest.approx(rate)
            assert float(model.head_optimizer.learning_rate) == pytest.approx(10 * rate)
    assert {w.name for w in model.backbone.trainable_weights} == {"scale", "shift", "gamma", "beta"}
    assert model.head_initializer == "kaiming" and model.head.kernel.numpy().any()
    # The defaults stay Φ only, zero head, constant rates, Keras' ε.
    plain = build_meta_model(TINY, 1, None)
    assert {w.name for w in plain.backbone.trainable_weights} == {"scale", "shift"}
    assert plain.optimizer.epsilon == 1e-7 and not plain.head.kernel.numpy().any()
    assert isinstance(plain.optimizer.get_config()["learning_rate"], float)


def test_recipe_options_are_validated_by_name():
    for key, value in (("head_init", "xavier"), ("batch_norm", "train"), ("meta_lr_decay_rate", 0.0)):
        with pytest.raises(ValueError, match=key):
            TINY.replace(**{key: value}).validate()
