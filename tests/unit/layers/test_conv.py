import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import resnet12, set_phase
from mtl_keras.layers import phi_weights
from mtl_keras.layers.conv import conv2d
from mtl_keras.tensorflow_backend import conv as tf_conv
from mtl_keras.tensorflow_backend import gradient_plan as conv_module
from mtl_keras.tensorflow_backend.conv import (
    shifted_matmul_filter_gradient,
    swapped_filter_gradient,
    swapped_input_gradient,
)
from mtl_keras.tensorflow_backend.gradient_plan import set_filter_gradient, set_gradient_isa
from tests.helpers import randomise_backbone


@pytest.fixture(autouse=True)
def _default_mode():
    """Every test here runs AVX-512's plan unless it says otherwise: what ``auto`` does depends
    on the CPU the suite runs on (AVX2-only machines have their own plan)."""
    set_gradient_isa("AVX-512")
    yield
    set_filter_gradient("auto")
    set_gradient_isa(None)


def _native_filter_gradient(x, g, kernel_size):
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x,
        filter_sizes=[*kernel_size, x.shape[-1], g.shape[-1]],
        out_backprop=g,
        strides=[1, 1, 1, 1],
        padding="SAME",
    )


FILTER_GRADIENT_SHAPES = [
    ((3, 4, 4, 5), (3, 3)),
    ((2, 7, 5, 3), (3, 3)),
    ((2, 6, 6, 4), (5, 5)),
    ((2, 4, 4, 3), (1, 1)),
    ((2, 5, 8, 2), (3, 5)),
]


@pytest.mark.parametrize("shape, kernel_size", FILTER_GRADIENT_SHAPES)
@pytest.mark.parametrize(
    "formulation",
    [swapped_filter_gradient, shifted_matmul_filter_gradient],
    ids=["swapped", "shifted_matmuls"],
)
def test_filter_gradient_formulations_equal_tensorflows(formulation, shape, kernel_size):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape), tf.float32)
    g = tf.constant(rng.normal(size=(*shape[:3], 6)), tf.float32)
    got = formulation(x, g, kernel_size)
    assert got.shape == (*kernel_size, shape[-1], 6) and got.dtype == tf.float32
    np.testing.assert_allclose(got, _native_filter_gradient(x, g, kernel_size), rtol=1e-5, atol=1e-5)


def test_shifted_matmul_filter_gradient_in_bfloat16_stays_close_to_float32():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(4, 4, 4, 16)).astype(np.float32)
    g = rng.normal(size=(4, 4, 4, 8)).astype(np.float32)
    got = shifted_matmul_filter_gradient(tf.constant(x, tf.bfloat16), tf.constant(g, tf.bfloat16), (3, 3))
    assert got.dtype == tf.bfloat16
    want = _native_filter_gradient(tf.constant(x), tf.constant(g), (3, 3))
    np.testing.assert_allclose(tf.cast(got, tf.float32), want, rtol=0.05, atol=0.25)


