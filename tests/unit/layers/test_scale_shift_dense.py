import keras
import numpy as np
import pytest

from mtl_keras import ScaleShiftDense, set_phase
from mtl_keras.layers import phi_weights
from tests.helpers import run_layer_test


def _x(shape=(4, 6), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.backends
@pytest.mark.parametrize("phase", ["pretrain", "meta"])
def test_layer_contract(tmp_path, phase):
    layer = run_layer_test(
        ScaleShiftDense,
        dict(units=5, activation="gelu", phase=phase),
        _x(),
        (4, 5),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2,
        tmp_path=tmp_path,
    )
    assert layer.scale.shape == (6, 5) and layer.shift.shape == (5,)


@pytest.mark.backends
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 3, 6)])  # ConvNeXt applies Dense to feature maps
def test_from_dense_is_exact_at_identity_phi(shape):
    x = _x(shape)
    dense = keras.layers.Dense(5, activation="relu", bias_initializer="random_normal")
    expected = np.asarray(dense(x))
    ss = ScaleShiftDense.from_dense(dense)
    np.testing.assert_array_equal(np.asarray(ss(x)), expected)
    assert ss.compute_output_shape(x.shape) == expected.shape


@pytest.mark.backends
def test_output_is_the_scaled_kernel_plus_shift():
    x = _x()
    ss = ScaleShiftDense(5)
    ss.build(x.shape)
    rng = np.random.default_rng(2)
    ss.scale.assign(rng.uniform(0.5, 1.5, ss.scale.shape).astype("float32"))
    ss.shift.assign(rng.normal(size=5).astype("float32"))
    expected = x @ (ss.kernel.numpy() * ss.scale.numpy()) + ss.bias.numpy() + ss.shift.numpy()
    np.testing.assert_allclose(ss(x), expected, atol=1e-5)


@pytest.mark.backends
def test_set_phase_trains_only_phi_of_dense_layers():
    model = keras.Sequential([keras.Input((6,)), ScaleShiftDense(5), keras.layers.Dense(3)])
    set_phase(model, "meta")
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in phi_weights(model)}
    assert len(model.trainable_weights) == 2
