"""`keras.distribution.DataParallel` on JAX: a meta-batch split over two devices trains the model
that one device trains.

JAX fixes its device count when it starts (``XLA_FLAGS=--xla_force_host_platform_device_count=2``
gives two host CPU devices), so the runs happen in a subprocess: one process trains on one device
(no distribution) and then under ``DataParallel`` over both, from the same weights on the same
episodes, and writes what each produced; the tests compare them.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tests.helpers import patient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

#: Runs in a JAX process with two host devices: ``script FOLDER PARTS BLOCK_TF``. For ``one`` (no
#: distribution) and then ``two`` (``DataParallel`` over both devices), part ``meta`` meta-trains
#: from the same weights on the same episodes (plain SGD: each update is the meta-gradient times
#: the rate), reports per-class feedback as to a hard-task pool and evaluates; under ``two`` it also
#: records how the data and variables were laid out, tries a meta-batch the devices cannot
#: split and fits a model created before the distribution was set. Part ``resume`` trains two
#: more epochs backed up by a `ResumableCheckpoint` and (under ``two``) the same two epochs stopped
#: after the first and resumed by a new model; part ``pretrain`` trains a `PretrainModel`.
#: ``BLOCK_TF=1`` makes TensorFlow unimportable (the episodes then come from NumPy, as on a machine
#: without it).
_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    folder, parts, block_tensorflow = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "1"
    if block_tensorflow:
        import tests.no_tensorflow
        tests.no_tensorflow.block()
    warnings.simplefilter("ignore")
    import jax, keras
    import numpy as np
    import mtl_keras
    from mtl_keras.callbacks import ResumableCheckpoint
    from mtl_keras.models.pretrain import PretrainModel
    from tests.conftest import make_prototype_split
    from tests.helpers import randomise_backbone

    assert jax.device_count() == 2, jax.devices()
    keras.utils.set_random_seed(0)
    split = make_prototype_split()
    rng = np.random.default_rng(0)
    report = {}


    def episodes(meta_batch_size=4, **kwargs):
        return mtl_keras.make_episodes(split, 4, 1, 3, meta_batch_size=meta_batch_size, seed=0, **kwargs)


    def meta_model(weights=None):
        model = mtl_keras.MetaTransferModel(
            mtl_keras.resnet12((16, 16, 1), widths=(4, 8, 8, 8)), ways=4, inner_steps=3, inner_lr=0.5,
            eval_inner_steps=3,
        )
        if weights is None:
            randomise_backbone(model.backbone, rng)
            model.head.kernel.assign(rng.normal(0, 0.1, model.head.kernel.shape).astype("float32"))
        else:
            model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.01), head_optimizer=keras.optimizers.SGD(0.01))
        return model


    class Feedback:
        def __init__(self):
            self.reports = []

        def report(self, task_classes, class_accuracy):
            self.reports.append((np.asarray(task_classes), np.asarray(class_accuracy)))


    def layout(array):
        sharding = array.sharding
        return {
            "devices": len(sharding.device_set),
            "replicated": bool(sharding.is_fully_replicated),
            "spec": [str(a) for a in getattr(sharding, "spec", ())],
        }


    def numbered(prefix, arrays):
        return {f"{prefix}{i}": np.asarray(a) for i, a in enumerate(arrays)}


    init = pretrain_init = None
    for mode in ("one", "two"):
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()) if mode == "two" else None
        )
        out, logs = {}, {}
        model = meta_model(init)
        if init is None:
            init = model.get_weights()
            early = meta_model(init)  # created before the distribution, fitted under it
        out.update(numbered("init", init))
        feedback = Feedback()
        model.task_feedback = feedback
        step_inputs = []
        checked = model._check_step_inputs

        def record(data, checked=checked):
            step_inputs.append(layout(data[0]["support_images"]))
            return checked(data)

        if mode == "two":  # one device: Keras hands the step NumPy arrays
            model._check_step_inputs = record
        history = model.fit(episodes(), steps_per_epoch=3, epochs=1, shuffle=False, verbose=0)
        logs["fit"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        out.update(numbered("w", model.get_weights()))
        out["task_classes"] = np.stack([c for c, _ in feedback.reports])
        out["class_accuracy"] = np.stack([a for _, a in feedback.reports])
        logs["evaluate"] = model.evaluate(episodes(num_batches=2, repeatable=True), verbose=0, return_dict=True)
        if mode == "two":
            report["step_inputs"] = step_inputs
            report["variables"] = [layout(v.value) for v in model.trainable_variables + model.non_trainable_variables]
            report["optimizers"] = [
                layout(v.value) for v in model.optimizer.variables + model.head_optimizer.variables
            ]
            before = model.get_weights()
            for name, call in (
                ("fit", lambda: model.fit(episodes(3), steps_per_epoch=1, epochs=1, verbose=0)),
                ("evaluate", lambda: model.evaluate(episodes(3, num_batches=1), verbose=0)),
            ):
                try:
                    call()
                    report[f"indivisible_{name}"] = None
                except Exception as err:
                    report[f"indivisible_{name}"] = f"{type(err).__name__}: {err}"
            try:
                early.fit(episodes(), steps_per_epoch=1, epochs=1, verbose=0)
                report["created_before"] = None
            except Exception as err:
                report["created_before"] = f"{type(err).__name__}: {err}"
            try:
                after = model.get_weights()
                report["unchanged_after_refusal"] = all(np.array_equal(a, b) for a, b in zip(before, after))
            except Exception as err:
                report["unchanged_after_refusal"] = f"{type(err).__name__}: {err}"
        if "resume" in parts:
            # Two more epochs backed up by a ResumableCheckpoint; under `two` also the same two
            # epochs stopped after the first (as if killed) and resumed by a new model.
            trained = model.get_weights()

            def two_epochs(model, backup, epochs=2):
                stream = episodes()
                callback = ResumableCheckpoint(backup, stream, verbose=0)
                model.fit(stream, steps_per_epoch=2, epochs=epochs, shuffle=False, verbose=0, callbacks=[callback])
                return model.get_weights(), callback.resumed_from

            out.update(numbered("continued", two_epochs(model, f"{folder}/{mode}-whole")[0]))
            if mode == "two":
                two_epochs(meta_model(trained), f"{folder}/two-resumed", epochs=1)
                weights, report["resumed_from"] = two_epochs(meta_model(trained), f"{folder}/two-resumed")
                out.update(numbered("resumed", weights))
        if "pretrain" in parts:  # Keras's own train step, batch norm on 16-image batches
            pretrain = PretrainModel(mtl_keras.resnet12((16, 16, 1), widths=(4, 8, 8, 8)), num_classes=8)
            if pretrain_init is None:
                pretrain_init = pretrain.get_weights()
            pretrain.set_weights(pretrain_init)
            pretrain.compile(
                optimizer=keras.optimizers.SGD(0.1),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            images = np.random.default_rng(1).uniform(0, 1, (32, 16, 16, 1)).astype("float32")
            labels = np.arange(32) % 8
            history = pretrain.fit(images, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
            logs["pretrain"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
            out.update(numbered("pretrain", pretrain.get_weights()))
        np.savez(f"{folder}/{mode}.npz", **out)
        report[mode] = logs
    print(json.dumps(report))
    """
)


