"""`spelltransfer demo`: the main job end to end on the embedded default (CPU, bundled model).

data build -> baseline eval of the untrained model -> short LoRA training -> eval of the tuned
adapter on the same items -> base-vs-tuned table with gains and intervals -> a small sweep
through the real gRPC services started as local processes -> which of its settings went with
spelling and with transfer (``spelltransfer analyse sweep``). Everything lands under ``--out``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.rule import Rule

# The trial table has ~12 columns: below 150 characters (or when piped, where rich assumes 80) it truncates.
console = Console(width=max(shutil.get_terminal_size((150, 24)).columns, 150))


def demo(
    out: Path = typer.Option(Path("results/demo"), help="Folder for data, evaluations, the run and the table."),
    model: str = typer.Option("smollm2-135m", help="Base model (name, local folder or HF id)."),
    config: Path = typer.Option(Path("configs/training/config.yaml"), help="Training config for the tuned run."),
    steps: int = typer.Option(60, min=1, help="Training steps of the tuned run."),
    train_batch_size: int = typer.Option(8, min=1, help="Training batch size of the tuned run (~5 s/step on 2 cores)."),
    eval_items: int = typer.Option(100, min=1, help="Test items per task for the base and tuned evaluations."),
    batch_size: int = typer.Option(32, min=1, help="Generation batch size."),
    seed: int = typer.Option(0, help="Seed for the data build."),
    sweep: bool = typer.Option(True, help="Also run a small sweep through the local gRPC services."),
    sweep_spec: Path = typer.Option(Path("configs/sweeps/demo.yaml"), help="Sweep spec for the demo sweep."),
    workers: int = typer.Option(2, min=1, help="Trainer workers for the demo sweep."),
    recipe: Path = typer.Option(Path("results/recipe/adapter"), help="The study's committed adapter, scored against the untrained model in its own transfer mode (skipped when absent or --model is not the bundled model)."),
) -> None:
    """Run the main job; prints and writes the base-vs-tuned transfer table."""
    from spelltransfer.analyse import compare_results
    from spelltransfer.data import build_dataset, load_split
    from spelltransfer.evaluate.evaluator import evaluate_model
    from spelltransfer.evaluate.generation import HFGenerationEngine
    from spelltransfer.train import load_training_config, run_training

    started = time.monotonic()
    timings: dict[str, float] = {}
    summary_extra: dict[str, str] = {}
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"

    def stage(name: str, began: float) -> None:
        timings[name] = round(time.monotonic() - began, 1)
        console.print(f"[green]✓[/] {name}: {timings[name]:.1f}s")

    console.print(Rule("1/5 data"))
    began = time.monotonic()
    manifest = build_dataset(data_dir, seed=seed, model=model)
    console.print(f"data in {data_dir} (hash {str(manifest.get('content_sha256', ''))[:12]})")
    stage("data", began)
    test_items = load_split(data_dir, "test")

    console.print(Rule("2/5 baseline evaluation (untrained model)"))
    began = time.monotonic()
    engine = HFGenerationEngine(model, batch_size=batch_size)
    try:
        base = evaluate_model(engine, test_items, limit=eval_items, out=out / "eval_base.json", data=str(data_dir), split="test")
    finally:
        engine.close()
    stage("baseline eval", began)

    console.print(Rule(f"3/5 LoRA training ({steps} steps)"))
    began = time.monotonic()
    run_config = load_training_config(config, [
        f"training.max_steps={steps}", f"training.batch_size={train_batch_size}", f"training.data_dir={data_dir.resolve()}", f"model.name={model}",
        f"training.plot_dir={(out / 'training_logs').resolve()}",
    ])
    trained = run_training(run_config, out / "run", resume=False)
    stage("training", began)

    console.print(Rule("4/5 tuned evaluation"))
    began = time.monotonic()
    engine = HFGenerationEngine(model, adapter_dir=trained.adapter_dir, batch_size=batch_size)
    try:
        tuned = evaluate_model(engine, test_items, limit=eval_items, out=out / "eval_tuned.json", data=str(data_dir), split="test")
    finally:
        engine.close()
    stage("tuned eval", began)

    console.print(Rule("5/5 transfer table"))
    report = compare_results(base, tuned)
    json_path, md_path = report.save(out)
    console.print(report.rich_table())

    if recipe.is_dir() and model == RECIPE_BASE_MODEL:
        console.print(Rule(f"what the study found: the committed adapter {recipe} vs the untrained model"))
        began = time.monotonic()
        recipe_report, recipe_mode = recipe_comparison(recipe, model, test_items, out / "recipe", limit=eval_items, batch_size=batch_size)
        console.print(f"transfer mode {recipe_mode} (from {recipe / 'training_config.yaml'}); the short run above trained {steps} steps, the recipe trained its own")
        console.print(recipe_report.rich_table())
        summary_extra["recipe"] = recipe_report.to_dict()
        stage("recipe eval", began)

    if sweep:
        from spelltransfer.sweep.local import run_local_sweep

        console.print(Rule("sweep through the local gRPC services"))
        began = time.monotonic()
        final = run_local_sweep(sweep_spec, n_workers=workers, work_dir=out / "sweep", console=console,
                                overrides=[f"training.data_dir={data_dir.resolve()}", f"model.name={model}",
                                           f"training.plot_dir={(out / 'sweep' / 'plots').resolve()}"])
        stage("sweep", began)

        console.print(Rule("which sweep settings transfer best"))
        began = time.monotonic()
        summary_extra["sweep_analysis"] = str(_analyse_sweep(Path(final.trials_csv), model, data_dir, out, batch_size))
        stage("sweep analysis", began)

    timings["total"] = round(time.monotonic() - started, 1)
    summary = {"timings_s": timings, "transfer": report.to_dict(), "adapter": str(trained.adapter_dir), **summary_extra}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"table: {md_path} · summary: {out / 'demo_summary.json'} · total {timings['total']:.0f}s")


RECIPE_BASE_MODEL = "smollm2-135m"  # the base the committed recipe adapter was trained on (bundled GGUF)


def recipe_comparison(adapter: Path, model: str, test_items, out: Path, *, limit: int | None, batch_size: int,
                      tasks: list[str] | None = None):
    """Score ``adapter`` and the untrained ``model`` on the same test items in the adapter's transfer
    mode (``training_config.yaml`` beside the adapter; ``direct`` without one). Returns the paired
    report (``analyse.compare_results``) and the mode."""
    from spelltransfer.analyse import compare_results
    from spelltransfer.evaluate.evaluator import evaluate_model
    from spelltransfer.evaluate.generation import HFGenerationEngine
    from spelltransfer.train import load_training_config

    config_path = adapter / "training_config.yaml"
    mode = load_training_config(config_path).transfer.mode if config_path.exists() else "direct"
    results = {}
    for name, adapter_dir in (("untrained", None), ("recipe", adapter)):
        engine = HFGenerationEngine(model, adapter_dir=adapter_dir, batch_size=batch_size)
        try:
            results[name] = evaluate_model(engine, test_items, tasks=tasks, limit=limit, mode=mode, split="test",
                                           out=out / f"eval_{name}_{mode}.json")
        finally:
            engine.close()
    report = compare_results(results["untrained"], results["recipe"])
    report.save(out)
    return report, mode


def _analyse_sweep(trials_csv: Path, model: str, data_dir: Path, out: Path, batch_size: int) -> Path:
    """The sweep's analysis, with the untrained model scored on the same validation items as the trials."""
    from spelltransfer.analyse.sweep import analyse_sweep, baseline_from_eval, load_trials
    from spelltransfer.data import load_split
    from spelltransfer.evaluate.evaluator import evaluate_model
    from spelltransfer.evaluate.generation import HFGenerationEngine

    trials, _, _ = load_trials(trials_csv)
    per_task = max((n for trial in trials for n in trial.n.values()), default=0)
    baseline = None
    if per_task:
        engine = HFGenerationEngine(model, batch_size=batch_size)
        try:
            result = evaluate_model(engine, load_split(data_dir, "validation"), limit=per_task,
                                    out=out / "eval_base_validation.json", data=str(data_dir), split="validation")
        finally:
            engine.close()
        baseline = baseline_from_eval(result)
    analysis = analyse_sweep(trials_csv, baseline=baseline)
    written = analysis.save(out / "sweep_analysis")
    for task, effect in analysis.spelling_vs_transfer.items():
        text = "too few distinct values" if effect.rho is None else f"rho {effect.rho:+.2f} (p {effect.p:.2g})"
        console.print(f"spelling vs {task} across trials: {text}")
    console.print(f"sweep analysis: {written['markdown']}")
    return written["markdown"]


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""
    app.command("demo")(demo)
