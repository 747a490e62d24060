"""The workflow: pretrain → meta-train → evaluate → export, in one run folder.

* `builders`: `build_meta_model` (the one `MetaTransferModel` builder), `build_backbone`,
  `outer_optimizers`, `training_episodes`, `load_config_benchmark`.
* `training`: `pretrain` and `meta_train` (the two trainings, resumable from a backup folder).
* `stages`: `pretrain_stage`, `meta_train_stage`, `evaluate_stage`, `export_stage` — each stage
  once; the ``mtl-keras`` subcommands, `run_workflow` and the ablation call them.
* `run`: `run_workflow` (``mtl-keras run`` and ``demo``) and its tables.
* `run_folder`: `RunProgress` (resume), `output_dir`, ``metrics.json``, the folder's lock.
* `tensorboard`: the scalars and images the run logs.

Notebooks and scripts can call the same steps one at a time::

    from mtl_keras_app.workflow import build_meta_model, meta_train, pretrain
    pre, history = pretrain(config, train)
    pre.backbone.save_weights("pretrained.weights.h5")
    model = build_meta_model(config, train.channels, "pretrained.weights.h5")
    meta_train(config, model, train, val, 1, "mtl_1shot.weights.h5")
"""

from mtl_keras_app.workflow.builders import (
    build_backbone,
    build_meta_model,
    check_episode_settings,
    dtype_policy,
    load_config_benchmark,
    meta_training_callbacks,
    outer_optimizers,
    tf_data_pipelines,
    training_episodes,
)
from mtl_keras_app.workflow.run import format_stage_times, format_table, format_verdict, run_workflow
from mtl_keras_app.workflow.run_folder import (
    PRETRAINED_WEIGHTS,
    RunProgress,
    check_strategy,
    checkpoint_path,
    open_run,
    output_dir,
    read_metrics,
    run_info,
    source_commit,
    update_metrics,
    writes_run_folder,
)
from mtl_keras_app.workflow.stages import (
    BASELINE_ROW,
    CENTROID_ROWS,
    MTL_ROW,
    best_centroid_row,
    evaluate_stage,
    export_stage,
    meta_train_stage,
    pretrain_stage,
)
from mtl_keras_app.workflow.tensorboard import (
    TrainingScalarsLogger,
    tensorboard_available,
    tensorboard_callbacks,
    write_episode_image,
)
from mtl_keras_app.workflow.training import (
    WEAK_PRETRAINING_ACCURACY,
    meta_train,
    pretrain,
    verbose_mode,
    weak_pretraining,
)

__all__ = [
    "BASELINE_ROW",
    "CENTROID_ROWS",
    "MTL_ROW",
    "best_centroid_row",
    "PRETRAINED_WEIGHTS",
    "WEAK_PRETRAINING_ACCURACY",
    "RunProgress",
    "TrainingScalarsLogger",
    "build_backbone",
    "build_meta_model",
    "check_episode_settings",
    "check_strategy",
    "checkpoint_path",
    "dtype_policy",
    "evaluate_stage",
    "export_stage",
    "format_stage_times",
    "format_table",
    "format_verdict",
    "load_config_benchmark",
    "meta_train",
    "meta_train_stage",
    "open_run",
    "meta_training_callbacks",
    "outer_optimizers",
    "output_dir",
    "pretrain",
    "pretrain_stage",
    "read_metrics",
    "run_info",
    "run_workflow",
    "source_commit",
    "tensorboard_available",
    "tensorboard_callbacks",
    "tf_data_pipelines",
    "training_episodes",
    "update_metrics",
    "verbose_mode",
    "weak_pretraining",
    "write_episode_image",
    "writes_run_folder",
]
