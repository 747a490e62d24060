"""Keras Tuner for MTL: `MTLHyperModel` and `run_tuning` (``mtl-keras tune``).

The search space is the outer- and inner-loop optimisation of meta-transfer
learning: the inner-loop learning rate, Φ's learning rate, the head
initialisation's learning rate (all log-uniform) and the number of inner steps.
The objective is the mean validation-episode accuracy (``val_accuracy``, max).

Distributed tuning works as Keras Tuner does it: every process runs the same
search with the same ``directory``; the environment decides the role::

    KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=8000 KERASTUNER_TUNER_ID=chief \\
        mtl-keras tune --config cpu-glyphs --run-dir runs/tune &
    KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=8000 KERASTUNER_TUNER_ID=tuner0 \\
        mtl-keras tune --config cpu-glyphs --run-dir runs/tune

The chief only serves the oracle (gRPC on ``IP:PORT``) and writes ``tuning.json``
when the workers are done; workers run trials.
"""

from __future__ import annotations

import json
import os

import keras
import keras_tuner

from mtl_keras.data.episodes import make_episodes
from mtl_keras.data.numpy_episodes import episode_source
from mtl_keras.data.split import ClassSplit
from mtl_keras.evaluation import EpisodeAccuracy
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.run_lock import locks_run_folder
from mtl_keras_app.workflow import (
    build_meta_model,
    check_strategy,
    load_config_benchmark,
    meta_training_callbacks,
    tensorboard_available,
    tf_data_pipelines,
)

OBJECTIVE = "val_accuracy"
#: The seed Keras Tuner gets for ``seed=0``, which it would otherwise replace with a random one.
ZERO_SEED = 10_007
TUNERS = ("random", "bayesian", "hyperband")


