"""mtl_keras_app: the experiment application built on the mtl_keras library.

The ``mtl-keras`` command (`mtl_keras_app.cli`), its presets (`mtl_keras_app.config`), the
pretrain → meta-train → evaluate workflow with its run folder (`mtl_keras_app.workflow`), the
paper's ablation (`mtl_keras_app.ablation`), figures (`mtl_keras_app.plots`), Keras Tuner search
(`mtl_keras_app.tuning`) and tf.distribute strategies (`mtl_keras_app.distribute`).

It is a package of its own, beside the library rather than inside it, because the command must
filter TensorFlow's start-up output (`mtl_keras_app.quiet`) before anything imports TensorFlow,
and importing any module under ``mtl_keras`` runs ``mtl_keras/__init__.py``, which imports Keras
(and on the TensorFlow backend TensorFlow). This ``__init__`` imports nothing; the application's
modules import the library, never the reverse (``tests/unit/test_import_graph.py``).
"""