@pytest.mark.parametrize(
    "shape, kernel_size",
    [((3, 4, 4, 5), (3, 3)), ((2, 7, 5, 3), (3, 3)), ((2, 6, 6, 4), (5, 5)), ((2, 5, 8, 2), (3, 5))],
)
def test_swapped_input_gradient_equals_tensorflows(shape, kernel_size):
    rng = np.random.default_rng(5)
    kernel = tf.constant(rng.normal(size=(*kernel_size, shape[-1], 6)), tf.float32)
    g = tf.constant(rng.normal(size=(*shape[:3], 6)), tf.float32)
    want = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=shape, filter=kernel, out_backprop=g, strides=[1, 1, 1, 1], padding="SAME"
    )
    got = swapped_input_gradient(g, kernel)
    assert got.shape == shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_large_batches_are_summed_in_slices(monkeypatch):
    monkeypatch.setitem(conv_module.SWAPPED_SLICE_PIXELS, "float32", 3 * 16)  # ≤ 3 images of 4×4
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(8, 4, 4, 3)), tf.float32)
    g = tf.constant(rng.normal(size=(8, 4, 4, 5)), tf.float32)
    calls = []
    original = tf.nn.conv2d
    monkeypatch.setattr(tf.nn, "conv2d", lambda *a, **k: calls.append(1) or original(*a, **k))
    got = swapped_filter_gradient(x, g, (3, 3))
    assert len(calls) == 3  # 8 images: three equal slices of 3, 3 and 2
    np.testing.assert_allclose(got, _native_filter_gradient(x, g, (3, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_swapped_conv_has_the_same_value_and_gradients(jit):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(3, 6, 6, 4)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 4, 5)), tf.float32)
    bias = tf.constant(rng.normal(size=(5,)), tf.float32)
    target = tf.constant(rng.normal(size=(3, 6, 6, 5)), tf.float32)

    def value_and_grads(mode):
        set_filter_gradient(mode)

        @tf.function(jit_compile=jit)
        def run(x, kernel, bias):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel, bias])
                y = conv2d(x, kernel, bias)
                loss = tf.reduce_sum((y - target) ** 2)
            return y, tape.gradient(loss, [x, kernel, bias])

        return run(x, kernel, bias)

    y_native, grads_native = value_and_grads("native")
    # AVX2: both gradients swapped; matmul: the filter gradient as nine shifted matmuls
    for mode, isa in (("swapped", "AVX-512"), ("auto", "AVX2"), ("matmul", "AVX-512")):
        set_gradient_isa(isa)
        y_swapped, grads_swapped = value_and_grads(mode)
        np.testing.assert_allclose(y_swapped, y_native, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads_swapped, grads_native):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "swap_filter, swap_input",
    [(True, False), (False, True), (True, True), ("matmul", False), ("matmul", True), ("swapped", False)],
    ids=["filter", "input", "both", "matmul", "matmul-and-input", "by-name"],
)
def test_each_gradient_can_be_swapped_alone(monkeypatch, swap_filter, swap_input):
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(2, 5, 5, 3)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 4)), tf.float32)
    bias = tf.constant(rng.normal(size=(4,)), tf.float32)

    def grads(run_conv):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            loss = tf.reduce_sum(tf.sin(run_conv(x, kernel, bias)))
        return tape.gradient(loss, [x, kernel, bias])

    want = grads(lambda *a: tf.nn.conv2d(a[0], a[1], 1, "SAME") + a[2])
    got = grads(tf_conv.conv_with_forward_gradients(swap_filter, swap_input))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "dtype, side, kernel, strides, padding, mode, expected",
    [
        ("bfloat16", 8, 3, 1, "same", "auto", True),
        ("bfloat16", 10, 3, 1, "same", "auto", True),  # ResNet-12's last block at 84×84 input
        ("bfloat16", 16, 3, 1, "same", "auto", False),  # TF's kernel is faster on larger maps
        ("bfloat16", 12, 3, 1, "same", "auto", False),
        ("float32", 4, 3, 1, "same", "auto", True),
        ("float32", 8, 3, 1, "same", "auto", False),  # float32 only at 4×4
        ("bfloat16", 8, 3, 2, "same", "auto", False),
        ("bfloat16", 8, 3, 1, "valid", "auto", False),
        ("bfloat16", 8, 2, 1, "same", "swapped", False),  # even kernels pad asymmetrically
        ("float32", 32, 3, 1, "same", "swapped", True),
        ("bfloat16", 8, 3, 1, "same", "native", False),
    ],
)
def test_where_the_swapped_gradient_is_used(dtype, side, kernel, strides, padding, mode, expected):
    set_filter_gradient(mode)
    x = tf.zeros((1, side, side, 2), dtype)
    w = tf.zeros((kernel, kernel, 2, 3), dtype)
    assert conv_module._swapped(x, w, (strides, strides), padding) is expected
    # on AVX-512 the input gradient stays TF's in auto; "swapped" swaps both where they apply
    assert conv_module.forward_gradients(x, w, (strides, strides), padding)[1] is (
        mode == "swapped" and expected
    )


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """``fake_cpu(cpuinfo, cap=None)``: `mtl_keras.hardware` reads ``cpuinfo`` as /proc/cpuinfo,
    oneDNN's ISA cap is ``cap`` (none: no cap), and ``auto`` follows that CPU's own plan."""
    from mtl_keras import hardware

    def use(cpuinfo: str, cap: str | None = None) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(cpuinfo)
        monkeypatch.setattr(hardware, "CPUINFO", str(path))
        for name in hardware.ISA_CAP_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        if cap:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        set_gradient_isa(None)

    return use


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2\n\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16\n\n"
AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n\n"


