"""Matplotlib figures: learning curves, accuracy versus inner steps, per-class accuracy,
hard-class frequency, episode grids, and `plot_run` for a whole run folder."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str, title: str | None = None, dpi: int = 110) -> str:
    """Give ``fig`` its ``title``, lay it out, write it to ``path`` (PNG) and close it."""
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_learning_curves(
    histories: dict[str, dict[str, list[float]]], path: str, title: str = "Learning curves"
) -> str:
    """One row of panels per run: loss and accuracy per epoch (train and validation).

    Args:
        histories: ``{run name: keras History.history}`` (keys like ``loss``,
            ``accuracy``, ``val_loss``, ``val_accuracy``).
        path: PNG to write.
        title: figure title.

    Returns:
        ``path``.
    """
    names = list(histories)
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        hist = histories[name]
        for col, metric in enumerate(("loss", "accuracy")):
            ax = axes[row][col]
            for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
                if key in hist and len(hist[key]):
                    values = np.asarray(hist[key], dtype=float)
                    ax.plot(np.arange(1, len(values) + 1), values, style, label=key, markersize=3)
            ax.set_title(f"{name}: {metric}")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return _save(fig, path, title)


def plot_accuracy_vs_inner_steps(
    results: dict[str, object], path: str, title: str = "Query accuracy vs inner steps"
) -> str:
    """Mean query accuracy after 0..T inner steps, one line per `EvaluationResult`.

    A result without an inner loop (one accuracy, e.g. nearest centroid) is drawn as a dashed
    horizontal line: the level the inner loop has to reach.

    Args:
        results: ``{label: EvaluationResult}``.
        path: PNG to write.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, result in results.items():
        acc = 100 * np.asarray(result.per_step_accuracy)
        if len(acc) == 1:
            ax.axhline(acc[0], linestyle="--", linewidth=1, color="0.4", label=f"{label} ({acc[0]:.1f}%)")
            continue
        ax.plot(np.arange(len(acc)), acc, label=f"{label} ({acc[-1]:.1f}%)")
    ax.set_xlabel("inner steps on the support set")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _short(name: str, width: int = 28) -> str:
    """A class name cut to ``width`` characters (glyph names are long)."""
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_per_class_accuracy(
    class_names,
    accuracies,
    path: str,
    counts=None,
    top: int = 15,
    title: str = "Per-class query accuracy (test split)",
) -> str:
    """The hardest and easiest test classes, and the spread over all classes.

    Left: horizontal bars of the ``top`` classes with the lowest and the ``top`` with
    the highest mean query accuracy. Right: histogram of the accuracy of every class.

    Args:
        class_names: ``(C,)`` names of the classes evaluated.
        accuracies: ``(C,)`` mean query accuracy of each class over the episodes it
            appeared in (0..1).
        path: PNG to write.
        counts: optional ``(C,)`` number of episodes each class appeared in (shown in
            the title as the median).
        top: classes shown at each end.
        title: figure title.

    Returns:
        ``path``.
    """
    names = [str(n) for n in class_names]
    acc = 100 * np.asarray(accuracies, dtype=float)
    if len(names) != len(acc) or not len(acc):
        raise ValueError(
            f"plot_per_class_accuracy: need as many names as accuracies (>0), got {len(names)} and {len(acc)}."
        )
    order = np.argsort(acc, kind="stable")
    shown = order if len(order) <= 2 * top else np.concatenate([order[:top], order[-top:]])
    fig, (ax, hist) = plt.subplots(
        1, 2, figsize=(12, max(4.0, 0.26 * len(shown) + 1.2)), gridspec_kw={"width_ratios": [1.6, 1]}
    )
    y = np.arange(len(shown))
    colors = ["#c0392b" if acc[i] < np.median(acc) else "#2e86c1" for i in shown]
    ax.barh(y, acc[shown], color=colors)
    for row, i in enumerate(shown):
        ax.text(acc[i] + 1, row, f"{acc[i]:.0f}%", va="center", fontsize=6)
    if len(shown) < len(order):
        ax.axhline(top - 0.5, color="k", linewidth=0.8, linestyle=":")
    ax.set_yticks(y)
    ax.set_yticklabels([_short(names[i]) for i in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 108)
    ax.set_xlabel("query accuracy (%)")
    ax.set_title(
        f"{min(top, len(order))} hardest (top) and easiest (bottom) classes"
        if len(order) > 2 * top
        else "all classes, hardest first"
    )
    ax.grid(axis="x", alpha=0.3)
    hist.hist(acc, bins=min(20, max(5, len(acc) // 3)), range=(0, 100), color="#7f8c8d")
    hist.axvline(acc.mean(), color="k", linestyle="--", label=f"mean {acc.mean():.1f}%")
    hist.set_xlabel("query accuracy (%)")
    hist.set_ylabel("classes")
    note = f"{len(acc)} classes"
    if counts is not None:
        note += f", in {np.median(np.asarray(counts)):.0f} episodes each (median)"
    hist.set_title(note)
    hist.legend(fontsize=8)
    hist.grid(alpha=0.3)
    return _save(fig, path, title)


def plot_hard_class_frequency(
    counts: dict[str, int],
    path: str,
    top: int = 20,
    title: str = "Hard classes: how often each was the failure class",
) -> str:
    """Bar chart of the classes picked most often as hard (failure) classes.

    Args:
        counts: ``{class name: times}`` e.g. how often each class was the worst
            class of its episode, or was put in the hard-task pool.
        path: PNG to write.
        top: bars shown (most frequent first).
        title: figure title.

    Returns:
        ``path``.
    """
    items = sorted(
        ((str(k), int(v)) for k, v in counts.items() if int(v) > 0), key=lambda kv: (-kv[1], kv[0])
    )
    if not items:
        raise ValueError("plot_hard_class_frequency: no class has a positive count.")
    items = items[:top]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.3 * len(items) + 1.2)))
    y = np.arange(len(items))
    ax.barh(y, [v for _, v in items], color="#c0392b")
    ax.set_yticks(y)
    ax.set_yticklabels([_short(k, 40) for k, _ in items], fontsize=7)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("times")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_episode_grid(
    support_images,
    support_labels,
    query_images,
    query_labels,
    path: str,
    query_predictions=None,
    class_names=None,
    max_queries: int = 5,
    title: str = "One episode",
) -> str:
    """One row per class: its support images, then some queries with true and predicted labels.

    Args:
        support_images: ``(N*K, H, W, C)`` float in [0, 1] (or uint8).
        support_labels: ``(N*K,)`` int in ``0..N-1``.
        query_images: ``(N*Q, H, W, C)``.
        query_labels: ``(N*Q,)`` int.
        path: PNG to write.
        query_predictions: optional ``(N*Q,)`` predicted labels; queries are framed
            green when right and red when wrong.
        class_names: optional ``N`` names of the episode's classes.
        max_queries: queries shown per class.
        title: figure title.

    Returns:
        ``path``.
    """
    support_images = np.asarray(support_images)
    query_images = np.asarray(query_images)
    support_labels = np.asarray(support_labels).astype(int)
    query_labels = np.asarray(query_labels).astype(int)
    preds = None if query_predictions is None else np.asarray(query_predictions).astype(int)
    ways = int(max(support_labels.max(), query_labels.max())) + 1
    names = [f"class {c}" for c in range(ways)] if class_names is None else [str(n) for n in class_names]
    shots = int(np.bincount(support_labels, minlength=ways).max())
    queries = min(max_queries, int(np.bincount(query_labels, minlength=ways).max()))
    cols = shots + queries
    fig, axes = plt.subplots(ways, cols, figsize=(1.25 * cols + 1.6, 1.3 * ways + 0.6), squeeze=False)

    def show(ax, image, caption, color=None):
        image = np.asarray(image, dtype=float)
        if image.max() > 1.0:
            image = image / 255.0
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.clip(image, 0, 1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(caption, fontsize=7, color=color or "black")
        if color:
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)

    for c in range(ways):
        s_idx = np.flatnonzero(support_labels == c)[:shots]
        q_idx = np.flatnonzero(query_labels == c)[:queries]
        for j in range(cols):
            ax = axes[c][j]
            if j < len(s_idx):
                show(ax, support_images[s_idx[j]], f"support {c}")
            elif shots <= j < shots + len(q_idx):
                i = q_idx[j - shots]
                if preds is None:
                    show(ax, query_images[i], f"query {c}")
                else:
                    right = preds[i] == c
                    show(ax, query_images[i], f"true {c} → {preds[i]}", "#27ae60" if right else "#c0392b")
            else:
                ax.axis("off")
        axes[c][0].set_ylabel(_short(names[c], 18), fontsize=7, rotation=0, ha="right", va="center")
    if preds is not None:
        acc = 100 * float(np.mean(preds == query_labels))
        title = f"{title} — query accuracy {acc:.0f}% (all {len(query_labels)} queries)"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi=100)


