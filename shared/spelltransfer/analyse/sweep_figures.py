"""The sweep analysis's figures: accuracy against each parameter, and transfer against spelling.

Kept apart from the statistics (``analyse.sweep``) so that reading a sweep needs no plotting
library, and the figures can change without touching the numbers they show. Each task keeps one
colour and marker in every figure; the y-axis zooms to the data, since short runs sit near 0.
"""

from __future__ import annotations

from pathlib import Path

from spelltransfer.analyse.sweep import TASKS, TRANSFER_TASKS, SweepAnalysis, numeric
from spelltransfer.atomic import atomic_path


def plot_analysis(analysis: SweepAnalysis, out_dir: Path) -> dict[str, Path]:
    """Accuracy against each parameter (one panel each, a series per task), and transfer against spelling."""
    trials = analysis.rows
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    markers = {"spelling": "o", "position": "s", "count": "^"}
    colors = {"spelling": "C0", "position": "C1", "count": "C2"}   # the same in every figure
    # Zoom to the data (accuracies of short runs sit near 0), never past 100 %.
    highest = max([a for t in trials for a in t.accuracy.values()]
                  + [b["accuracy"] for b in (analysis.baseline or {}).values()] + [0.05])
    top = min(1.02, highest * 1.15 + 0.02)
    written = {}
    if analysis.params:
        fig, axes = plt.subplots(1, len(analysis.params), figsize=(4.2 * len(analysis.params), 3.6), squeeze=False)
        for ax, param in zip(axes[0], analysis.params):
            values = [t.params[param] for t in trials]
            as_numbers = [numeric(v) for v in values]
            log = False
            if all(x is not None for x in as_numbers):
                xs = as_numbers
                log = min(xs) > 0 and max(xs) / min(xs) >= 4
                if log:
                    ax.set_xscale("log")
                span = (max(xs) - min(xs)) or 1.0
            else:  # categorical: one position per value
                order = sorted(set(values))
                xs = [order.index(v) for v in values]
                ax.set_xticks(range(len(order)), order)
                span = len(order)

            def nudge(x: float, i: int) -> float:  # side by side, so equal accuracies do not hide each other
                return x * (1 + 0.04 * (i - 1)) if log else x + 0.02 * span * (i - 1)

            for i, task in enumerate(TASKS):
                points = [(nudge(x, i), t.accuracy[task]) for x, t in zip(xs, trials) if task in t.accuracy]
                if points:
                    ax.scatter([p[0] for p in points], [p[1] for p in points], marker=markers[task], alpha=0.7,
                               label=task, color=colors[task])
                    if analysis.baseline and task in analysis.baseline:
                        ax.axhline(analysis.baseline[task]["accuracy"], linestyle=":", linewidth=0.8,
                                   color=colors[task])
            ax.set_xlabel(param)
            ax.set_ylabel("validation accuracy")
            ax.set_ylim(-0.01, top)
        axes[0][0].legend(fontsize=8)
        fig.suptitle("accuracy by parameter (dotted: untrained baseline)" if analysis.baseline
                     else "accuracy by parameter")
        fig.tight_layout()
        written["params_figure"] = _save_figure(fig, out_dir / "accuracy_by_parameter.png")
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    for task in TRANSFER_TASKS:
        both = [t for t in trials if "spelling" in t.accuracy and task in t.accuracy]
        ax.scatter([t.accuracy["spelling"] for t in both], [t.accuracy[task] for t in both], marker=markers[task],
                   alpha=0.7, label=task, color=colors[task])
    ax.set_xlabel("spelling accuracy")
    ax.set_ylabel("transfer accuracy")
    ax.set_xlim(-0.01, top)
    ax.set_ylim(-0.01, top)
    ax.legend(fontsize=8)
    ax.set_title("does spelling go with transfer?")
    fig.tight_layout()
    written["transfer_figure"] = _save_figure(fig, out_dir / "transfer_vs_spelling.png")
    return written


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path, fsync=False) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