@pytest.mark.parametrize(
    "cpuinfo, cap, dtype, side, expected",
    [
        (AVX2_ONLY, None, "float32", 4, ("AVX2", True, True)),
        (AVX2_ONLY, None, "float32", 10, ("AVX2", True, True)),
        (AVX2_ONLY, None, "float32", 16, ("AVX2", False, True)),  # filter: TF's kernel on 16×16
        (AVX2_ONLY, None, "float32", 84, ("AVX2", False, True)),
        (AVX2_ONLY, None, "bfloat16", 4, ("AVX2", False, False)),  # emulated bf16: not planned for
        (AVX512_BF16, None, "float32", 4, ("AVX-512", True, False)),
        (AVX512_BF16, None, "float32", 8, ("AVX-512", False, False)),
        (AVX512_BF16, None, "bfloat16", 8, ("AVX-512", True, False)),
        (AVX512_BF16, "AVX2", "float32", 8, ("AVX2", True, True)),  # the cap makes oneDNN an AVX2 one
        ("processor\t: 0\n\n", None, "float32", 4, ("AVX-512", True, False)),  # unknown: as before
        (AMX, None, "float32", 4, ("AMX-BF16", False, False)),  # no swap on AMX (matmuls: below)
        (AMX, "AVX512_CORE_BF16", "bfloat16", 8, ("AVX-512", True, False)),  # capped below AMX
    ],
)
def test_auto_follows_the_instruction_set_the_cpu_reports(fake_cpu, cpuinfo, cap, dtype, side, expected):
    """The plan is chosen at trace time from /proc/cpuinfo (faked here) and ONEDNN_MAX_CPU_ISA."""
    fake_cpu(cpuinfo, cap)
    x = tf.zeros((1, side, side, 2), dtype)
    w = tf.zeros((3, 3, 2, 3), dtype)
    isa, _ = conv_module.gradient_plan()
    assert (isa, *conv_module.forward_gradients(x, w, (1, 1), "same")) == expected


@pytest.mark.parametrize(
    "cap, dtype, side, expected",
    [
        (None, "bfloat16", 4, ("AMX-BF16", "matmul", False)),
        (None, "bfloat16", 8, ("AMX-BF16", "matmul", False)),
        (None, "bfloat16", 10, ("AMX-BF16", "matmul", False)),  # ResNet-12's last block at 84×84
        (None, "bfloat16", 16, ("AMX-BF16", "native", False)),  # AMX's own kernel on larger maps
        (None, "float32", 4, ("AMX-BF16", "native", False)),
        ("AVX10_1_512_AMX", "bfloat16", 8, ("AMX-BF16", "matmul", False)),
        ("AVX512_CORE_BF16", "bfloat16", 8, ("AVX-512", "swapped", False)),  # capped below AMX
    ],
)
def test_auto_on_amx_computes_small_bf16_filter_gradients_as_matmuls(fake_cpu, cap, dtype, side, expected):
    fake_cpu(AMX, cap)
    x, w = tf.zeros((1, side, side, 2), dtype), tf.zeros((3, 3, 2, 3), dtype)
    isa, _ = conv_module.gradient_plan()
    assert (isa, *conv_module.gradient_methods(x, w, (1, 1), "same")) == expected


