"""`spelltransfer serve inference|loadtest|report` and `spelltransfer export`.

    spelltransfer export RUN_DIR --name tuned --eval tuned=results/eval/tuned.json [--gguf]
    spelltransfer serve inference --adapter tuned=RUN_DIR/final          # or --champion NAME
    spelltransfer serve loadtest --base-url http://127.0.0.1:8000 --model tuned --users 16 --run-time 30
    spelltransfer serve loadtest --adapter tuned=RUN_DIR/final --model tuned  # starts vLLM itself
    spelltransfer serve report --eval tuned=results/eval/tuned.json

vLLM and Locust run from the serve env (``make serve-env``); these commands only drive them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from spelltransfer.errors import ConfigError

console = Console(stderr=True)
serve_app = typer.Typer(help="Serve models with vLLM, load-test them with Locust, report.", no_args_is_help=True)


def _labelled_files(values: list[str] | None, option: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for value in values or []:
        label, sep, path = value.partition("=")
        if not sep:
            label, path = Path(value).stem, value
        if not label or not path:
            raise ConfigError(f"{option} '{value}': expected LABEL=FILE")
        files[label] = Path(path)
    return files


def _validated(cls, **fields):
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or cls.__name__
        raise ConfigError(f"{field}: {first['msg']}") from error


def _server_config(model: str, adapters: list[str] | None, champion: str | None, host: str, port: int,
                   max_model_len: int, dtype: str, log_file: Path | None):
    from spelltransfer.serving.champion import pull_champion
    from spelltransfer.serving.vllm_server import AdapterSpec, InferenceServerConfig

    specs = [AdapterSpec.parse(a) for a in adapters or []]
    if champion:
        folder = pull_champion(champion, Path(tempfile.mkdtemp(prefix="champion-")))
        specs.append(AdapterSpec(name="champion", path=folder))
        console.print(f"champion {champion}@champion -> {folder} (served as 'champion')")
    return _validated(InferenceServerConfig, model=model, adapters=tuple(specs), host=host, port=port,
                      max_model_len=max_model_len, dtype=dtype, log_file=log_file)


@serve_app.command("inference")
def inference(
    model: str = typer.Option("smollm2-135m", help="base model name or HF folder"),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", help="LoRA adapter NAME=PATH (repeatable)"),
    champion: Optional[str] = typer.Option(None, help="registered model NAME: serve NAME@champion as 'champion'"),
    host: str = typer.Option("127.0.0.1", help="bind address"),
    port: int = typer.Option(8000, help="port (0 = any free port)"),
    max_model_len: int = typer.Option(512, help="context length"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | auto"),
    log_file: Optional[Path] = typer.Option(None, help="vLLM's log (default: a temp file)"),
) -> None:
    """Run the vLLM OpenAI-compatible server in the foreground (Ctrl-C stops it)."""
    from spelltransfer.serving.vllm_server import serve_forever

    raise typer.Exit(serve_forever(_server_config(model, adapter, champion, host, port, max_model_len, dtype, log_file)))


@serve_app.command("loadtest")
def loadtest(
    model: str = typer.Option("base", help="served model or adapter name to send requests to"),
    base_url: Optional[str] = typer.Option(None, help="running server; omit to start vLLM here for the run"),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", help="with no --base-url: adapters NAME=PATH to serve"),
    label: Optional[str] = typer.Option(None, help="file prefix for results (default: model)"),
    users: int = typer.Option(16, help="concurrent users"),
    spawn_rate: float = typer.Option(16.0, help="users started per second"),
    run_time: int = typer.Option(30, help="seconds of load"),
    max_tokens: int = typer.Option(16, help="completion tokens per request"),
    data_dir: Optional[Path] = typer.Option(None, help="dataset folder (default: questions rebuilt from the tasks)"),
    out: Path = typer.Option(Path("results/deployment"), help="results root (data/, figures/)"),
) -> None:
    """A bounded headless Locust run with monitoring; prints the summary figures."""
    from spelltransfer.serving.loadtest import LoadTestConfig, run_load_test
    from spelltransfer.serving.vllm_server import VLLMServer

    def run(url: str, pid: int | None):
        config = _validated(LoadTestConfig, base_url=url, model=model, label=label, users=users,
                            spawn_rate=spawn_rate, run_time_s=run_time, max_tokens=max_tokens,
                            data_dir=data_dir, out_dir=out, server_pid=pid)
        return run_load_test(config)

    if base_url:
        summary = run(base_url, None)
    else:
        server_config = _server_config("smollm2-135m", adapter, None, "127.0.0.1", 0, 512, "float32",
                                       out / "data" / f"{label or model}_vllm.log")
        console.print("starting vLLM ...")
        with VLLMServer(server_config) as server:
            console.print(f"vLLM ready in {server.startup_s:.1f} s at {server.base_url}")
            summary = run(server.base_url, server.pid)
    print(json.dumps(summary.model_dump(exclude={"errors"}), indent=2))
    if summary.errors:
        console.print(f"[yellow]errors:[/] {summary.errors}")


@serve_app.command("report")
def report(
    out: Path = typer.Option(Path("results/deployment"), help="results root (data/, figures/, reports/)"),
    eval_file: Optional[list[str]] = typer.Option(None, "--eval", help="eval result LABEL=FILE.json (repeatable)"),
) -> None:
    """Write OUT/reports/deployment.html from what the load tests and evaluations left in OUT."""
    from spelltransfer.serving.report import build_report

    print(build_report(out, _labelled_files(eval_file, "--eval")))


def export(
    adapter: Path = typer.Argument(..., help="PEFT adapter folder or training run folder"),
    name: Optional[str] = typer.Option(None, help="export name (default: the run folder's name)"),
    base_model: Optional[str] = typer.Option(None, help="base model (default: from adapter_config.json)"),
    out: Path = typer.Option(Path("results/deployment/models"), help="exports go to OUT/NAME/"),
    eval_file: Optional[list[str]] = typer.Option(None, "--eval", help="eval result LABEL=FILE.json for the card"),
    merged: bool = typer.Option(True, help="also write the merged full model"),
    merged_dtype: str = typer.Option("float32", help="float32 | bfloat16"),
    gguf: bool = typer.Option(False, help="also write a GGUF file from the merged model"),
    overwrite: bool = typer.Option(False, help="replace an existing OUT/NAME"),
) -> None:
    """Export an adapter: PEFT folder + merged HF model (+ GGUF), each with a model card."""
    from spelltransfer.serving.export import ExportConfig, export_model

    config = _validated(ExportConfig, adapter=adapter, name=name, base_model=base_model, out_dir=out,
                        evals=_labelled_files(eval_file, "--eval"), merged=merged, merged_dtype=merged_dtype,
                        gguf=gguf, overwrite=overwrite)
    result = export_model(config)
    print(json.dumps(result.model_dump(mode="json"), indent=2))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(serve_app, name="serve")
    app.command("export")(export)
