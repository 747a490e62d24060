"""The JAX backend computes what the TensorFlow backend computes (issue 17).

`test_inner_gradient_closed_form_equals_autodiff` runs on both backends (marked ``backends``);
the others run in the TensorFlow pass and start a JAX process (``KERAS_BACKEND`` is read once,
at the first ``import keras``, so one process holds one backend).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from mtl_keras.models.base_learner import support_loss_and_grads
from tests.no_tensorflow import PRELUDE as NO_TENSORFLOW

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _autodiff(fn, *args):
    """Gradients of scalar ``fn(*args)`` with respect to each argument, by the backend's autodiff."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.grad(fn, argnums=tuple(range(len(args))))(*args)
    import tensorflow as tf

    args = [tf.convert_to_tensor(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        value = fn(*args)
    return tape.gradient(value, args)


@pytest.mark.backends
def test_inner_gradient_closed_form_equals_autodiff():
    rng = np.random.default_rng(0)
    b, s, d, n = 3, 10, 6, 5
    features = rng.normal(size=(b, s, d)).astype("float32")
    onehot = np.eye(n, dtype="float32")[rng.integers(0, n, (b, s))]
    weights = rng.normal(size=(b, d, n)).astype("float32")
    bias = rng.normal(size=(b, n)).astype("float32")

    def total_loss(weights, bias):
        loss, _, _ = support_loss_and_grads(features, onehot, weights, bias)
        return keras.ops.sum(loss)

    want_w, want_b = _autodiff(total_loss, weights, bias)
    _, grad_w, grad_b = support_loss_and_grads(features, onehot, weights, bias)
    np.testing.assert_allclose(np.asarray(grad_w), np.asarray(want_w), atol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_b), np.asarray(want_b), atol=1e-5)


#: One process's part of the parity test: the same model (weights from ``init.npz``), the same
#: meta-batch (``batch.npz``); for each order and optimizer, fit steps from the initial weights,
#: the weights, logs and head optimizer state out.
_STEP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    import mtl_keras

    folder = sys.argv[1]
    batch = dict(np.load(f"{folder}/batch.npz"))
    labels = batch.pop("query_labels")
    init = np.load(f"{folder}/init.npz")
    histories = {}
    for first_order in (False, True):
        for optimizer in ("sgd", "adam"):
            model = mtl_keras.MetaTransferModel(
                mtl_keras.resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=4, inner_steps=3, inner_lr=0.5,
                first_order=first_order,
            )
            model.set_weights([init[f"w{i}"] for i in range(len(init.files))])
            if optimizer == "sgd":
                model.compile(optimizer=keras.optimizers.SGD(1.0), head_optimizer=keras.optimizers.SGD(1.0))
                steps = 1
            else:
                model.compile()
                steps = 3
            history = model.fit(batch, labels, batch_size=len(labels), epochs=steps, shuffle=False, verbose=0)
            out = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
            out.update({f"h{i}": np.asarray(v) for i, v in enumerate(model.head_optimizer.variables)})
            name = f"{int(first_order)}-{optimizer}"
            np.savez(f"{folder}/{keras.backend.backend()}-{name}.npz", **out)
            histories[name] = {k: [float(x) for x in v] for k, v in history.history.items()}
    print(json.dumps(histories))
    """
)


def _run_backend(backend, folder):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-c", _STEP_SCRIPT, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    histories = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        name: (history, dict(np.load(f"{folder}/{backend}-{name}.npz")))
        for name, history in histories.items()
    }


@pytest.mark.slow  # `make test-slow`: 63 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_fit_steps_on_jax_equal_the_steps_on_tensorflow(tmp_path, proto_split):
    """Same weights, same meta-batch, second and first order: the JAX step's logs (loss, accuracy,
    gradient norms), its meta-gradients (SGD with rate 1: the update is the gradient) and, after 3
    Adam steps, the head optimizer's state (iterations, m, v) equal TF's."""
    from mtl_keras import MetaTransferModel, make_episodes, resnet12
    from tests.helpers import randomise_backbone

    rng = np.random.default_rng(0)
    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=4, inner_steps=3, inner_lr=0.5)
    randomise_backbone(model.backbone, rng)
    model.head.kernel.assign(rng.normal(0, 0.1, model.head.kernel.shape).astype("float32"))
    init = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(tmp_path / "init.npz", **init)
    inputs, labels = next(iter(make_episodes(proto_split, 4, 2, 3, meta_batch_size=2, seed=3)))
    np.savez(tmp_path / "batch.npz", query_labels=labels.numpy(), **{k: v.numpy() for k, v in inputs.items()})

    tf_runs = _run_backend("tensorflow", tmp_path)
    jax_runs = _run_backend("jax", tmp_path)
    assert sorted(jax_runs) == sorted(tf_runs) == ["0-adam", "0-sgd", "1-adam", "1-sgd"]
    for name, (tf_history, tf_out) in tf_runs.items():
        jax_history, jax_out = jax_runs[name]
        assert sorted(jax_history) == sorted(tf_history), name
        for key in tf_history:
            np.testing.assert_allclose(
                jax_history[key], tf_history[key], rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}"
            )
        assert sorted(jax_out) == sorted(tf_out)
        for key in tf_out:
            if name.endswith("sgd") and key.startswith("w"):  # the gradient itself: w0 − w1
                np.testing.assert_allclose(
                    init[key] - jax_out[key],
                    init[key] - tf_out[key],
                    rtol=1e-3,
                    atol=1e-6,
                    err_msg=f"{name} {key}",
                )
            elif key.startswith("h"):  # head optimizer state: iterations, Adam's m and v
                np.testing.assert_allclose(
                    jax_out[key], tf_out[key], rtol=1e-3, atol=1e-7, err_msg=f"{name} {key}"
                )
        if name.endswith("adam"):
            assert int(jax_out["h0"]) == 3, f"{name}: the head optimizer did not count 3 steps on JAX"
    # Second order differs from first order (the parity is not of two identical computations).
    second, first = tf_runs["0-sgd"][1], tf_runs["1-sgd"][1]
    assert any(
        not np.allclose(second[k], first[k], rtol=1e-4, atol=1e-7) for k in second if k.startswith("w")
    )


@pytest.mark.slow  # `make test-slow`: 26 (the JAX pass's command test runs mtl_keras without TensorFlow too) s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_mtl_keras_imports_and_meta_trains_on_jax_without_tensorflow():
    """``import mtl_keras`` with TensorFlow made unimportable: no TensorFlow module is loaded,
    episodes come from the numpy source, and fit + evaluate_episodes run on JAX."""
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore")
        import numpy as np
        import mtl_keras, keras
        assert keras.backend.backend() == "jax"
        from tests.conftest import make_prototype_split
        split = make_prototype_split()
        model = mtl_keras.MetaTransferModel(
            mtl_keras.resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=4, inner_steps=3, eval_inner_steps=5
        )
        model.compile()
        episodes = mtl_keras.make_episodes(split, 4, 1, 3, meta_batch_size=2, seed=0)
        model.fit(episodes, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
        result = mtl_keras.evaluate_episodes(model, split, 4, 1, 3, episodes=4, verbose=False)
        loaded = [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]
        assert not loaded, loaded
        print("ok", result.mean)
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW + script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("ok")


@pytest.mark.backends
def test_layers_backbones_and_the_base_learner_call_no_tensorflow():
    """Issue 17: the layers, backbones and inner loop are keras.ops only (TensorFlow's kernels
    live in mtl_keras/tensorflow_backend/, imported only on that backend)."""
    import re

    package = os.path.join(ROOT, "mtl_keras")
    paths = [os.path.join(package, "models", "base_learner.py")]
    for folder in ("layers", "backbones"):
        paths += [os.path.join(package, folder, f) for f in os.listdir(os.path.join(package, folder))]
    offending = []
    for path in paths:
        if not path.endswith(".py"):
            continue
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            if re.search(r"\btf\.|import tensorflow|from tensorflow", line):
                offending.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)


@pytest.mark.backends
def test_compile_jit_compiles_on_jax_and_not_on_tensorflow():
    """On JAX an uncompiled step runs op by op (3.3x slower a step): compile defaults to XLA there;
    on TensorFlow to graph mode without XLA. An explicit choice wins on both."""
    from mtl_keras import MetaTransferModel, resnet12

    model = MetaTransferModel(resnet12((16, 16, 1), widths=(4, 4, 4, 4)), ways=3)
    model.compile()
    assert model.jit_compile is (keras.backend.backend() == "jax")
    model.compile(jit_compile=False)
    assert model.jit_compile is False