class MTLHyperModel(keras_tuner.HyperModel):
    """A `MetaTransferModel` whose learning rates and inner steps are hyperparameters.

    ``build(hp)`` returns a compiled `MetaTransferModel` over a backbone holding the
    weights of ``weights_path`` (a pretrained ``.weights.h5`` of ``config``'s backbone),
    or a freshly initialised backbone when it is None (seeded with ``config.seed``, so
    every trial starts from the same weights). ``fit(hp, model, x, validation_data=...)``
    meta-trains on the episodes ``tuner.search(x, validation_data=...)`` passes — as Keras
    Tuner's `HyperModel.fit` does — or, when ``search()`` gets none, on episodes it builds
    from ``train_split`` / ``val_split``; it returns the objective.

    Hyperparameters:
        ``inner_lr`` (log-uniform in ``inner_lr_range``), ``phi_lr`` (log, ``phi_lr_range``),
        ``head_lr`` (log, ``head_lr_range``), ``inner_steps`` (choice of
        ``inner_steps_choices``). Defaults: the config's values where inside the range.

    Args:
        config: everything else (ways, queries, meta-batch size, epochs,
            steps_per_epoch, val_episodes, eval_inner_steps, seed, backbone).
        train_split: meta-training classes (None: ``search`` must pass the training episodes).
        val_split: validation classes, the objective's episodes (None: ``search`` must pass
            ``validation_data``).
        shots: ``K`` of the episodes (default ``config.shots[0]``).
        weights_path: pretrained backbone weights, or None for a fresh backbone.
        channels: image channels (default ``train_split.channels``; needed without it).
        inner_lr_range: ``(min, max)`` of the inner loop's learning rate.
        phi_lr_range: ``(min, max)`` of Φ's learning rate.
        head_lr_range: ``(min, max)`` of the head initialisation's learning rate.
        inner_steps_choices: the inner step counts to try.

    Example:
        >>> hypermodel = MTLHyperModel(config, train, val, weights_path="runs/a/pretrained_backbone.weights.h5")
        >>> tuner = keras_tuner.RandomSearch(hypermodel, objective=keras_tuner.Objective("val_accuracy", "max"),
        ...                                  max_trials=20, directory="runs/tune")
        >>> tuner.search()  # episodes from the splits; or your own:
        >>> tuner.search(make_episodes(train, 5, 1, 15, meta_batch_size=4),
        ...              validation_data=make_episodes(val, 5, 1, 15, 10, num_batches=30, repeatable=True))
        >>> tuner.get_best_hyperparameters()[0].values
    """

    def __init__(
        self,
        config: ExperimentConfig,
        train_split: ClassSplit | None,
        val_split: ClassSplit | None,
        shots: int | None = None,
        weights_path: str | None = None,
        channels: int | None = None,
        inner_lr_range: tuple[float, float] = (1e-3, 1.0),
        phi_lr_range: tuple[float, float] = (1e-5, 1e-2),
        head_lr_range: tuple[float, float] = (1e-4, 1e-1),
        inner_steps_choices: tuple[int, ...] = (5, 10, 20, 40),
        name: str | None = "mtl",
    ):
        super().__init__(name=name, tunable=True)
        self.config = config
        self.train_split = train_split
        self.val_split = val_split
        self.shots = int(shots if shots is not None else config.shots[0])
        self.weights_path = weights_path
        if channels is None and train_split is None:
            raise ValueError("MTLHyperModel: give `channels` when there is no train_split.")
        self.channels = int(channels or train_split.channels)
        self.inner_lr_range = tuple(inner_lr_range)
        self.phi_lr_range = tuple(phi_lr_range)
        self.head_lr_range = tuple(head_lr_range)
        self.inner_steps_choices = tuple(int(s) for s in inner_steps_choices)
        for key in ("inner_lr_range", "phi_lr_range", "head_lr_range"):
            low, high = getattr(self, key)
            if not 0 < low < high:
                raise ValueError(
                    f"MTLHyperModel: {key} must be (min, max) with 0 < min < max, got {(low, high)}."
                )
        if not self.inner_steps_choices or min(self.inner_steps_choices) < 1:
            raise ValueError(
                f"MTLHyperModel: inner_steps_choices must be positive ints, got {inner_steps_choices}."
            )

    def _float(self, hp, name: str, bounds: tuple[float, float], current: float) -> float:
        low, high = bounds
        default = current if low <= current <= high else None
        return hp.Float(name, low, high, sampling="log", default=default)

    def trial_config(self, hp) -> ExperimentConfig:
        """``config`` with this trial's hyperparameter values."""
        steps_default = (
            self.config.inner_steps if self.config.inner_steps in self.inner_steps_choices else None
        )
        return self.config.replace(
            inner_lr=self._float(hp, "inner_lr", self.inner_lr_range, self.config.inner_lr),
            phi_lr=self._float(hp, "phi_lr", self.phi_lr_range, self.config.phi_lr),
            head_lr=self._float(hp, "head_lr", self.head_lr_range, self.config.head_lr),
            inner_steps=hp.Choice("inner_steps", list(self.inner_steps_choices), default=steps_default),
        )

    def build(self, hp):
        """A compiled `MetaTransferModel` with this trial's learning rates and inner steps."""
        config = self.trial_config(hp)
        keras.utils.set_random_seed(config.seed)
        return build_meta_model(config, self.channels, self.weights_path)

    def fit(self, hp, model, x=None, *args, validation_data=None, **kwargs) -> float:
        """Meta-train ``model`` on episodes; return the best epoch's mean validation accuracy.

        Args:
            hp: the trial's hyperparameters (used by `build`).
            model: the model `build` returned.
            x: training episodes (`make_episodes`), as ``tuner.search(x, ...)`` passes them;
                None: built from ``train_split`` (seed ``config.seed`` + ``initial_epoch``, so a
                Hyperband trial resumed at ``initial_epoch`` continues with new episodes).
            *args: further positional arguments of `keras.Model.fit` (``y`` must be None:
                the labels are part of the episodes).
            validation_data: the objective's episodes (``repeatable=True`` so every trial
                and epoch scores the same ones), scored by Keras' ``fit`` (`test_step`); None:
                ``config.val_episodes`` fixed episodes of ``val_split``, scored by
                `EpisodeAccuracy` (`evaluate_episodes`, the workflow's validation).
            **kwargs: `keras.Model.fit` keywords: ``callbacks`` (the tuner's: checkpointing,
                TensorBoard, ...), ``epochs`` and ``initial_epoch`` (Hyperband sets them;
                default ``config.meta_epochs`` and 0), ``steps_per_epoch`` (default
                ``config.steps_per_epoch``), ``verbose`` (default 0).

        Returns:
            max over epochs of ``val_accuracy``: mean query accuracy over the validation
            episodes.

        Raises:
            ValueError: no episodes given and no split to build them from.
        """
        if args and args[0] is not None:
            raise ValueError("MTLHyperModel.fit: `y` is part of the episodes; pass the episodes as `x` only.")
        config = self.config
        keras.utils.set_random_seed(config.seed)
        for given, split, what in (
            (x, self.train_split, "training"),
            (validation_data, self.val_split, "validation"),
        ):
            if given is None and split is None:
                raise ValueError(
                    f"MTLHyperModel.fit: no {what} episodes: pass them to tuner.search("
                    + ("episodes" if what == "training" else "..., validation_data=episodes")
                    + f") or give the hypermodel a {what} split."
                )
        train_eps = (
            x
            if x is not None
            else (make_episodes if tf_data_pipelines() else episode_source)(
                self.train_split,
                config.ways,
                self.shots,
                config.queries,
                meta_batch_size=config.meta_batch_size,
                seed=config.seed + int(kwargs.get("initial_epoch", 0)),
            )
        )
        if validation_data is None:
            # The library's one evaluation path (`evaluate_episodes`, each image embedded once),
            # first among the callbacks: the tuner's own ones read the val_accuracy it logs.
            val_batch = min(10, config.val_episodes)
            validation = EpisodeAccuracy(
                self.val_split,
                config.ways,
                self.shots,
                config.queries,
                max(1, config.val_episodes // val_batch) * val_batch,
                config.seed + 1,
            )
            kwargs["callbacks"] = [validation, *(kwargs.get("callbacks") or [])]
        else:
            kwargs["validation_data"] = validation_data  # Keras' own validation (`test_step`)
        # The rates' step decay and the divergence guard, after the tuner's own callbacks.
        kwargs["callbacks"] = [
            *(kwargs.get("callbacks") or []),
            *meta_training_callbacks(config, verbose=False),
        ]
        kwargs.setdefault("epochs", config.meta_epochs)
        kwargs.setdefault("steps_per_epoch", config.steps_per_epoch)
        kwargs.setdefault("verbose", 0)
        kwargs.setdefault("shuffle", False)  # episodes are already random (Keras warns otherwise)
        history = model.fit(train_eps, *args, **kwargs)
        return float(max(history.history[OBJECTIVE]))


def make_tuner(
    hypermodel: MTLHyperModel,
    tuner: str = "random",
    directory: str = ".",
    project_name: str = "tuner",
    max_trials: int = 10,
    max_epochs: int | None = None,
    executions_per_trial: int = 1,
    overwrite: bool = False,
    seed: int = 0,
    distribution_strategy=None,
) -> keras_tuner.Tuner:
    """A Keras Tuner of kind ``tuner`` (``random``, ``bayesian``, ``hyperband``) for ``hypermodel``.

    ``max_trials`` bounds random search and Bayesian optimisation (whose first
    ``min(3, max_trials - 1)`` trials are random, at least one); Hyperband sizes its
    brackets from ``max_epochs`` (default ``hypermodel.config.meta_epochs``) with
    factor 3, one iteration. The same ``seed`` gives the same trials (``0`` included; None:
    a random seed). With a ``distribution_strategy`` every trial's model is built and
    trained in its scope (the meta-batch split across its replicas).
    """
    common = dict(
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        distribution_strategy=distribution_strategy,
        executions_per_trial=executions_per_trial,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        # Keras Tuner reads seed 0 as "no seed" (`seed or random.randint(1, 10000)`): a search
        # with seed 0 was not reproducible. Map 0 to a fixed stand-in.
        seed=ZERO_SEED if seed == 0 else seed,
    )
    if tuner == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if tuner == "bayesian":
        return keras_tuner.BayesianOptimization(
            hypermodel, max_trials=max_trials, num_initial_points=max(1, min(3, max_trials - 1)), **common
        )
    if tuner == "hyperband":
        return keras_tuner.Hyperband(
            hypermodel,
            max_epochs=max_epochs or hypermodel.config.meta_epochs,
            factor=3,
            hyperband_iterations=1,
            **common,
        )
    raise ValueError(f"Unknown tuner '{tuner}'. Known: {', '.join(TUNERS)}.")


def distributed_role() -> str:
    """``"chief"``, ``"worker"`` or ``"single"``, from the Keras Tuner environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def summarize(tuner: keras_tuner.Tuner, kind: str) -> dict:
    """Best hyperparameters and every trial's values, score and status."""
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)
    best = tuner.get_best_hyperparameters(1)
    return {
        "tuner": kind,
        "objective": OBJECTIVE,
        "best_hyperparameters": best[0].values if best else None,
        "best_score": max((t.score for t in trials if t.score is not None), default=None),
        "trials": [
            {
                "trial_id": t.trial_id,
                "status": t.status,
                "score": t.score,
                "hyperparameters": t.hyperparameters.values,
            }
            for t in trials
        ],
    }


