"""A benchmark worker for mtl_keras: ``python -m benchmarks.harness.keras_worker SPEC_JSON``.

Each worker is its own process, so that the dtype policy, the thread pools and the peak resident
memory belong to one configuration. Kinds:

* ``train``: the model's ``train_function`` (the compiled step `fit` runs) on a fixed synthetic
  meta-batch (random pixels; the data pipeline is not measured);
* ``eval``: the evaluation step of `evaluate_episodes` (adapt with the query history, argmax);
* ``ceiling``: a matmul and a 3×3 convolution, float32 and bfloat16.
"""

from __future__ import annotations

import numpy as np


def configure_threads(intra: int | None, inter: int | None) -> None:
    """Set TensorFlow's thread pools (before any op runs); ``None`` keeps TF's default."""
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra))
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter))


def synthetic_arrays(meta_batch, ways, shots, queries, image_size, channels, seed=0):
    """``(inputs, query_labels)`` as `make_episodes` yields, with random pixels, as numpy arrays
    (what `mtl_keras.data.episode_source` feeds ``fit`` on any backend)."""
    rng = np.random.default_rng(seed)

    def labels(per_class):
        return np.tile(np.repeat(np.arange(ways, dtype=np.int32), per_class), (meta_batch, 1))

    shape = (image_size, image_size, channels)
    inputs = {
        "support_images": rng.random((meta_batch, ways * shots, *shape), dtype=np.float32),
        "support_labels": labels(shots),
        "query_images": rng.random((meta_batch, ways * queries, *shape), dtype=np.float32),
    }
    return inputs, labels(queries)


def synthetic_episodes(meta_batch, ways, shots, queries, image_size, channels, seed=0):
    """`synthetic_arrays` as TensorFlow constants."""
    import tensorflow as tf

    inputs, labels = synthetic_arrays(meta_batch, ways, shots, queries, image_size, channels, seed)
    return {name: tf.constant(value) for name, value in inputs.items()}, tf.constant(labels)


