"""`mtl_keras.experiment` pieces that need no training: precision, strategy checks, output folders."""

from __future__ import annotations

import keras
import pytest

from mtl_keras.config import ExperimentConfig
from mtl_keras.experiment import check_strategy, meta_model, output_dir

TINY = ExperimentConfig(image_size=16, widths=(4, 4, 4, 4), shots=(1,))


def _compute_dtypes(model):
    return {layer.compute_dtype for layer in model.backbone.layers if layer.weights}


def test_meta_model_builds_the_backbone_under_config_precision_and_restores_the_policy():
    keras.mixed_precision.set_dtype_policy("float32")
    bf16 = meta_model(TINY.replace(precision="mixed_bfloat16"), 1, None)
    assert _compute_dtypes(bf16) == {"bfloat16"}
    assert {w.dtype for w in bf16.backbone.trainable_weights} == {"float32"}  # variables stay float32
    assert keras.mixed_precision.dtype_policy().name == "float32"
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        f32 = meta_model(TINY, 1, None)  # the config wins over the global policy
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert _compute_dtypes(f32) == {"float32"}


def test_precision_is_validated_by_name():
    with pytest.raises(ValueError, match="precision.*mixed_bfloat16.*mixed_float16"):
        TINY.replace(precision="mixed_float16").validate()


def test_strategy_checks_and_output_folders_without_a_strategy(tmp_path):
    check_strategy(TINY.replace(meta_batch_size=3), None)  # one replica: anything splits
    assert output_dir(str(tmp_path), None) == str(tmp_path)