def _run(folder, parts, block_tensorflow):
    """Run `_SCRIPT`'s ``parts`` on one and two devices: ``(report, one's arrays, two's arrays)``."""
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=ROOT,
    )
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(folder), ",".join(parts), str(int(block_tensorflow))],
        env=env,
        capture_output=True,
        text=True,
        timeout=patient(180),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = (dict(np.load(folder / f"{mode}.npz")) for mode in ("one", "two"))
    return report, one, two


def _weights(out: dict, prefix: str) -> list:
    """The arrays ``prefix0, prefix1, ...`` of a run's output, in order."""
    count = sum(1 for k in out if k.startswith(prefix) and k[len(prefix) :].isdigit())
    assert count, f"no {prefix}* arrays"
    return [out[f"{prefix}{i}"] for i in range(count)]


def _largest_difference(a: list, b: list) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _same_logs(report, part):
    got, want = report["two"][part], report["one"][part]
    assert sorted(got) == sorted(want), part
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=f"{part} {key}")


def _check_meta_part(report, one, two):
    # The meta-batch is split over the devices; the variables are replicated.
    assert report["step_inputs"] and all(
        s["devices"] == 2 and s["spec"][:1] == ["batch"] for s in report["step_inputs"]
    ), report["step_inputs"]
    for name in ("variables", "optimizers"):
        assert all(v["devices"] == 2 and v["replicated"] for v in report[name]), (name, report[name])
    # The same meta-gradients (SGD's updates), weights, logs, per-class feedback and evaluation.
    for i, (init, want, got) in enumerate(zip(_weights(one, "init"), _weights(one, "w"), _weights(two, "w"))):
        np.testing.assert_allclose(
            got - init, want - init, rtol=1e-3, atol=1e-6, err_msg=f"update of weight {i}"
        )
    assert _largest_difference(_weights(one, "w"), _weights(two, "w")) < 1e-5
    assert _largest_difference(_weights(one, "w"), _weights(one, "init")) > 1e-2  # it did train
    _same_logs(report, "fit")
    _same_logs(report, "evaluate")
    np.testing.assert_array_equal(two["task_classes"], one["task_classes"])
    np.testing.assert_allclose(two["class_accuracy"], one["class_accuracy"], atol=1e-6)
    # A meta-batch of 3 tasks on 2 devices: a clear error, the model untouched.
    for name in ("fit", "evaluate"):
        message = report[f"indivisible_{name}"]
        assert message and message.startswith("ValueError"), (name, message)
        assert "3 tasks" in message and "2 devices" in message and "meta_batch_size" in message, message
    assert report["unchanged_after_refusal"] is True, report["unchanged_after_refusal"]
    # A model created before set_distribution: told so, not JAX's "incompatible devices".
    message = report["created_before"]
    assert message and message.startswith("ValueError") and "set_distribution" in message, message