def plot_accuracy_bars(
    results: dict[str, dict[str, object]], path: str, title: str = "Test accuracy with 95% CI"
) -> str:
    """Mean accuracy with 95% CI error bars: one panel per setting, one bar per method.

    Each panel's y axis is zoomed to its bars (it does not start at 0; the bar labels
    give the values), so small differences stay visible next to their CIs.

    Args:
        results: ``{setting label: {method label: EvaluationResult}}`` (anything with
            ``mean`` and ``ci95`` in 0..1).
        path: PNG to write.
        title: figure title.

    Returns:
        ``path``.
    """
    settings = list(results)
    if not settings:
        raise ValueError("plot_accuracy_bars: no results to plot.")
    fig, axes = plt.subplots(1, len(settings), figsize=(1.2 + 3.4 * len(settings), 4.6), squeeze=False)
    for col, (ax, setting) in enumerate(zip(axes[0], settings)):
        methods = list(results[setting])
        means = np.array([100 * float(results[setting][m].mean) for m in methods])
        cis = np.array([100 * float(results[setting][m].ci95) for m in methods])
        x = np.arange(len(methods))
        ax.bar(x, means, yerr=cis, capsize=4, color=[f"C{i}" for i in range(len(methods))], alpha=0.85)
        low, high = float((means - cis).min()), float((means + cis).max())
        pad = max(0.5, 0.25 * (high - low))
        ax.set_ylim(max(0.0, low - 2 * pad), min(100.0, high + pad) + 0.01)
        for xi, mean in zip(x, means):
            ax.text(xi, mean, f"{mean:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels([_short(m, 18) for m in methods], rotation=30, ha="right", fontsize=8)
        ax.set_title(setting, fontsize=10)
        if col == 0:
            ax.set_ylabel("test accuracy (%), axis zoomed")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, title)


