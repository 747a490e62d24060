"""`run_workflow`: the four stages in one run folder, and the tables it prints."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from mtl_keras._tensorflow import tensorflow_installed
from mtl_keras.callbacks import format_duration
from mtl_keras.evaluation import EvaluationResult, paired_difference
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.plots import plot_run
from mtl_keras_app.workflow.builders import load_config_benchmark
from mtl_keras_app.workflow.run_folder import (
    PRETRAINED_WEIGHTS,
    check_strategy,
    checkpoint_path,
    open_run,
    read_metrics,
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

if TYPE_CHECKING:
    import tensorflow as tf

#: The paired columns of a run's table: ``{column label: row it subtracts}``; ``None``: the better
#: SimpleShot row of each shot setting (`best_centroid_row`).
PAIRED_AGAINST = {"pretrained": BASELINE_ROW, "SimpleShot": None}


def format_table(
    rows: dict[str, dict[int, EvaluationResult]],
    ways: int,
    baseline: str | dict[str, str] | None = None,
) -> str:
    """A Markdown table: one row per method; per shot setting the accuracy (mean ± 95% CI) and
    the paired difference against each baseline row.

    A paired column is the mean ± 95% CI of the per-episode accuracy differences (every row is
    evaluated on the same episodes): a CI that excludes 0 is a difference the episodes support,
    however much the two rows' own CIs overlap.

    Args:
        rows: ``{method: {shots: EvaluationResult}}``, in display order.
        ways: ``N`` (for the header).
        baseline: ``{column label: row name}`` of the rows to pair against (default
            `PAIRED_AGAINST`: the pretrained row, and the better SimpleShot row of each shot
            setting, `best_centroid_row`, for a ``None`` row); one row name (labelled
            "pretrained"); ``{}`` for none. Baselines absent from ``rows`` get no column.
    """
    if baseline is None:
        baseline = PAIRED_AGAINST
    elif isinstance(baseline, str):
        baseline = {"pretrained": baseline}
    has_centroid = any(name in rows for name in CENTROID_ROWS.values())
    baselines = {
        label: row for label, row in baseline.items() if (row in rows if row is not None else has_centroid)
    }
    shots = sorted({s for r in rows.values() for s in r})
    header = ["method"]
    for s in shots:
        header.append(f"{ways}-way {s}-shot")
        header += [f"{s}-shot − {label} (paired)" for label in baselines]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    for name, by_shot in rows.items():
        cells = []
        for s in shots:
            result = by_shot.get(s)
            cells.append(f"{100 * result.mean:.2f} ± {100 * result.ci95:.2f}" if result else "–")
            for row in baselines.values():
                row = row if row is not None else best_centroid_row(rows, s)
                if name in CENTROID_ROWS.values() and row in CENTROID_ROWS.values():
                    cells.append("–")  # one SimpleShot row against the other says nothing
                    continue
                base = rows[row].get(s)
                if name == row or result is None or base is None:
                    cells.append("–")
                else:
                    mean, ci = paired_difference(result, base)
                    cells.append(f"{100 * mean:+.2f} ± {100 * ci:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_verdict(rows: dict[str, dict[int, EvaluationResult]], ways: int) -> list[str]:
    """One sentence per shot setting: did meta-training beat the simple baselines on these episodes?

    MTL (`MTL_ROW`) is paired against the pretrained row and the better SimpleShot row
    (`best_centroid_row`). It "beats" a baseline when the paired difference's 95% CI lies above
    0, is "below" it when the CI lies below 0, and is "not distinguishable" otherwise; the
    sentence names the baseline that decides and what to do on the user's data.

    Args:
        rows: ``{method: {shots: EvaluationResult}}`` as for `format_table`.
        ways: ``N``.

    Returns:
        One line per shot setting MTL was evaluated at (none without an MTL row).
    """
    lines = []
    for k in sorted(rows.get(MTL_ROW, {})):
        mtl = rows[MTL_ROW][k]
        against = [name for name in (BASELINE_ROW, best_centroid_row(rows, k)) if k in rows.get(name, {})]
        if not against:
            continue
        pairs = {name: paired_difference(mtl, rows[name][k]) for name in against}
        text = {name: f"{100 * m:+.2f} ± {100 * c:.2f} points" for name, (m, c) in pairs.items()}
        below = [name for name, (m, c) in pairs.items() if m + c < 0]
        unclear = [name for name, (m, c) in pairs.items() if m - c <= 0 <= m + c]
        setting = f"{ways}-way {k}-shot"
        if below:
            name = min(below, key=lambda n: pairs[n][0])
            lines.append(
                f"{setting}: MTL is below {name} ({text[name]}, CI below 0): on this data meta-training "
                "did not pay; use the pretrained backbone with that baseline."
            )
        elif unclear:
            name = min(unclear, key=lambda n: pairs[n][0])
            lines.append(
                f"{setting}: MTL is not distinguishable from {name} ({text[name]}, CI includes 0): on this "
                "data meta-training bought nothing the episodes can show; the simpler baseline costs nothing "
                "(more test episodes, --set test_episodes=..., narrow the CI)."
            )
        else:
            detail = "; ".join(f"{name}: {text[name]}" for name in against)
            lines.append(f"{setting}: MTL beats both baselines, CIs above 0 ({detail}).")
    return lines


def format_stage_times(stage_seconds: dict[str, float | None], total: float) -> str:
    """The time-per-stage table `run_workflow` prints (None: done in an earlier run)."""
    width = max(map(len, [*stage_seconds, "total"]))
    lines = ["Time per stage:"]
    for stage, seconds in stage_seconds.items():
        lines.append(
            f"  {stage:<{width}}  {'done in an earlier run' if seconds is None else format_duration(seconds)}"
        )
    lines.append(f"  {'total':<{width}}  {format_duration(total)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- workflow stages
# The `mtl-keras` subcommands, one function each: every stage reads and writes the


@writes_run_folder
def run_workflow(
    config: ExperimentConfig,
    run_dir: str,
    verbose: bool = True,
    tensorboard: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    restart: bool = False,
) -> dict:
    """The whole job in one run folder (``mtl-keras run``; ``mtl-keras demo`` without TensorBoard):
    pretrain, evaluate the pretrained baseline, meta-train with MTL, evaluate, export — each stage
    the same function its own subcommand calls (`mtl_keras_app.workflow.stages`).

    Writes into ``run_dir``: ``config.json``, ``pretrained_backbone.weights.h5``,
    ``mtl_{K}shot.weights.h5``, ``metrics.json`` (results of both rows with their paired
    difference, histories, per-class accuracy, seconds per stage), ``results.md``,
    ``episodes/sample_{K}shot.npz``, ``export/{N}way{K}shot`` SavedModels, every plot in
    ``plots/`` and, with ``tensorboard``, logs in ``logs/``.

    Resumable: run it again with the same ``run_dir`` after a crash and it skips the completed
    stages and resumes the interrupted one after its last completed epoch (see `RunProgress`);
    ``restart=True`` starts over.

    Args:
        config: the experiment settings.
        run_dir: the run folder.
        verbose: progress output.
        tensorboard: TensorBoard logs (``logs/pretrain``, ``logs/mtl_{K}shot``,
            ``logs/test_{K}shot``).
        strategy: a `tf.distribute` strategy for pretraining and meta-training (evaluation
            and export run on one device). Under a multi-worker strategy non-chief workers
            write to `output_dir`.
        restart: ignore (delete) the progress of an earlier run in ``run_dir``.

    Returns:
        The final ``metrics.json`` content; ``stage_seconds`` holds the seconds this call spent
        on each stage (loading, pretraining, each baseline evaluation, meta-training, test
        evaluation and export; None: done in an earlier run), printed at the end as a table
        when ``verbose``.
    """
    start = time.time()
    check_strategy(config, strategy)
    out, progress = open_run(config, run_dir, strategy, restart)
    if not progress.state["stages"] and os.path.exists(os.path.join(out, "metrics.json")):
        os.remove(os.path.join(out, "metrics.json"))  # a new run: no numbers of an earlier one
    say = print if verbose else (lambda *a, **k: None)
    # Seconds this process spent on each stage; None: done in an earlier run.
    stage_seconds: dict[str, float | None] = {}

    @contextlib.contextmanager
    def timed(stage: str, done_before: bool = False):
        began = time.perf_counter()
        yield
        stage_seconds[stage] = None if done_before else round(time.perf_counter() - began, 1)

    # Evaluation and export run on one device and write this process' folder (`output_dir`).
    common = {"verbose": verbose, "tensorboard": tensorboard, "plots": False}
    say(f"[1/4] Loading benchmark '{config.benchmark}'")
    with timed("loading the benchmark"):
        splits = load_config_benchmark(config)
    say("[2/4] Pretraining")
    with timed("pretraining", progress.finished("pretrain", os.path.join(out, PRETRAINED_WEIGHTS))):
        pretrain_stage(config, run_dir, strategy=strategy, splits=splits, **common)
    rows: dict[str, dict[int, EvaluationResult]] = {
        BASELINE_ROW: {},
        **{name: {} for name in CENTROID_ROWS.values()},
        MTL_ROW: {},
    }
    for k in config.shots:
        one = {"shots": (k,), "splits": splits, **common}
        say(f"[3/4] {config.ways}-way {k}-shot: baseline evaluations, then meta-training")
        with timed(f"baseline evaluation {k}-shot"):
            rows[BASELINE_ROW][k] = evaluate_stage(config, out, pretrained=True, **one)[k]
            written = read_metrics(out)["results"]
            for name in CENTROID_ROWS.values():
                rows[name][k] = EvaluationResult.from_dict(written[name][f"{k}-shot"])
        with timed(f"meta-training {k}-shot", progress.finished(f"mtl_{k}shot", checkpoint_path(out, k))):
            meta_train_stage(config, run_dir, strategy=strategy, **one)
        say(f"[4/4] {config.ways}-way {k}-shot: test evaluation ({config.test_episodes} episodes)")
        with timed(f"test evaluation {k}-shot"):
            rows[MTL_ROW][k] = evaluate_stage(config, out, **one)[k]
        if tensorflow_installed():
            with timed(f"export {k}-shot"):
                export_stage(config, out, verbose=verbose, shots=(k,))
        elif k == config.shots[0]:
            say(
                "Export skipped: an adapt-and-classify SavedModel is TensorFlow's format, and TensorFlow is "
                f"not installed. The meta-trained weights are in {out}; `mtl-keras export --run-dir {out}` "
                "writes the SavedModels on a machine with TensorFlow (pip install tensorflow)."
            )

    table = format_table(rows, config.ways)
    verdict = format_verdict(rows, config.ways)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n\n" + "\n".join(f"- {line}" for line in verdict) + "\n")
    metrics = update_metrics(
        out,
        {
            "paired_difference": {
                f"{k}-shot": dict(zip(("mean", "ci95"), paired_difference(r, rows[BASELINE_ROW][k])))
                for k, r in rows[MTL_ROW].items()
            },
            "paired_difference_simpleshot": {
                f"{k}-shot": {
                    "against": best_centroid_row(rows, k),
                    **dict(zip(("mean", "ci95"), paired_difference(r, rows[best_centroid_row(rows, k)][k]))),
                }
                for k, r in rows[MTL_ROW].items()
            },
            "verdict": verdict,
            "seconds": round(time.time() - start, 1),
            "stage_seconds": stage_seconds,
        },
    )
    written = plot_run(out)
    say("")
    say(
        f"Test accuracy (%) on {splits.test.num_classes} unseen {config.benchmark} classes, "
        f"{config.test_episodes} episodes (the same for every row), mean ± 95% CI; the paired columns: "
        "mean ± 95% CI of the per-episode difference against the pretrained row (inner loop) and "
        "against nearest centroid on the same pretrained features (the better of SimpleShot L2N and "
        "CL2N on these episodes):"
    )
    say(table)
    say("\n" + "\n".join(verdict))
    say("\n" + format_stage_times(stage_seconds, metrics["seconds"]))
    say(f"\nPlots: {', '.join(os.path.basename(p) for p in written)} in {os.path.join(out, 'plots')}")
    say(f"Run folder: {out} ({metrics['seconds']:.0f} s)")
    return read_metrics(out)