@pytest.mark.backends
@pytest.mark.slow  # `make test-slow`: 45 s in the JAX pass of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_data_parallel_on_two_devices_meta_trains_what_one_device_trains(tmp_path):
    """``DataParallel`` over two host devices, episodes from NumPy (TensorFlow unimportable, as on
    a GPU machine without it): each step's meta-batch arrives split over both devices (axis 0),
    every variable and both optimizers' state are replicated on both, and meta-training equals one
    device's — the same meta-gradients and weights (to 1e-5), losses and gradient norms, per-class
    feedback to the hard-task pool, and evaluation. A meta-batch the devices cannot split is refused
    by ``fit`` and ``evaluate`` with a message naming its size, the device count and the fix, and
    leaves the model as it was; a model created before ``set_distribution`` is told so."""
    if keras.backend.backend() != "jax":
        pytest.skip("runs in the JAX pass of make test (the subprocess is JAX either way)")
    report, one, two = _run(tmp_path, ["meta"], block_tensorflow=True)
    _check_meta_part(report, one, two)


@pytest.mark.slow
def test_data_parallel_on_two_devices_checkpoints_resumes_and_pretrains_like_one_device(tmp_path):
    """The same with episodes from `tf.data`, then: two more epochs backed up by a
    `ResumableCheckpoint` give one device's weights; stopped after the first and resumed by a new
    model, they give the uninterrupted run's; and `PretrainModel` (Keras's own step, batch norm in
    training mode) trains as on one device."""
    report, one, two = _run(tmp_path, ["meta", "resume", "pretrain"], block_tensorflow=False)
    _check_meta_part(report, one, two)
    assert _largest_difference(_weights(one, "continued"), _weights(two, "continued")) < 1e-5
    assert report["resumed_from"] == 1  # the second run continued after the first one's epoch
    assert _largest_difference(_weights(two, "resumed"), _weights(two, "continued")) < 1e-6
    _same_logs(report, "pretrain")
    assert _largest_difference(_weights(one, "pretrain"), _weights(two, "pretrain")) < 1e-5


@pytest.mark.backends
def test_keras_jax_trainer_still_lays_out_its_state_as_the_meta_step_does():
    """`keras_private.state_sharding_spec` is ``JAXTrainer._get_state_sharding_spec``, which
    Keras's own JAX ``make_train_function`` gives ``jax.jit`` as ``out_shardings``."""
    if keras.backend.backend() != "jax":
        pytest.skip("the JAX trainer's hook (JAX pass of make test)")
    import inspect

    from keras.src.backend.jax.trainer import JAXTrainer

    from mtl_keras import keras_private

    assert callable(getattr(JAXTrainer, "_get_state_sharding_spec", None))
    assert "self._get_state_sharding_spec()" in inspect.getsource(JAXTrainer.make_train_function)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.optimizer.build(model.trainable_variables)
    trainable, non_trainable, optimizer, metrics = keras_private.state_sharding_spec(model)
    assert len(trainable) == len(model.trainable_variables) == 2
    assert len(optimizer) == len(model.optimizer.variables)
