"""The run folder: which stages are done (`RunProgress`), where each process writes
(`output_dir`) under the folder's lock (`writes_run_folder`), ``metrics.json``, and where the
checkpoints live. Every stage of the workflow reads and writes one such folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import numpy as np

from mtl_keras.atomic import write_text_atomic
from mtl_keras.callbacks import ResumableCheckpoint
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.distribute import worker_index
from mtl_keras_app.run_lock import locks_run_folder

if TYPE_CHECKING:
    import tensorflow as tf

PRETRAINED_WEIGHTS = "pretrained_backbone.weights.h5"


class RunProgress:
    """Which training stages of a run folder are complete, so that a rerun resumes.

    Kept in ``RUN_DIR/backup/progress.json`` (written atomically) with the config it
    was made with; each unfinished stage backs up its state in
    ``RUN_DIR/backup/<stage>`` (`ResumableCheckpoint`). A rerun with the same run
    folder skips the completed stages and resumes the interrupted one after its last
    completed epoch. Settings that do not change training (``shots``,
    ``test_episodes``, ``test_queries``, ``eval_inner_steps``, ``root``) may change
    between runs; any other difference is an error naming the keys.

    Args:
        run_dir: the run folder (outputs of this process).
        config: this run's settings.
        restart: forget earlier progress (delete ``RUN_DIR/backup``).
    """

    FILE = "progress.json"
    FREE_KEYS = (
        "shots",
        "test_episodes",
        "test_queries",
        "eval_inner_steps",
        "root",
        "allow_pickle",
        "verify",
    )
    #: The settings a pretraining depends on: when only other keys changed, a finished pretraining
    #: is kept and meta-training starts over (its settings are the ones that changed).
    PRETRAIN_KEYS = (
        "benchmark",
        "image_size",
        "drop_small_classes",
        "skip_unreadable",
        "backbone",
        "widths",
        "pretrain_epochs",
        "pretrain_patience",
        "pretrain_batch_size",
        "pretrain_lr",
        "pretrain_optimizer",
        "pretrain_dropout",
        "pretrain_augment",
        "seed",
    )

    def __init__(self, run_dir: str, config: ExperimentConfig, restart: bool = False):
        self.folder = os.path.join(run_dir, "backup")
        if restart and os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
        self.path = os.path.join(self.folder, self.FILE)
        current = json.loads(json.dumps(config.to_dict()))
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    self.state = json.load(f)
                stored = self.state["config"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{self.path} is damaged ({err}): the run folder's progress cannot be read. Run the same "
                    "command with --restart to start the folder over (or another --run-dir)."
                ) from None
            differ = sorted(
                k
                for k in set(stored) | set(current)
                if k not in self.FREE_KEYS and stored.get(k) != current.get(k)
            )
            if differ:
                changes = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in differ)
                if self.done("pretrain") and not set(differ) & set(self.PRETRAIN_KEYS):
                    self._keep_pretraining_only(run_dir, current, changes)
                else:
                    raise ValueError(
                        f"'{run_dir}' holds a run made with other settings ({changes}); resuming it would mix "
                        "the two. Use another --run-dir, the same settings, or --restart to start it over."
                    )
        else:
            self.state = {"config": current, "stages": {}}

    def _keep_pretraining_only(self, run_dir: str, current: dict, changes: str) -> None:
        """Settings changed for meta-training only: keep the finished pretraining, forget the rest."""
        for entry in os.listdir(self.folder):
            if entry != "pretrain" and os.path.isdir(os.path.join(self.folder, entry)):
                shutil.rmtree(os.path.join(self.folder, entry))
        self.state = {"config": current, "stages": {"pretrain": self.state["stages"]["pretrain"]}}
        write_text_atomic(self.path, json.dumps(self.state, indent=1))
        print(
            f"'{run_dir}': the settings changed for meta-training only ({changes}): keeping the finished "
            "pretraining; meta-training and evaluation start over.",
            flush=True,
        )

    def done(self, stage: str) -> bool:
        return bool(self.state["stages"].get(stage, {}).get("done"))

    def history(self, stage: str) -> dict:
        return self.state["stages"][stage]["history"]

    def backup_dir(self, stage: str) -> str:
        return os.path.join(self.folder, stage)

    def finished(self, stage: str, output: str) -> bool:
        """``stage`` completed in an earlier run and its ``output`` file is still there: skip it."""
        return self.done(stage) and os.path.exists(output)

    def started(self, stage: str) -> bool:
        return os.path.exists(os.path.join(self.backup_dir(stage), ResumableCheckpoint.STATE_FILE))

    def complete(self, stage: str, history: dict) -> None:
        """Record ``stage`` as done (its backup is no longer needed)."""
        os.makedirs(self.folder, exist_ok=True)
        self.state["stages"][stage] = {
            "done": True,
            "history": json.loads(json.dumps(history, default=_jsonable)),
        }
        write_text_atomic(self.path, json.dumps(self.state, indent=1))
        shutil.rmtree(self.backup_dir(stage), ignore_errors=True)


def check_strategy(config: ExperimentConfig, strategy: tf.distribute.Strategy | None) -> None:
    """Fail fast when ``config.meta_batch_size`` does not split over the strategy's replicas."""
    replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
    if config.meta_batch_size % replicas:
        fit = replicas * -(-config.meta_batch_size // replicas)
        raise ValueError(
            f"Config key 'meta_batch_size' ({config.meta_batch_size}) must be a multiple of the {replicas} "
            f"replicas of the strategy: each replica trains meta_batch_size / {replicas} tasks. "
            f"Use --set meta_batch_size={fit}."
        )


def output_dir(run_dir: str, strategy: tf.distribute.Strategy | None) -> str:
    """Where this process writes: ``run_dir``, or ``run_dir/worker-{i}`` on a non-chief worker.

    Under `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the same
    program; only the chief (worker 0) writes the run folder itself, the others
    write their (identical) copies beside it so that no two processes write one file.
    """
    index = worker_index(strategy)
    return run_dir if index == 0 else os.path.join(run_dir, f"worker-{index}")


#: Decorates every function that writes a run folder: it runs holding the lock of the folder this
#: process writes (`output_dir`: each worker of a multi-worker strategy its own), see `mtl_keras_app.run_lock`.
writes_run_folder = locks_run_folder(folder=lambda args: output_dir(args["run_dir"], args.get("strategy")))


def open_run(config: ExperimentConfig, run_dir: str, strategy, restart: bool) -> tuple[str, RunProgress]:
    """This process' output folder (`output_dir`) with its `RunProgress`; writes ``config.json`` there.

    The progress is read (and checked against ``config``) before ``config.json`` is
    overwritten, so a refused resume leaves the folder as it was.
    """
    run_dir = output_dir(run_dir, strategy)
    os.makedirs(run_dir, exist_ok=True)
    progress = RunProgress(run_dir, config, restart=restart)
    config.to_json(os.path.join(run_dir, "config.json"))
    return run_dir, progress


def checkpoint_path(run_dir: str, shots: int) -> str:
    """Where the meta-trained ``shots``-shot weights of a run live."""
    return os.path.join(run_dir, f"mtl_{shots}shot.weights.h5")


def read_metrics(run_dir: str) -> dict:
    """The run folder's ``metrics.json`` ({} when there is none yet)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def update_metrics(run_dir: str, updates: dict) -> dict:
    """Merge ``updates`` into ``run_dir/metrics.json`` (nested dicts merged key by key)."""

    def merge(into: dict, new: dict) -> dict:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    metrics = merge(read_metrics(run_dir), updates)
    write_text_atomic(os.path.join(run_dir, "metrics.json"), json.dumps(metrics, indent=1, default=_jsonable))
    return metrics


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    return float(value)


def split_summary(splits) -> dict:
    return {s.name: {"classes": s.num_classes, "images": s.num_images} for s in splits}


def run_info(config: ExperimentConfig, splits) -> dict:
    """What later stages need to know without loading the data again."""
    return {
        "benchmark": config.benchmark,
        "splits": split_summary(splits),
        "channels": splits.train.channels,
        "source_commit": source_commit(),
    }


def source_commit() -> str | None:
    """The git commit of the mtl_keras source that runs (its short hash, with ``"+changes"``
    appended when tracked files differ from it), or None outside a git checkout (an installed wheel)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(
            ["git", "-C", here, *args], capture_output=True, text=True, timeout=30, check=True
        )

    try:
        commit = git("rev-parse", "--short", "HEAD").stdout.strip()
        changed = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+changes" if changed else commit
