"""The sweep's own W&B run, written when it ends: what a W&B user opens to compare its trials.

The trials' W&B runs carry their hyperparameters but not the validation accuracies the worker
measures after training (that evaluation is a separate run), so W&B alone cannot chart "lr
against position accuracy". This run holds the joined view: ``trials`` (one row per trial:
parameters, the three accuracies, the items behind them, objective), ``effects`` (the analysis's
rank correlations) and the analysis figures, in the same project and group as the trials.
Offline unless told otherwise (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


def log_sweep_run(spec, view, analysis_dir: Path | None) -> str:
    """Write the summary run of a finished sweep (``spec``: SweepSpec, ``view``: SweepView); its id."""
    import wandb

    from spelltransfer.track.config import WandbConfig
    from spelltransfer.track.wandb_tracker import WandbTracker

    settings = spec.wandb
    out = Path(settings.dir or spec.results_dir)
    tracker = WandbTracker(WandbConfig(project=settings.project, mode=settings.mode, dir=str(out), group=view.name), out)
    config = {"objective": spec.objective, "strategy": spec.strategy, "max_trials": spec.max_trials,
              "parameters": {key: parameter.model_dump(exclude_none=True) for key, parameter in spec.parameters.items()},
              "overrides": list(spec.overrides), "pruner": spec.pruner.kind}
    run_id = tracker.start(f"{view.name}-summary", config, {"job": "sweep-summary"}, None)
    try:
        with open(view.trials_csv, newline="") as handle:
            rows = list(csv.reader(handle))
        if rows:
            tracker.log_table("trials", rows[0], _typed(rows[1:]))
        if analysis_dir is not None:
            effects_json = analysis_dir / "sweep_analysis.json"
            if effects_json.exists():
                effects = json.loads(effects_json.read_text())["effects"]
                tracker.log_table("effects", ["param", "task", "trials", "rho", "p", "p_adjusted"],
                                  [[e["param"], e["task"], e["trials"], e["rho"], e["p"], e["p_adjusted"]] for e in effects])
            figures = {f"figures/{f.stem}": wandb.Image(str(f)) for f in sorted((analysis_dir / "figures").glob("*.png"))}
            if figures:
                tracker.run.log(figures)
        tracker.run.summary.update({"state": view.state, "trials": len(view.trials), "best_trial": view.best_number,
                                    **({"best_value": view.best_value} if view.best_number >= 0 else {})})
        tracker.finish("FINISHED" if view.state == "COMPLETED" else "FAILED")
    except BaseException:
        tracker.finish("FAILED")
        raise
    return run_id


def _typed(rows: list[list[str]]) -> list[list]:
    """CSV cells as W&B can chart them: a column whose filled cells are all numbers becomes floats
    (empty cells None); any other column stays text, so no column mixes types."""
    from spelltransfer.analyse.sweep import numeric

    width = max((len(row) for row in rows), default=0)
    numeric_columns = {i for i in range(width)
                       if all(numeric(row[i]) is not None for row in rows if i < len(row) and row[i] != "")}
    return [[(numeric(cell) if cell != "" else None) if i in numeric_columns else cell for i, cell in enumerate(row)]
            for row in rows]
