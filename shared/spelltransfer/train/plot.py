"""The validation metric by step, with the best step and the early stop marked."""

from __future__ import annotations

from pathlib import Path

from spelltransfer.atomic import open_atomic


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
