"""`mtl-keras` command line. Subcommands call the application's functions; no logic
lives here.

Examples::

    mtl-keras demo                                   # glyph_scenes, cpu-glyph_scenes preset
    mtl-keras run --config cpu-glyphs --set meta_epochs=2 --run-dir runs/a
    mtl-keras pretrain --config paper-mini_imagenet --root data/mini --run-dir runs/mini
    mtl-keras meta-train --run-dir runs/mini         # reads runs/mini/config.json
    mtl-keras evaluate --run-dir runs/mini --episodes 600
    mtl-keras export --run-dir runs/mini
    mtl-keras tune --config cpu-glyphs --tuner bayesian --max-trials 20 --run-dir runs/tune
    mtl-keras plot runs/mini
    mtl-keras reproduce --out runs/reproduce-glyphs  # the paper's ablation (scratch/FT/SS/SS+HT)
    mtl-keras benchmarks
    mtl-keras prepare tiered_imagenet data/tiered-pickles data/tiered --allow-pickle
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from mtl_keras_app.quiet import quiet_cli_startup
from mtl_keras_app.run_lock import RunFolderLocked


def _demo(args) -> int:
    from mtl_keras_app.config import get_config
    from mtl_keras_app.workflow import run_workflow

    overrides = {}
    if args.test_episodes is not None:
        overrides["test_episodes"] = args.test_episodes
    config = get_config(args.config, **overrides)
    run_dir = args.run_dir or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    run_workflow(config, run_dir, tensorboard=False)
    return 0


def _prepare(args) -> int:
    from mtl_keras.data.sources import tiered_imagenet

    written = tiered_imagenet.convert_pickles(
        args.src, args.out, allow_pickle=args.allow_pickle, splits=args.splits or ("train", "val", "test")
    )
    for split, count in written.items():
        status = f"{count} images written" if count else "folder exists, skipped"
        print(f"{split}: {os.path.join(args.out, split)} ({status})")
    print(f"Use it with: --benchmark {args.benchmark} --root {args.out}")
    return 0


def _common_flags(args) -> dict:
    """The flags every config-taking subcommand shares, as `resolve_config` / `resolve_settings` keywords."""
    return {
        "benchmark": args.benchmark,
        "root": args.root,
        "seed": args.seed,
        "shots": tuple(args.shots) if args.shots else None,
        "allow_pickle": True if getattr(args, "allow_pickle", False) else None,
    }


def _config_and_dir(args):
    """The resolved config and the run folder of a stage subcommand."""
    from mtl_keras_app.config import resolve_config

    run_dir = args.run_dir or os.path.join("runs", time.strftime(f"{args.command}-%Y%m%d-%H%M%S"))
    config = resolve_config(
        args.config,
        run_dir=run_dir,
        assignments=args.set or (),
        **_common_flags(args),
    )
    return config, run_dir


# `mtl-keras` stage commands: command → (function of mtl_keras_app.workflow, the keywords it takes).
_STAGES = {
    "run": ("run_workflow", ("tensorboard", "strategy", "restart")),
    "pretrain": ("pretrain_stage", ("tensorboard", "strategy", "restart")),
    "meta-train": ("meta_train_stage", ("weights_path", "tensorboard", "strategy", "restart")),
    "evaluate": ("evaluate_stage", ("weights_path", "episodes", "tensorboard")),
    "export": ("export_stage", ("output_dir",)),
}


def _stage(args) -> int:
    from mtl_keras_app import workflow

    strategy = _strategy(args)  # before any other TensorFlow work
    config, run_dir = _config_and_dir(args)
    function, keywords = _STAGES[args.command]
    values = {
        "tensorboard": not getattr(args, "no_tensorboard", False),
        "strategy": strategy,
        "restart": getattr(args, "restart", False),
        "weights_path": getattr(args, "weights", None),
        "episodes": getattr(args, "episodes", None),
        "output_dir": getattr(args, "output", None),
    }
    getattr(workflow, function)(config, run_dir, verbose=not args.quiet, **{k: values[k] for k in keywords})
    return 0


def _strategy(args):
    """The `tf.distribute` strategy of ``--strategy`` / ``--devices`` / ``--logical-cpus`` (None: default)."""
    if not hasattr(args, "strategy"):
        return None
    from mtl_keras_app.distribute import configure_logical_cpus, make_strategy

    if args.logical_cpus:
        configure_logical_cpus(args.logical_cpus)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    strategy = make_strategy(args.strategy, devices)
    if strategy is not None and not args.quiet:
        devices = ", ".join(strategy.extended.worker_devices)
        name = {"mirrored": "MirroredStrategy", "multi-worker": "MultiWorkerMirroredStrategy"}[args.strategy]
        print(f"{name}: {strategy.num_replicas_in_sync} replicas ({devices} on this worker)")
    return strategy


def _tune(args) -> int:
    strategy = _strategy(args)  # before any other TensorFlow work
    try:
        import keras_tuner  # noqa: F401
    except ImportError as err:
        raise ValueError(
            f"`mtl-keras tune` needs Keras Tuner ({err}): pip install 'mtl_keras[app]' "
            "(or pip install 'keras-tuner[bayesian]')."
        ) from err
    from mtl_keras_app.tuning import run_tuning

    config, run_dir = _config_and_dir(args)
    run_tuning(
        config,
        run_dir,
        tuner=args.tuner,
        max_trials=args.max_trials,
        weights_path=args.weights,
        executions_per_trial=args.executions,
        overwrite=args.overwrite,
        verbose=not args.quiet,
        tensorboard=not args.no_tensorboard,
        strategy=strategy,
    )
    return 0


def _plot(args) -> int:
    from mtl_keras_app.plots import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0


def _reproduce(args, prog: str = "mtl-keras reproduce") -> int:
    """`reproduce` (or, with ``--seeds``, `reproduce_seeds`) as the command line asks.

    Settings (`resolve_settings`, later wins): ``--config`` (default: `default_config`),
    ``--quick``, the flags (``--benchmark``, ``--root``, ``--allow-pickle``, ``--seed``,
    ``--shots``), ``--rows``, then ``--set``. The command is recorded in ``RESULTS.md``.
    """
    from mtl_keras_app.ablation import reproduce, reproduce_seeds, resolve_settings

    settings = resolve_settings(
        args.config,
        quick=args.quick,
        rows=getattr(args, "rows", None),
        assignments=args.set or (),
        **_common_flags(args),
    )
    out = args.out or os.path.join(
        "runs", f"reproduce-{settings.config.benchmark}{'-quick' if args.quick else ''}"
    )
    command = _reproduce_command(args, prog)
    if getattr(args, "seeds", None):
        if args.weights:
            raise ValueError(
                "--weights with --seeds: each seed pretrains its own backbone; drop --weights, or run one "
                "seed with --seed S --weights FILE."
            )
        reproduce_seeds(settings, out, args.seeds, verbose=not args.quiet, command=command)
    else:
        reproduce(settings, out, weights=args.weights, verbose=not args.quiet, command=command)
    return 0


def _reproduce_command(args, prog: str = "mtl-keras reproduce") -> str:
    """The canonical command line of parsed ``reproduce`` arguments (what ``RESULTS.md`` records)."""
    parts = [prog]
    if args.quick:
        parts.append("--quick")
    for flag in ("config", "benchmark", "root", "seed", "weights", "out"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag}", str(value)]
    if args.shots:
        parts += ["--shots", *map(str, args.shots)]
    if getattr(args, "seeds", None):
        parts += ["--seeds", *map(str, args.seeds)]
    if getattr(args, "rows", None):
        parts += ["--rows", *args.rows]
    if getattr(args, "allow_pickle", False):
        parts.append("--allow-pickle")
    for item in args.set or ():
        parts += ["--set", item]
    if args.quiet:
        parts.append("--quiet")
    return " ".join(shlex.quote(p) if i else p for i, p in enumerate(parts))


def _benchmarks(args) -> int:
    from mtl_keras.data.registry import list_benchmarks

    benchmarks = list_benchmarks()
    width = max(map(len, benchmarks))
    for name, description in benchmarks.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_config_options(parser: argparse.ArgumentParser, run_dir_required: bool = False) -> None:
    group = parser.add_argument_group("configuration (later options win: --config, then flags, then --set)")
    group.add_argument(
        "--config",
        default=None,
        metavar="NAME|FILE.json",
        help="preset name (cpu, cpu-glyph_scenes, cpu-glyphs, paper-mini_imagenet, paper-fc100-1shot, ...; a wrong name lists them "
        'all) or JSON file of config fields, optionally with "preset": NAME to start from '
        "(default: RUN_DIR/config.json if present, else cpu)",
    )
    group.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set widths=4,4,4,4 --set meta_epochs=2 (repeatable)",
    )
    group.add_argument("--benchmark", default=None, help="benchmark name (see `mtl-keras benchmarks`)")
    group.add_argument("--root", default=None, help="the benchmark's data folder")
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read benchmark files that are Python pickles (fc100, cifar_fs, miniImageNet pickles), which can run code: "
        "only for files you trust (= --set allow_pickle=true)",
    )
    group.add_argument("--seed", type=int, default=None, help="seed of every sampler and initialiser")
    group.add_argument(
        "--shots",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="K",
        help="shot settings, one model each (default: the config's)",
    )
    parser.add_argument(
        "--run-dir",
        required=run_dir_required,
        default=None,
        help="the run folder" + ("" if run_dir_required else " (default: runs/<command>-<time>)"),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _add_stage_options(
    parser: argparse.ArgumentParser, training: bool = False, tensorboard: bool = True
) -> None:
    """``--no-tensorboard``, the resume and distribution options of training stages, and `_stage`."""
    if tensorboard:
        parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    if training:
        _add_training_options(parser)
    parser.set_defaults(func=_stage)


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("resume and distribution")
    group.add_argument(
        "--restart",
        action="store_true",
        help="start over instead of resuming the interrupted or finished training in RUN_DIR "
        "(a rerun with the same --run-dir resumes by default: completed stages are skipped, an "
        "interrupted one continues after its last completed epoch)",
    )
    _add_strategy_options(group, ("none", "mirrored", "multi-worker"))


def _add_strategy_options(group, choices: tuple[str, ...]) -> None:
    group.add_argument(
        "--strategy",
        choices=choices,
        default="none",
        help="tf.distribute strategy for training: mirrored = this machine's GPUs (or its logical CPUs)"
        + (", multi-worker = one process per host, cluster in TF_CONFIG" if "multi-worker" in choices else "")
        + "; the meta-batch is split across replicas (see docs/distributed.md; default: none)",
    )
    group.add_argument(
        "--devices",
        default=None,
        metavar="DEV,DEV",
        help="devices of --strategy mirrored, e.g. /gpu:0,/gpu:1 (default: every GPU, else every logical CPU)",
    )
    group.add_argument(
        "--logical-cpus",
        type=_positive_int,
        default=None,
        metavar="N",
        help="split the CPU into N logical devices (to try --strategy mirrored without GPUs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtl-keras",
        description="Meta-transfer learning for Keras 3.",
        epilog="`mtl-keras COMMAND --help` describes each command. A run folder holds config.json, "
        "checkpoints (*.weights.h5), metrics.json, logs/ (TensorBoard), plots/, episodes/ and export/.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="pretrain, meta-train and evaluate on the embedded glyph_scenes benchmark",
        description="Pretrain → MTL → evaluate 5-way 1/5-shot on glyph_scenes; writes a run folder.",
    )
    demo.add_argument(
        "--config", default="cpu-glyph_scenes", help="preset name or JSON file (default: cpu-glyph_scenes)"
    )
    demo.add_argument("--run-dir", default=None, help="output folder (default: runs/demo-<time>)")
    demo.add_argument("--test-episodes", type=int, default=None, help="override the number of test episodes")
    demo.set_defaults(func=_demo)

    epilog = (
        "Example: mtl-keras {cmd} --config cpu-glyphs --set widths=8,8,8,8 --run-dir runs/x. "
        "Bad keys or values are reported by name."
    )
    run = sub.add_parser(
        "run",
        help="pretrain → meta-train → evaluate → export → plots, in one run folder",
        description="The whole experiment (as `demo`, for any config) with TensorBoard logs, per-class "
        "accuracy, failure-class counts, a sample episode and every plot.",
        epilog=epilog.format(cmd="run"),
    )
    _add_config_options(run)
    _add_stage_options(run, training=True)

    pre = sub.add_parser(
        "pretrain",
        help="pretrain the backbone on the base classes",
        description="Writes RUN_DIR/pretrained_backbone.weights.h5, config.json, metrics.json, "
        "logs/pretrain and plots.",
        epilog=epilog.format(cmd="pretrain"),
    )
    _add_config_options(pre)
    _add_stage_options(pre, training=True)

    meta = sub.add_parser(
        "meta-train",
        help="meta-train MTL models from pretrained weights",
        description="One model per shot setting; writes RUN_DIR/mtl_{K}shot.weights.h5 (best validation "
        "epoch), histories in metrics.json, logs/mtl_{K}shot and plots.",
        epilog=epilog.format(cmd="meta-train"),
    )
    _add_config_options(meta, run_dir_required=True)
    meta.add_argument(
        "--weights",
        default=None,
        help="pretrained backbone weights (default: RUN_DIR/pretrained_backbone.weights.h5)",
    )
    _add_stage_options(meta, training=True)

    ev = sub.add_parser(
        "evaluate",
        help="test-episode accuracy with 95%% CI, per class",
        description="Evaluates RUN_DIR/mtl_{K}shot.weights.h5 on test episodes; writes results, per-class "
        "accuracy, failure-class counts and a sample episode into metrics.json / episodes/, "
        "the episode into TensorBoard, and the plots.",
        epilog=epilog.format(cmd="evaluate"),
    )
    _add_config_options(ev, run_dir_required=True)
    ev.add_argument("--weights", default=None, help="MTL weights (default: RUN_DIR/mtl_{K}shot.weights.h5)")
    ev.add_argument(
        "--episodes",
        type=_positive_int,
        default=None,
        help="test episodes (default: the config's test_episodes)",
    )
    _add_stage_options(ev)

    ex = sub.add_parser(
        "export",
        help="write adapt_and_classify SavedModels",
        description="Exports each RUN_DIR/mtl_{K}shot.weights.h5 as a TF SavedModel with an "
        "adapt_and_classify signature, loadable without mtl_keras.",
        epilog=epilog.format(cmd="export"),
    )
    _add_config_options(ex, run_dir_required=True)
    ex.add_argument("--output", default=None, help="folder for the SavedModels (default: RUN_DIR/export)")
    _add_stage_options(ex, tensorboard=False)

    tune = sub.add_parser(
        "tune",
        help="Keras Tuner search over the learning rates and inner steps",
        description="Searches inner-loop lr, Φ lr, head lr (log scale) and inner steps, scored by mean "
        "validation-episode accuracy, for the first shot setting of the config. Writes "
        "RUN_DIR/tuner (Keras Tuner project), logs/tuning (TensorBoard, HParams) and "
        "tuning.json. Distributed: start one process with KERASTUNER_TUNER_ID=chief and "
        "workers with KERASTUNER_TUNER_ID=tuner0, tuner1, ..., all with "
        "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set and the same --run-dir.",
        epilog=epilog.format(cmd="tune"),
    )
    _add_config_options(tune)
    tune.add_argument(
        "--tuner",
        choices=("random", "bayesian", "hyperband"),
        default="random",
        help="search algorithm (default: random)",
    )
    tune.add_argument(
        "--max-trials",
        type=_positive_int,
        default=10,
        help="trials for random and bayesian (hyperband sizes its brackets from meta_epochs)",
    )
    tune.add_argument(
        "--weights",
        default=None,
        help="pretrained backbone weights (default: a fresh backbone of the config)",
    )
    tune.add_argument("--executions", type=_positive_int, default=1, help="executions per trial")
    tune.add_argument(
        "--overwrite", action="store_true", help="start afresh instead of resuming RUN_DIR/tuner"
    )
    tune.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    # Each trial's model under a tf.distribute strategy (Keras Tuner's distribution_strategy). Not
    # multi-worker: Keras Tuner's own chief/worker mode (above) spreads trials over processes.
    _add_strategy_options(tune.add_argument_group("distribution"), ("none", "mirrored"))
    tune.set_defaults(func=_tune)

    plot = sub.add_parser(
        "plot",
        help="write a run folder's figures as PNGs",
        description="Learning curves, accuracy vs inner steps, per-class accuracy, failure-class "
        "frequency and episode grids, from RUN_DIR/metrics.json and RUN_DIR/episodes.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run folder")
    plot.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots)")
    plot.set_defaults(func=_plot)

    rep = sub.add_parser(
        "reproduce",
        help="the paper's ablation: scratch, pretrained, FT, SS, SS+HT, with RESULTS.md and plots",
        description="Five rows (Conv-4 from scratch; pretrained + inner loop; FT; SS; SS + HT), N-way 1/5-shot "
        "and a harder 20-way setting on the same test episodes, mean ± 95% CI and paired differences; "
        "settings chosen on the validation split. Writes OUT/RESULTS.md, results.json and plots. "
        "Full glyph run ≈ 1 hour on 2 CPU cores; --quick ≤ 5 minutes.",
        epilog="Example: mtl-keras reproduce --quick --out runs/reproduce-quick",
    )
    rep.add_argument("--out", default=None, help="output folder (default: runs/reproduce-<benchmark>)")
    rep.add_argument(
        "--quick",
        action="store_true",
        help="the short version: 16px images, a small backbone, short runs, 200 test episodes",
    )
    rep.add_argument(
        "--config",
        default=None,
        metavar="NAME|FILE.json",
        help="preset or JSON file (default: cpu-glyphs with val_episodes=600)",
    )
    rep.add_argument("--benchmark", default=None, help="benchmark name (see `mtl-keras benchmarks`)")
    rep.add_argument("--root", default=None, help="the benchmark's data folder")
    rep.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read pickle files (fc100, cifar_fs, miniImageNet pickles): only ones you trust",
    )
    rep.add_argument("--seed", type=int, default=None, help="seed of every sampler and initialiser")
    rep.add_argument(
        "--shots",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="K",
        help="shot settings (default: the config's)",
    )
    rep.add_argument(
        "--weights", default=None, help="pretrained backbone weights to use instead of pretraining"
    )
    rep.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="run once per training seed (pretraining and meta-training reseeded) into OUT/seed-S, all on the "
        "same test episodes, and write OUT/SEEDS.md (per seed, pooled, paired differences); finished seeds "
        "are read back",
    )
    rep.add_argument(
        "--rows",
        nargs="+",
        default=None,
        choices=("scratch", "ft", "ss", "ss_ht"),
        help="the meta-trained rows to run (default: all four; the pretrained row always runs)",
    )
    rep.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (e.g. widths=8,8,8,8) or a reproduction setting (scratch_filters, "
        "scratch_epochs, scratch_steps_per_epoch, scratch_lr, ft_lrs, ft_probe_steps, hard_ways, "
        "eval_chunk); repeatable, applied last",
    )
    rep.add_argument("--quiet", action="store_true", help="no progress output")
    rep.set_defaults(func=_reproduce)

    prep = sub.add_parser(
        "prepare",
        help="convert a dataset as distributed into the folders its loader reads",
        description="tiered_imagenet: Ren et al.'s SRC/{train,val,test}_images_png.pkl (or _images.npz) "
        "and _labels.pkl become OUT/{train,val,test}/<class>/*.png. A split is written into "
        "OUT/.partial-<split> and renamed when complete; splits already in OUT are skipped, so "
        "rerunning after an interruption resumes.",
        epilog="Example: mtl-keras prepare tiered_imagenet data/tiered-imagenet data/tiered --allow-pickle",
    )
    prep.add_argument("benchmark", choices=("tiered_imagenet",), help="the dataset")
    prep.add_argument("src", metavar="SRC", help="folder holding the files as distributed")
    prep.add_argument("out", metavar="OUT", help="folder to write (pass it as --root afterwards)")
    prep.add_argument(
        "--allow-pickle",
        action="store_true",
        help="the files are Python pickles, which can run code when read: set only for a trusted "
        "source (only NumPy array constructors are accepted in them even then)",
    )
    prep.add_argument(
        "--splits", nargs="+", choices=("train", "val", "test"), default=None, help="default: all three"
    )
    prep.set_defaults(func=_prepare)

    bench = sub.add_parser(
        "benchmarks", help="list the datasets", description="The benchmarks `load_benchmark` knows."
    )
    bench.set_defaults(func=_benchmarks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_cli_startup()  # before the command imports Keras (and TensorFlow)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RunFolderLocked) as err:
        print(f"mtl-keras {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:  # an optional dependency missing here (e.g. TensorFlow on a JAX machine)
        print(f"mtl-keras {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that is not what it should be, a full disk, no permission
        print(f"mtl-keras {args.command}: error: {_os_error_message(err)}", file=sys.stderr)
        return 2


def _os_error_message(err: OSError) -> str:
    """One line for an `OSError`: what happened, to which path, and what to do."""
    import errno

    if err.errno is None:  # raised by mtl_keras with its own message (path and fix in it)
        return str(err)
    path = err.filename or "a file"
    fixes = {
        errno.ENOTDIR: f"'{path}' is not a folder (a file, or a path through a file): give the folder that holds it",
        errno.EISDIR: f"'{path}' is a folder where a file is expected: give the file's path",
        errno.EACCES: f"no permission for '{path}': give a path you can read (and, for a run folder, write)",
        errno.EROFS: f"'{path}' is on a read-only file system: write the run folder elsewhere (--run-dir)",
        errno.ENOSPC: f"no space left on the device of '{path}': free space (or use --run-dir elsewhere), then "
        "run the same command again: it resumes after the last completed epoch",
        errno.ELOOP: f"'{path}' is a symbolic link loop: remove or fix the link",
    }
    return fixes.get(err.errno, f"{err.strerror or err} ({path})") + "."


if __name__ == "__main__":
    sys.exit(main())