# A distributed search shares its folder between the chief and the workers, by design.
@locks_run_folder(folder=lambda args: args["run_dir"] if distributed_role() == "single" else None)
def run_tuning(
    config: ExperimentConfig,
    run_dir: str,
    tuner: str = "random",
    max_trials: int = 10,
    weights_path: str | None = None,
    executions_per_trial: int = 1,
    overwrite: bool = False,
    verbose: bool = True,
    tensorboard: bool = True,
    hypermodel_kwargs: dict | None = None,
    strategy=None,
) -> dict:
    """A Keras Tuner search over `MTLHyperModel`'s space, into a run folder (``mtl-keras tune``).

    Writes ``config.json``, the Keras Tuner project ``tuner/``, TensorBoard logs
    ``logs/tuning/<trial>`` (with the HParams dashboard) and, except on a distributed
    worker, ``tuning.json`` (see `summarize`). In distributed mode (see the module
    docstring) a worker never overwrites the project, since the chief owns it.

    Args:
        config: settings; the episodes use ``config.shots[0]``.
        run_dir: the run folder (shared by chief and workers).
        tuner: ``random``, ``bayesian`` or ``hyperband``.
        max_trials: trials for random search and Bayesian optimisation.
        weights_path: pretrained backbone weights (None: fresh backbone).
        executions_per_trial: fits per trial (their objectives are averaged).
        overwrite: start afresh instead of resuming ``run_dir/tuner``.
        verbose: Keras Tuner's progress output.
        tensorboard: write ``logs/tuning``.
        hypermodel_kwargs: extra `MTLHyperModel` arguments (ranges, choices).
        strategy: a `tf.distribute` strategy (e.g. ``MirroredStrategy()``) to build and
            meta-train every trial under; ``config.meta_batch_size`` must split over its
            replicas (checked before anything runs).

    Returns:
        The summary (also in ``tuning.json``), or ``{"role": "worker"}`` on a worker.

    Raises:
        ValueError: an unknown ``tuner``, a meta-batch that does not split over the strategy,
            or a search whose every trial failed (Keras Tuner goes on after a failed trial).
    """
    if tuner not in TUNERS:
        raise ValueError(f"Unknown tuner '{tuner}'. Known: {', '.join(TUNERS)}.")
    if weights_path is not None and not os.path.exists(weights_path):
        raise FileNotFoundError(f"No pretrained weights at {weights_path}.")
    check_strategy(config, strategy)
    role = distributed_role()
    os.makedirs(run_dir, exist_ok=True)
    if role != "worker":
        config.to_json(os.path.join(run_dir, "config.json"))
    splits = load_config_benchmark(config)
    hypermodel = MTLHyperModel(
        config, splits.train, splits.val, weights_path=weights_path, **(hypermodel_kwargs or {})
    )
    search = make_tuner(
        hypermodel,
        tuner,
        directory=run_dir,
        project_name="tuner",
        max_trials=max_trials,
        executions_per_trial=executions_per_trial,
        overwrite=overwrite and role != "worker",
        seed=config.seed,
        distribution_strategy=strategy,
    )
    # Keras Tuner gives each trial its own sub-folder and adds the HParams callback.
    log_dir = os.path.join(run_dir, "logs", "tuning")
    callbacks = (
        [keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0)]
        if tensorboard and tensorboard_available(verbose)
        else []
    )
    search.search(callbacks=callbacks, verbose=1 if verbose else 0)
    if role == "worker":
        return {"role": "worker", "tuner_id": os.environ.get("KERASTUNER_TUNER_ID")}
    summary = summarize(search, tuner)
    if summary["best_score"] is None and summary["trials"]:
        raise ValueError(
            f"Every trial of the search failed ({len(summary['trials'])} of them, none scored "
            f"{OBJECTIVE}): Keras Tuner printed each trial's error above. Fix it and run the same "
            f"command with --overwrite; {os.path.join(run_dir, 'tuner')} holds the failed trials."
        )
    with open(os.path.join(run_dir, "tuning.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    if verbose:
        print(f"Best {OBJECTIVE} {summary['best_score']}: {summary['best_hyperparameters']}")
        print(f"Summary: {os.path.join(run_dir, 'tuning.json')}")
    return summary
