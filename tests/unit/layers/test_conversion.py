"""`enable_scale_shift`: stock Keras CNNs (keras.applications with ``weights=None``, user models)
become scale-and-shift models that compute the same function at Φ = (1, 0)."""

import warnings

import keras
import numpy as np
import pytest

from mtl_keras import ScaleShiftConv2D, ScaleShiftDepthwiseConv2D, enable_scale_shift, set_phase
from mtl_keras.layers import ScaleShiftDense, ScaleShiftLayer, fold_batch_norm, phi_weights
from mtl_keras.layers.phase import iter_layers
from tests.helpers import randomise_backbone

SHAPE = (32, 32, 3)
APPLICATIONS = {
    # name: (builder, enable_scale_shift targets)
    "MobileNetV2": (
        lambda: keras.applications.MobileNetV2(SHAPE, alpha=0.35, include_top=False, weights=None),
        None,
    ),
    "ResNet50V2": (
        lambda: keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=SHAPE),
        None,
    ),
    "EfficientNetV2B0": (
        lambda: keras.applications.EfficientNetV2B0(include_top=False, weights=None, input_shape=SHAPE),
        None,
    ),
    "MobileNetV3Small": (
        lambda: keras.applications.MobileNetV3Small(SHAPE, include_top=False, weights=None),
        None,
    ),
    "VGG16": (lambda: keras.applications.VGG16(include_top=False, weights=None, input_shape=SHAPE), None),
    "ConvNeXtTiny": (
        lambda: keras.applications.ConvNeXtTiny(include_top=False, weights=None, input_shape=SHAPE),
        ("Conv2D", "DepthwiseConv2D", "Dense"),
    ),
}
_COUNTERPART = {
    keras.layers.Conv2D: ScaleShiftConv2D,
    keras.layers.DepthwiseConv2D: ScaleShiftDepthwiseConv2D,
    keras.layers.Dense: ScaleShiftDense,
}


def _leaves(model):
    """Layers of ``model`` with nested functional / Sequential models opened, by name path."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):  # clone_model renames unnamed inputs
            continue
        if isinstance(layer, keras.Model):
            out.update({f"{layer.name}/{k}": v for k, v in _leaves(layer).items()})
        else:
            out[layer.name] = layer
    return out


def _images(n=2, seed=0):
    return (np.random.default_rng(seed).random((n, *SHAPE)) * 255).astype("float32")


@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_keras_applications_convert_exactly(name):
    build, targets = APPLICATIONS[name]
    original = build()
    randomise_backbone(original, np.random.default_rng(1))  # non-trivial BN statistics
    kwargs = {"layers": targets} if targets else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every convolution converts: no "not converted" line
        converted = enable_scale_shift(original, **kwargs)
    x = _images()
    expected = np.asarray(original(x, training=False))
    got = np.asarray(converted(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    before, after = _leaves(original), _leaves(converted)
    assert before.keys() == after.keys()  # same layers, same names
    wanted = tuple(_COUNTERPART) if targets else (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    converted_count = 0
    for key, layer in before.items():
        new = after[key]
        if type(layer) in wanted:
            assert type(new) is _COUNTERPART[type(layer)], key
            np.testing.assert_array_equal(new.kernel.numpy(), layer.kernel.numpy())  # Θ copied exactly
            if layer.use_bias:
                np.testing.assert_array_equal(new.bias.numpy(), layer.bias.numpy())
            converted_count += 1
        else:
            assert type(new) is type(layer), key
            assert new is not layer
            for a, b in zip(layer.get_weights(), new.get_weights()):
                np.testing.assert_array_equal(a, b, err_msg=key)
    assert converted_count > 0
    # In the meta phase only Φ trains; the original is untouched (still its own layers, trainable).
    assert {id(v) for v in converted.trainable_variables} == {id(v) for v in phi_weights(converted)}
    assert len(converted.trainable_variables) == 2 * converted_count
    assert not any(isinstance(layer, ScaleShiftLayer) for layer in iter_layers(original))
    assert original.trainable_variables and all(layer.trainable for layer in original.layers)


def _user_resnet():
    """A small ResNet-like user model: a nested functional block, a shared layer, a fused activation."""
    inner_in = keras.Input((16, 16, 8))
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(inner_in)
    y = keras.layers.BatchNormalization(name="bn_a")(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="conv_b")(y)
    block = keras.Model(inner_in, keras.layers.Add()([inner_in, y]), name="block")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    x = block(x)
    shared = keras.layers.Conv2D(8, 1, groups=2, name="shared")
    x = shared(shared(x))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x), name="user_resnet")


def test_user_functional_model_with_nested_block_and_shared_layer_converts_exactly():
    original = _user_resnet()
    randomise_backbone(original.get_layer("block"), np.random.default_rng(2))
    converted = enable_scale_shift(original)
    x = _images(seed=3)
    np.testing.assert_allclose(converted(x), original(x), rtol=1e-5, atol=1e-6)
    kinds = {path: type(layer).__name__ for path, layer in _leaves(converted).items()}
    assert (
        kinds["stem"]
        == kinds["block/conv_a"]
        == kinds["block/conv_b"]
        == kinds["shared"]
        == "ScaleShiftConv2D"
    )
    assert kinds["dw"] == "ScaleShiftDepthwiseConv2D" and kinds["fc"] == "Dense"  # Dense only when asked
    assert converted.get_layer("stem").activation is keras.activations.relu
    # Φ moves the output: the converted layers are the ones in the graph, the shared one once.
    assert len(phi_weights(converted)) == 2 * 5
    for v in phi_weights(converted):
        v.assign(v.numpy() + 0.1)
    assert not np.allclose(converted(x), original(x))


def test_sequential_model_converts_to_a_sequential_model():
    original = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.DepthwiseConv2D(3),
            keras.layers.Flatten(),
        ]
    )
    randomise_backbone(original, np.random.default_rng(0))
    converted = enable_scale_shift(original)
    assert isinstance(converted, keras.Sequential)
    assert [type(layer).__name__ for layer in converted.layers] == [
        "ScaleShiftConv2D",
        "BatchNormalization",
        "ScaleShiftDepthwiseConv2D",
        "Flatten",
    ]
    x = np.random.default_rng(1).random((2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(converted(x), original(x), rtol=1e-5, atol=1e-6)


def test_subclassed_model_is_refused_with_what_to_do():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(
        TypeError, match=r"'net' is a subclassed keras.Model .*functionally.*ScaleShiftConv2D"
    ):
        enable_scale_shift(net)


def _conv_names(model):
    return [n for n, layer in _leaves(model).items() if isinstance(layer, ScaleShiftLayer)]


def test_targets_by_type_name_pattern_and_last_n():
    original = keras.applications.MobileNetV2(SHAPE, alpha=0.35, include_top=False, weights=None)
    convs = [layer.name for layer in original.layers if type(layer) is keras.layers.Conv2D]
    dws = [layer.name for layer in original.layers if type(layer) is keras.layers.DepthwiseConv2D]

    only_conv = enable_scale_shift(original, layers=("Conv2D",))
    assert _conv_names(only_conv) == convs

    expand = enable_scale_shift(original, include=r"_expand$")
    assert _conv_names(expand) == [n for n in convs if n.endswith("_expand")] and len(_conv_names(expand)) > 5

    in_order = [layer.name for layer in original.layers if type(layer) in _COUNTERPART]
    assert sorted(in_order) == sorted(convs + dws)
    no_project = enable_scale_shift(original, exclude="project")
    assert _conv_names(no_project) == [n for n in in_order if "project" not in n]

    last = enable_scale_shift(original, last_n=4)
    assert _conv_names(last) == in_order[-4:]  # the four nearest the output, in topological order
    assert len(last.trainable_variables) == 8

    x = _images()
    for model in (only_conv, expand, no_project, last):
        np.testing.assert_allclose(model(x), original(x), rtol=1e-5, atol=1e-6)


def test_bad_targets_are_named():
    original = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten()])
    with pytest.raises(
        ValueError, match=r"no layer of 'sequential.*' to convert.*include='nothing'.*Conv2D, Flatten"
    ):
        enable_scale_shift(original, include="nothing")
    with pytest.raises(ValueError, match="layers must name some of"):
        enable_scale_shift(original, layers=("Conv3D",))
    with pytest.raises(ValueError, match="last_n"):
        enable_scale_shift(original, last_n=0)


class ConvBlock(keras.layers.Layer):
    """A custom layer holding a convolution: copied as it is, and named."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same")

    def call(self, x):
        return self.conv(x)