def test_auto_on_amx_builds_matmul_filter_gradients_for_small_bf16_maps(fake_cpu):
    """In a bf16 ResNet-12's traced gradient on an AMX CPU, the blocks with maps ≤ 10×10 have no
    filter-gradient kernel of their own: at 32×32 input blocks 3 and 4 (8×8 and 4×4 maps), whose
    6 scaled 3×3 convolutions get nine matmuls each."""
    fake_cpu(AMX)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        backbone = set_phase(resnet12((32, 32, 3), widths=(4, 4, 4, 4)), "meta")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    phi = phi_weights(backbone)

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(backbone(x, training=False), tf.float32))
        return tape.gradient(loss, phi)

    ops_ = grad.get_concrete_function(tf.zeros((2, 32, 32, 3))).graph.get_operations()
    # maps 32, 16, 8, 4: blocks 3 and 4 (6 scaled convs) on matmuls, blocks 1 and 2 on TF's kernel
    kernels = [op.name.split("/")[2] for op in ops_ if op.type == "Conv2DBackpropFilter"]
    # the 1×1 residual convolutions are not `conv2d`'s: TF's kernel on every CPU
    assert sorted(k for k in kernels if "res_conv" not in k) == sorted(
        f"block{b}_conv{c}_1" for b in (1, 2) for c in (1, 2, 3)
    )
    assert (
        sum(
            "shifted_matmul_filter_gradient" in op.name
            for op in ops_
            if op.type in ("MatMul", "BatchMatMulV2")
        )
        == 6 * 9
    )


def test_auto_on_avx2_builds_forward_convolutions_only(fake_cpu):
    """On an AVX2-only CPU a ResNet-12's gradient has no backward-data kernel for its SS convs."""
    fake_cpu(AVX2_ONLY)

    def op_types(isa):
        set_gradient_isa(isa)
        backbone = set_phase(resnet12((16, 16, 3), widths=(4, 4, 4, 4)), "meta")
        phi = phi_weights(backbone)
        x = tf.zeros((2, 16, 16, 3))

        @tf.function
        def grad(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(backbone(x, training=False))
            return tape.gradient(loss, phi)

        graph = grad.get_concrete_function(x).graph
        return [op.type for op in graph.get_operations()]

    avx2 = op_types(None)  # the faked CPU's own plan
    avx512 = op_types("AVX-512")
    # 12 scaled 3×3 convolutions and 4 plain 1×1 residual ones (not `conv2d`: TF's kernel in both)
    assert avx512.count("Conv2DBackpropInput") == 16
    assert avx2.count("Conv2DBackpropInput") == 4


def test_shifted_matmuls_take_precedence_where_the_plan_has_them(monkeypatch):
    monkeypatch.setitem(conv_module.SHIFTED_MATMUL_MAX_PIXELS, "AVX-512", {"bfloat16": 16})
    set_gradient_isa("AVX-512")

    def methods(dtype, side):
        x, w = tf.zeros((1, side, side, 2), dtype), tf.zeros((3, 3, 2, 3), dtype)
        return conv_module.gradient_methods(x, w, (1, 1), "same")

    assert methods("bfloat16", 4) == ("matmul", False)
    assert methods("bfloat16", 8) == ("swapped", False)  # beyond the matmul limit: the swapped plan's
    assert methods("bfloat16", 16) == ("native", False)
    assert methods("float32", 4) == ("swapped", False)  # no matmul entry for float32
    set_filter_gradient("matmul")
    assert methods("float32", 32) == ("matmul", True)
    set_filter_gradient("native")
    assert methods("bfloat16", 4) == ("native", False)


def test_conv_with_forward_gradients_rejects_what_it_cannot_build():
    with pytest.raises(ValueError, match="one of"):
        tf_conv.conv_with_forward_gradients("winograd", False)
    with pytest.raises(ValueError, match="plain tf.nn.conv2d"):
        tf_conv.conv_with_forward_gradients("native", False)


def test_bad_gradient_isa_is_rejected():
    with pytest.raises(ValueError, match="AVX2"):
        set_gradient_isa("AVX3")


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="auto"):
        set_filter_gradient("fast")