def plot_run(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Write every figure a run folder's files allow, as PNGs; return their paths.

    Reads ``metrics.json`` (``histories`` → learning curves; ``results`` → accuracy
    versus inner steps; ``per_class`` → per-class accuracy; ``hard_classes`` → hard-class
    frequency) and ``episodes/sample_{K}shot.npz`` (→ episode grids), as written by
    `mtl_keras_app.workflow`. Figures whose data the folder lacks are skipped.

    Args:
        run_dir: a run folder.
        out_dir: where to write (default ``run_dir/plots``).

    Returns:
        The PNG paths written.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``metrics.json``.
    """
    import json
    import os
    from types import SimpleNamespace

    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(
            f"{run_dir} holds no metrics.json: not a run folder, or the run has not finished a stage."
        )
    with open(metrics_path) as f:
        metrics = json.load(f)
    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    name = metrics.get("benchmark", "run")
    histories = {k: v for k, v in (metrics.get("histories") or {}).items() if isinstance(v, dict) and v}
    if histories:
        written.append(
            plot_learning_curves(
                histories,
                os.path.join(out_dir, "learning_curves.png"),
                title=f"{name}: pretraining and meta-training",
            )
        )
    curves = {}
    for method, by_shot in (metrics.get("results") or {}).items():
        for shot, result in by_shot.items():
            if result.get("per_step_accuracy"):
                curves[f"{method}, {shot}"] = SimpleNamespace(per_step_accuracy=result["per_step_accuracy"])
    if curves:
        written.append(
            plot_accuracy_vs_inner_steps(curves, os.path.join(out_dir, "accuracy_vs_inner_steps.png"))
        )
    for shot, per_class in (metrics.get("per_class") or {}).items():
        tag = shot.replace("-", "")
        written.append(
            plot_per_class_accuracy(
                per_class["class_names"],
                per_class["accuracy"],
                os.path.join(out_dir, f"per_class_accuracy_{tag}.png"),
                counts=per_class.get("episodes"),
                title=f"{name} test classes, {shot}: per-class query accuracy",
            )
        )
    for shot, counts in (metrics.get("hard_classes") or {}).items():
        if any(int(v) > 0 for v in counts.values()):
            tag = shot.replace("-", "")
            written.append(
                plot_hard_class_frequency(
                    counts,
                    os.path.join(out_dir, f"hard_classes_{tag}.png"),
                    title=f"{name}, {shot}: how often each class was its episode's worst",
                )
            )
    episodes_dir = os.path.join(run_dir, "episodes")
    if os.path.isdir(episodes_dir):
        for file in sorted(os.listdir(episodes_dir)):
            if not file.endswith(".npz"):
                continue
            with np.load(os.path.join(episodes_dir, file), allow_pickle=False) as ep:
                written.append(
                    plot_episode_grid(
                        ep["support_images"],
                        ep["support_labels"],
                        ep["query_images"],
                        ep["query_labels"],
                        os.path.join(out_dir, file.replace("sample_", "episode_").replace(".npz", ".png")),
                        query_predictions=ep["query_predictions"] if "query_predictions" in ep else None,
                        class_names=ep["class_names"] if "class_names" in ep else None,
                        title=f"{name}: a test episode",
                    )
                )
    return written
