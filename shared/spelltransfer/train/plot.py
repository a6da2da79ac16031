"""The validation metric by step, with the best step and the early stop marked."""

from __future__ import annotations

import logging
from pathlib import Path

from spelltransfer.atomic import open_atomic

log = logging.getLogger(__name__)


def plot_metric(history: list[tuple[int, float]], metric: str, out_path: Path, best_step: int | None,
                stop_step: int | None, stop_reason: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if history:
        steps, values = zip(*history)
        ax.plot(steps, values, marker="o", label=metric)
        if best_step is not None:
            best_value = dict(history).get(best_step)
            if best_value is not None:
                ax.scatter([best_step], [best_value], s=120, facecolors="none", edgecolors="green", zorder=3,
                           label=f"best (step {best_step})")
    if stop_step is not None:
        ax.axvline(stop_step, color="red", linestyle="--", label=f"stop: {stop_reason} (step {stop_step})")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with open_atomic(out_path, "wb", fsync=False) as handle:
        fig.savefig(handle, dpi=110, format="png")
        plt.close(fig)
    return out_path


def plot_run(config, history: list[dict], metric: str, output_dir, run_name: str, best_step: int | None,
             stop_step: int | None, stop_reason: str) -> Path | None:
    """A run's ``metric`` by step as ``training.plot_dir/EXPERIMENT_RUN_METRIC.png`` (every engine
    plots through this); None when nothing was measured or matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # e.g. a bare GPU box: the run is still complete without its picture
        log.warning("matplotlib is not installed; skipping the %s plot", metric)
        return None
    points = [(h["step"], h[metric]) for h in history if metric in h]
    if not points:
        return None
    out = Path(config.training.plot_dir) / f"{config.training.experiment}_{run_name}_{metric}.png"
    return plot_metric(points, metric, out, best_step, stop_step, stop_reason,
                       f"{config.training.experiment}/{run_name}: {metric} by step")