@pytest.mark.parametrize("mode", ["native", "swapped"])
def test_residual_block_end_is_exact_in_a_graph(mode):
    """leaky_relu(conv + bias + residual) in a tf.function equals eager (benchmarks/probes/tf_fusion_bug.py:
    with tf.nn.bias_add, TF 2.21's CPU graph optimizer fuses this pattern into wrong values)."""
    rng = np.random.default_rng(4)
    x, residual = (tf.constant(rng.normal(size=(2, 6, 6, 4)), tf.float32) for _ in range(2))
    kernel = tf.constant(rng.normal(size=(3, 3, 4, 4)), tf.float32)
    bias = tf.constant(rng.normal(size=(4,)), tf.float32)
    set_filter_gradient(mode)

    def block_end(x, kernel, bias, residual):
        return tf.nn.leaky_relu(conv2d(x, kernel, bias) + residual, 0.1)

    eager = block_end(x, kernel, bias, residual)
    graph = tf.function(block_end)(x, kernel, bias, residual)
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)


def test_backbone_gradients_agree_under_mixed_bfloat16(monkeypatch):
    """Φ gradients of a bf16 ResNet-12 with the swapped filter gradient ≈ TF's (bf16 rounding)."""
    calls = []
    original = tf_conv.swapped_filter_gradient

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(tf_conv, "swapped_filter_gradient", counting)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        rng = np.random.default_rng(0)
        backbone = set_phase(randomise_backbone(resnet12((16, 16, 3), widths=(8, 8, 16, 16)), rng), "meta")
        x = rng.random((6, 16, 16, 3)).astype("float32")
        phi = phi_weights(backbone)

        def grads(mode):
            set_filter_gradient(mode)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.cast(backbone(x, training=False), tf.float32) ** 2)
            return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, phi)], 0)

        native = grads("native")
        assert not calls
        auto = grads("auto")
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    # maps 16, 8, 4, 2: the three convolutions of blocks 2-4 use it, block 1's do not
    assert len(calls) == 9
    assert float(tf.norm(auto - native) / tf.norm(native)) < 2e-2


def _conv_and_gradients(x, w, b):
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        loss = tf.reduce_sum(conv2d(x, w, b) ** 2)
    return tape.gradient(loss, [x, w])


@pytest.mark.parametrize(
    "device, cpu",
    [
        ("/job:localhost/replica:0/task:0/device:CPU:0", True),
        ("/CPU:0", True),
        ("/job:worker/replica:0/task:1/device:GPU:0", False),
        ("/device:GPU:1", False),
    ],
)
def test_placement_is_read_from_the_device_string(device, cpu):
    class Placed:
        pass

    placed = Placed()
    placed.device = device
    assert conv_module.placed_on_cpu(placed) is cpu


def test_the_cpu_gradient_plan_stays_off_a_gpu(monkeypatch):
    """A convolution TensorFlow places on a GPU (no device on the graph op, a GPU visible) keeps
    TensorFlow's gradients, even where the CPU plan would swap them; on the CPU the plan applies."""
    set_filter_gradient("swapped")  # the plan would swap every gradient that can be swapped
    used = []
    real = tf_conv.conv_with_forward_gradients
    monkeypatch.setattr(tf_conv, "conv_with_forward_gradients", lambda *a: used.append(a) or real(*a))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 6, 6, 3)), tf.float32)
    w = tf.constant(rng.normal(size=(3, 3, 3, 4)), tf.float32)
    b = tf.zeros((4,))
    monkeypatch.setattr(conv_module, "gpus_visible", lambda: True)  # a faked GPU placement
    on_gpu = tf.function(_conv_and_gradients)(x, w, b)
    assert used == []
    monkeypatch.setattr(conv_module, "gpus_visible", lambda: False)
    on_cpu = tf.function(_conv_and_gradients)(x, w, b)
    assert used != []
    for a, c in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-4, atol=1e-4)