def ceiling_steps(
    conv_shape=(128, 16, 128, 128), matmul_size: int = 2048, dtypes=("float32", "bfloat16")
) -> dict:
    """Steps timing a matmul and a 3×3 convolution in each of ``dtypes`` (machine ceiling).

    The driver leaves bfloat16 out under an ``ONEDNN_MAX_CPU_ISA`` cap below bf16 (it would
    abort the process).
    """
    import tensorflow as tf

    steps = {}
    batch, size, cin, cout = conv_shape
    for dtype in (tf.as_dtype(d) for d in dtypes):
        a = tf.cast(tf.random.normal((matmul_size, matmul_size)), dtype)
        x = tf.cast(tf.random.normal((batch, size, size, cin)), dtype)
        k = tf.cast(tf.random.normal((3, 3, cin, cout)), dtype)
        matmul = tf.function(lambda a=a: tf.reduce_sum(tf.matmul(a, a)[:1, :1]))
        conv = tf.function(lambda x=x, k=k: tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME")[:1, :1, :1, :1]))
        steps[f"matmul_{dtype.name}"] = lambda f=matmul: f().numpy()
        steps[f"conv_{dtype.name}"] = lambda f=conv: f().numpy()
    return steps


def add_step_arguments(parser) -> None:
    """The options of one training step's configuration (benchmarks/probes/step_ab.py, benchmarks/probes/profile_step.py)."""
    parser.add_argument("--precision", default="mixed_bfloat16", choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--meta-batch", type=int, default=2)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--widths", default="64,128,256,512", help="ResNet-12 widths, e.g. 32,64,128,256")


def train_spec(args, **extra) -> dict:
    """A ``train`` worker spec (5-way) from `add_step_arguments` options, updated with ``extra``."""
    return {
        "kind": "train",
        "precision": args.precision,
        "meta_batch": args.meta_batch,
        "ways": 5,
        "shots": args.shots,
        "queries": args.queries,
        "image_size": args.image_size,
        "widths": [int(w) for w in args.widths.split(",")],
        "inner_steps": args.inner_steps,
        **extra,
    }


def build_model(spec: dict):
    """The compiled `MetaTransferModel` of a ``train``/``eval`` spec, on the running Keras backend:
    ResNet-12 ``spec["widths"]`` under the ``spec["precision"]`` dtype policy, seeded."""
    import keras

    from mtl_keras.backbones.resnet12_backbone import resnet12
    from mtl_keras.models.meta_transfer import MetaTransferModel

    keras.utils.set_random_seed(spec.get("seed", 0))
    keras.mixed_precision.set_dtype_policy(spec.get("precision", "float32"))
    size, channels = spec["image_size"], spec.get("channels", 3)
    backbone = resnet12((size, size, channels), widths=tuple(spec["widths"]))
    model = MetaTransferModel(
        backbone,
        ways=spec["ways"],
        inner_steps=spec["inner_steps"],
        eval_inner_steps=spec.get("eval_inner_steps", spec["inner_steps"]),
        first_order=spec.get("first_order", False),
        # an A/B knob (benchmarks/probes/step_ab.py): inner loop unrolled (default) or a tf.while_loop
        unroll_training=spec.get("unroll_training", True),
        # an A/B knob: frozen batch norm folded into the convolutions (default) or run as it is
        fold_batch_norm=spec.get("fold_batch_norm", True),
        **spec.get("model_kwargs", {}),
    )
    model.compile(jit_compile=spec.get("jit_compile", False))
    return model


def build_steps(spec: dict) -> tuple[dict, dict]:
    """The worker's steps for ``spec``."""
    configure_threads(spec.get("intra_threads"), spec.get("inter_threads"))
    import keras
    import tensorflow as tf

    info = {
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "intra_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    if spec["kind"] == "ceiling":
        return ceiling_steps(dtypes=spec.get("dtypes", ("float32", "bfloat16"))), info

    from mtl_keras.tensorflow_backend import gradient_plan as conv

    conv.set_filter_gradient(spec.get("filter_gradient", "auto"))
    # A/B knobs (benchmarks/probes/step_ab.py): another ISA's plan, and the limits of the plan in use
    conv.set_gradient_isa(spec.get("gradient_isa"))
    for knob, kind in (
        ("swapped_max_pixels", "filter"),
        ("input_max_pixels", "input"),
        ("matmul_max_pixels", "filter_matmul"),
    ):
        if knob in spec:  # every dtype's limit; "none": any size, 0: never
            limits = conv.gradient_plan()[1][kind]
            value = None if str(spec[knob]).lower() == "none" else int(spec[knob])
            for dtype in ("float32", "bfloat16", "float16"):
                limits[dtype] = value

    model = build_model(spec)
    size, channels = spec["image_size"], spec.get("channels", 3)
    inputs, labels = synthetic_episodes(
        spec["meta_batch"], spec["ways"], spec["shots"], spec["queries"], size, channels, spec.get("seed", 0)
    )
    if spec["kind"] == "train":
        model.make_train_function()

        def train():
            logs = model.train_function([(inputs, labels)])
            return {name: float(value) for name, value in logs.items()}  # waits for the step

        return {"step": train}, info
    if spec["kind"] == "eval":

        @tf.function(jit_compile=spec.get("jit_compile", False))
        def run(inputs, labels):  # as in evaluate_episodes
            _, history = model.adapt(
                inputs["support_images"],
                inputs["support_labels"],
                inputs["query_images"],
                steps=spec["inner_steps"],
                return_history=True,
            )
            preds = tf.argmax(history["query_logits"], axis=-1, output_type=tf.int32)
            return tf.reduce_mean(tf.cast(tf.equal(preds, labels[None]), tf.float32), axis=-1)

        return {"step": lambda: run(inputs, labels).numpy()}, info
    raise ValueError(f"Unknown worker kind {spec['kind']!r}.")


def main(argv=None) -> None:
    from benchmarks.harness import worker_protocol

    worker_protocol.run_worker(build_steps, argv)


if __name__ == "__main__":
    main()