class MyConv2D(keras.layers.Conv2D):
    pass


def _model_with_unconvertible_layers():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="fine")(inputs)
    x = keras.layers.SeparableConv2D(4, 3, padding="same", name="separable")(x)
    x = ConvBlock(name="custom_block")(x)
    x = MyConv2D(4, 3, padding="same", name="my_conv")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="also_fine")(x)
    return keras.Model(inputs, x, name="mixed")


def test_layers_that_cannot_be_converted_are_named_in_one_line_and_copied():
    original = _model_with_unconvertible_layers()
    with pytest.warns(UserWarning) as record:
        converted = enable_scale_shift(original)
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message
    assert message.startswith("enable_scale_shift: 3 layer(s) of 'mixed' not converted")
    assert "separable (SeparableConv2D has no scale-and-shift counterpart)" in message
    assert "custom_block (custom layer ConvBlock holding 1 Conv2D layer(s))" in message
    assert "my_conv (a MyConv2D, subclass of Conv2D" in message
    assert _conv_names(converted) == ["fine", "also_fine"]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(converted(x), original(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3 layer"):
        enable_scale_shift(original, on_unconverted="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enable_scale_shift(original, on_unconverted="ignore")
        enable_scale_shift(original, last_n=1)  # the window holds only 'also_fine'


def test_converted_model_keras_round_trip_and_folded_view(tmp_path):
    original = keras.applications.MobileNetV2(
        SHAPE, alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    converted = enable_scale_shift(original)
    rng = np.random.default_rng(5)
    randomise_backbone(converted, rng)  # Φ ≠ (1, 0), BN statistics random
    x = _images(seed=6)
    expected = np.asarray(converted(x, training=False))
    path = tmp_path / "converted.keras"
    converted.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    assert [type(a).__name__ for a in loaded.layers] == [type(b).__name__ for b in converted.layers]
    assert {w.name for w in loaded.trainable_weights} == {"scale", "shift"}
    view = fold_batch_norm(converted)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in view.layers)
    np.testing.assert_allclose(
        view(x, training=False), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max()
    )


def test_pretrain_phase_leaves_every_weight_trainable():
    converted = enable_scale_shift(_user_resnet(), phase="pretrain")
    assert {
        w.name
        for layer in _leaves(converted).values()
        if isinstance(layer, ScaleShiftLayer)
        for w in layer.trainable_weights
    } == {"kernel", "bias"}
    assert set_phase(converted, "meta").trainable_variables


def test_iter_layers_finds_layers_inside_custom_layers():
    """`iter_layers` walks Keras' private ``Layer._layers`` to see into custom layers (how
    `set_phase` freezes them and how `enable_scale_shift` names a custom layer with a
    convolution inside): this fails when that hook disappears upstream."""
    block = ConvBlock()
    block(np.zeros((1, 8, 8, 4), "float32"))
    assert [type(layer) for layer in iter_layers(block)] == [keras.layers.Conv2D]
