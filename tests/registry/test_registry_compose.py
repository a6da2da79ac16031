"""docker-compose.gpu.yml can't run here (no Docker engine): check it against the code instead.

Every ``spelltransfer`` command a container runs must exist with the options it passes, every
``SPELLTRANSFER_*`` variable must be one the package reads, ``*_FILE`` secrets must be mounted,
addresses must point at ports services listen on, and only MinIO/MLflow may see the S3 keys.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from spelltransfer.cli.platform import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.gpu.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def cli_root():
    from spelltransfer.cli import app

    return typer.main.get_command(app)


def _entrypoint(dockerfile: Path) -> list[str]:
    match = re.search(r'^ENTRYPOINT (\[.*\])$', dockerfile.read_text(), re.M)
    return yaml.safe_load(match.group(1)) if match else []


def _service_command(name: str):
    """The typer command behind `spelltransfer platform NAME` (services/MODULE/__main__.py)."""
    module = importlib.import_module(SERVICES[name][0] + ".__main__")
    app = typer.Typer()
    app.command()(getattr(module, name))
    return typer.main.get_command(app)


def _check_cli(root, argv: list[str]) -> None:
    """argv after `spelltransfer`: subcommands exist and every --option is accepted."""
    command = root
    args = list(argv)
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        name = args.pop(0)
        assert name in command.commands, f"`spelltransfer ... {name}`: no such command (in {sorted(command.commands)})"
        command = command.commands[name]
    if command.name in SERVICES and not command.params:
        # `spelltransfer platform NAME` hands its options to `python -m services.MODULE`: check those.
        command = _service_command(command.name)
    accepted = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in accepted, f"{argv}: option {arg} not accepted by {command.name} ({sorted(accepted)})"


def test_compose_parses_and_has_the_stack(compose):
    assert {"minio", "postgres", "mlflow", "sweep", "trainer-0", "trainer-1", "evaluator", "champion-pull",
            "vllm"} <= set(compose["services"])
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (ROOT / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
    for image in {s["image"] for s in compose["services"].values() if s.get("image", "").startswith("spelltransfer-")}:
        assert any(s.get("image") == image and s.get("build") for s in compose["services"].values()), \
            f"{image} is used but no service builds it"


def test_container_commands_exist_in_the_cli(compose, cli_root):
    checked = 0
    for name, service in compose["services"].items():
        dockerfile = ROOT / service["build"]["dockerfile"] if service.get("build") else None
        if dockerfile is None:
            builder = [s for s in compose["services"].values() if s.get("image") == service.get("image") and s.get("build")]
            dockerfile = ROOT / builder[0]["build"]["dockerfile"] if builder else None
        entry = service.get("entrypoint") or (_entrypoint(dockerfile) if dockerfile else [])
        if entry[:1] == ["spelltransfer"]:
            _check_cli(cli_root, entry[1:] + list(service.get("command", [])))
            checked += 1
        elif entry[:2] == ["sh", "-c"]:
            script = " ".join(service["command"])
            for part in script.split("&&"):
                words = shlex.split(part.replace("$${CHAMPION_MODEL}", "spelling-lora"))
                if words[:1] == ["spelltransfer"]:
                    _check_cli(cli_root, words[1:])
                    checked += 1
    for dockerfile in (ROOT / "deploy").glob("*.Dockerfile"):
        entry = _entrypoint(dockerfile)
        if entry[:1] == ["spelltransfer"]:
            cmd = re.search(r'^CMD (\[.*\])$', dockerfile.read_text(), re.M)
            _check_cli(cli_root, entry[1:] + (yaml.safe_load(cmd.group(1)) if cmd else []))
    assert checked >= 6


def test_environment_variables_are_ones_the_code_reads(compose):
    source = "\n".join(p.read_text() for p in (ROOT / "shared" / "spelltransfer").rglob("*.py"))
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if key.startswith("SPELLTRANSFER_"):
                assert f'"{key}"' in source, f"{name}: {key} is read nowhere in the package"
            if key.endswith("_FILE"):
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in service.get("secrets", []), f"{name}: {key} points at unmounted secret {secret}"
                assert secret in compose["secrets"]


def test_only_minio_and_mlflow_see_s3_keys(compose):
    for name, service in compose["services"].items():
        text = yaml.safe_dump(service)
        holds_keys = "s3_secret_key" in text or "AWS_SECRET_ACCESS_KEY" in text or "SECRET_ACCESS_KEY" in text
        assert holds_keys == (name in {"minio", "mlflow"}), name
    assert not re.search(r"(PASSWORD|SECRET)[A-Z_]*:\s*[^/\s$]", COMPOSE.read_text()), "a literal secret in compose"


def test_addresses_match_listening_ports(compose):
    services = compose["services"]

    def listens(name: str) -> str:
        command = services[name].get("command", [])
        return command[command.index("--port") + 1] if "--port" in command else ""

    assert listens("mlflow") == "5000"
    for name, service in services.items():
        uri = service.get("environment", {}).get("MLFLOW_TRACKING_URI")
        if uri:
            assert uri == f"http://mlflow:{listens('mlflow')}", name
    for worker in ("trainer-0", "trainer-1"):
        command = services[worker]["command"]
        assert command[command.index("--controller") + 1] == f"sweep:{listens('sweep')}"
        assert command[command.index("--advertise") + 1] == f"{worker}:{listens(worker)}"
        devices = services[worker]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    assert services["mlflow"]["environment"]["SPELLTRANSFER_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "--address" in services["minio"]["command"] and ":9000" in services["minio"]["command"]
    # vLLM serves what champion-pull wrote: the adapter folder and the converted base model.
    vllm = services["vllm"]["command"]
    assert "champion=/adapters/champion" in vllm
    assert vllm[vllm.index("--model") + 1] == "/models/models/smollm2-135m-instruct"
    assert services["champion-pull"]["environment"]["SPELLTRANSFER_CACHE"] == "/models"
    base_model = (ROOT / "shared" / "spelltransfer" / "models" / "base_model.py").read_text()
    assert 'cache_dir() / "models" / "smollm2-135m-instruct"' in base_model
