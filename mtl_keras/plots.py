"""Matplotlib figures: learning curves and accuracy versus inner steps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_learning_curves(histories: dict[str, dict[str, list[float]]], path: str, title: str = "Learning curves") -> str:
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
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_vs_inner_steps(results: dict[str, object], path: str, title: str = "Query accuracy vs inner steps") -> str:
    """Mean query accuracy after 0..T inner steps, one line per `EvaluationResult`.

    Args:
        results: ``{label: EvaluationResult}``.
        path: PNG to write.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, result in results.items():
        acc = 100 * np.asarray(result.per_step_accuracy)
        ax.plot(np.arange(len(acc)), acc, label=f"{label} ({acc[-1]:.1f}%)")
    ax.set_xlabel("inner steps on the support set")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
