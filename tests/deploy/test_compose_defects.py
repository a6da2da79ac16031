"""Each deploy defect issue 16 found, as a check of the deploy files (no Docker engine needed).

Every ``check_*`` passes on the current tree and, in ``test_each_check_fails_before_issue16``,
fails on the files as they were before the fix (tests/deploy/before_issue16/): a check that
can't see its defect is no test. Code-side fixes (the sweep client, the token file) have their
own tests below. tests/deploy/test_compose_smoke.py runs the services' commands themselves.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath

import pytest
import yaml

from compose_model import (APP, ROOT, DeployTree, in_container, mounts, option, volume_of)

GRPC_SERVICES = ("sweep", "trainer-0", "trainer-1", "evaluator")
TRAINERS = ("trainer-0", "trainer-1")


def _gpu_specs(tree: DeployTree) -> dict[str, dict]:
    """The shipped sweep specs meant for the GPU stack: every one not on the CPU demo's dataset."""
    specs = {}
    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        text = tree.text(f"configs/sweeps/{path.name}")
        if text and "results/demo/data" not in text:
            specs[path.name] = yaml.safe_load(text)
    assert specs, "no GPU sweep specs"
    return specs


def _trial_config(spec: dict):
    from spelltransfer.train.config import load_training_config

    return load_training_config(ROOT / spec.get("base_config", "configs/training/config.yaml"), spec.get("overrides", []))


def check_mlflow_accepts_the_service_name(tree: DeployTree) -> None:
    # MLflow >= 3.5 guards against DNS rebinding: only localhost/IPs in Host unless allowed.
    from urllib.parse import urlsplit

    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    compose = tree.compose()
    mlflow = compose["services"]["mlflow"]
    allowed = mlflow.get("environment", {}).get("MLFLOW_SERVER_ALLOWED_HOSTS") or option(
        tree.argv(compose, "mlflow"), "--allowed-hosts")
    patterns = [h.strip() for h in allowed.split(",")] if allowed else get_default_allowed_hosts()
    hosts = {urlsplit(s["environment"]["MLFLOW_TRACKING_URI"]).netloc for s in compose["services"].values()
             if "MLFLOW_TRACKING_URI" in s.get("environment", {})}
    hosts |= {"localhost:5000", "127.0.0.1:5000"}  # the host side, through the published port
    refused = sorted(h for h in hosts if not is_allowed_host_header(patterns, h))
    assert not refused, f"MLflow answers 403 to Host {refused}: set MLFLOW_SERVER_ALLOWED_HOSTS"


def check_trainers_have_the_dataset(tree: DeployTree) -> None:
    compose = tree.compose()
    services = compose["services"]
    for name, spec in _gpu_specs(tree).items():
        data = in_container(str(_trial_config(spec).training.data_dir))
        for trainer in TRAINERS:
            volume = volume_of(services[trainer], data)
            assert volume, f"{name}: {trainer} reads {data}, which is on no volume"
            builders = [s for s, svc in services.items()
                        if "data build" in " ".join(tree.argv(compose, s)) and str(data) in " ".join(tree.argv(compose, s))
                        and volume_of(svc, data) == volume]
            assert builders, f"{name}: no service builds {data} on volume {volume}"
            assert {"condition": "service_completed_successfully"} in services[trainer]["depends_on"].values()


def check_gpu_specs_log_to_mlflow_and_register(tree: DeployTree) -> None:
    for name, spec in _gpu_specs(tree).items():
        assert _trial_config(spec).training.tracking.mlflow.enabled, f"{name}: trainers don't log (no adapter uploaded)"
        assert (spec.get("registry") or {}).get("enabled"), f"{name}: registry.enabled is off (no champion)"
        assert (spec.get("mlflow") or {}).get("enabled", True)


def _version(tag: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", tag)[:3])


def check_vllm_reads_the_model(tree: DeployTree) -> None:
    # transformers 4.x can't read the saved tokenizer and reads rope_theta wrong; vLLM >= 0.19.1
    # requires transformers 5; the image pins the project's own transformers on top.
    text = tree.text("deploy/inference.Dockerfile")
    image = re.search(r"^FROM vllm/vllm-openai:(\S+)", text, re.M)
    assert image and _version(image.group(1)) >= (0, 19, 1), f"vLLM image {image and image.group(1)} ships transformers 4"
    project_pin = re.search(r'"transformers==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"transformers=={project_pin}" in text, f"inference image must pin transformers=={project_pin}"


def check_locust_service(tree: DeployTree) -> None:
    from spelltransfer.cli.serve import loadtest

    compose = tree.compose()
    services = compose["services"]
    testers = [n for n in services if tree.argv(compose, n)[:3] == ["spelltransfer", "serve", "loadtest"]]
    assert testers, "no Locust (serve loadtest) service"
    argv, service = tree.argv(compose, testers[0]), services[testers[0]]
    assert service.get("profiles"), "the load test is a profile, not part of a plain `up`"
    vllm = tree.argv(compose, "vllm")
    assert option(argv, "--base-url") == f"http://vllm:{option(vllm, '--port')}"
    served = {option(vllm, "--served-model-name")} | {m.split("=")[0] for m in [option(vllm, "--lora-modules")]}
    assert option(argv, "--model") in served
    assert volume_of(service, in_container(option(argv, "--out"))), "the report is on no volume"
    default_model = next(p.default for p in __import__("inspect").signature(loadtest).parameters.values()
                         if p.name == "model").default
    assert default_model == option(vllm, "--served-model-name"), \
        f"`serve loadtest` sends model {default_model!r}, compose vLLM serves {option(vllm, '--served-model-name')!r}"


def check_bare_compose_up_finds_the_file(tree: DeployTree) -> None:
    from compose_model import dotenv

    assert dotenv(tree.text(".env")).get("COMPOSE_FILE", "").split(":")[0] == "docker-compose.gpu.yml"


def _devices(service: dict) -> list[str]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for device in reservations.get("devices", []) for d in device.get("device_ids", [])]


def check_one_gpu_is_the_default_and_more_by_a_variable(tree: DeployTree) -> None:
    compose = tree.compose()
    gpu_services = {n: _devices(s) for n, s in compose["services"].items() if _devices(s)}
    assert gpu_services and all(ids == ["0"] for ids in gpu_services.values()), f"default layout: {gpu_services}"
    two = tree.compose({"SECOND_GPU": "1"})
    assert {n for n, s in two["services"].items() if _devices(s) == ["1"]} >= {"trainer-1", "vllm"}
    fraction = option(tree.argv(compose, "vllm"), "--gpu-memory-utilization")
    assert fraction and float(fraction) <= 0.5, "vLLM keeps 0.9 of a GPU it shares with a trainer"


def check_results_and_plots_on_volumes(tree: DeployTree) -> None:
    compose = tree.compose()
    services = compose["services"]
    for name, spec in _gpu_specs(tree).items():
        results = in_container(spec.get("results_dir", "results"))
        assert volume_of(services["sweep"], results), f"{name}: sweep results {results} on no volume"
        plots = in_container(str(_trial_config(spec).training.plot_dir))
        for trainer in TRAINERS:
            assert volume_of(services[trainer], plots), f"{name}: {trainer} plots {plots} on no volume"


def check_api_token_is_a_secret(tree: DeployTree) -> None:
    compose = tree.compose()
    for name in GRPC_SERVICES:
        service = compose["services"][name]
        env = service.get("environment", {})
        assert "SPELLTRANSFER_API_TOKEN" not in env, f"{name}: the token is a plain variable (docker inspect shows it)"
        secret = str(env.get("SPELLTRANSFER_API_TOKEN_FILE", "")).removeprefix("/run/secrets/")
        assert secret and secret in service.get("secrets", []) and secret in compose["secrets"], name


def check_trainer_image_can_compile(tree: DeployTree) -> None:
    text = tree.text("deploy/trainer.Dockerfile")
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert "devel" in base, f"trainer base {base}: Triton/Unsloth need a compiler (a CUDA devel image)"
    assert "build-essential" in text or "gcc" in text


def check_healthchecks(tree: DeployTree) -> None:
    compose = tree.compose()
    for name in ("sweep", *TRAINERS, "vllm"):
        assert compose["services"][name].get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


def check_dockerignore(tree: DeployTree) -> None:
    text = tree.text(".dockerignore") or ""
    for entry in ("secrets/", ".venv/", ".git/", "results/"):
        assert entry in text.split(), f".dockerignore lacks {entry}"


def check_restart_policies(tree: DeployTree) -> None:
    compose = tree.compose()
    for name, service in compose["services"].items():
        one_shot = any(d == {"condition": "service_completed_successfully"}
                       for s in compose["services"].values() for k, d in (s.get("depends_on") or {}).items() if k == name)
        wanted = "no" if one_shot or service.get("profiles") == ["loadtest"] else "unless-stopped"
        assert service.get("restart") == wanted, f"{name}: restart {service.get('restart')!r}, want {wanted!r}"


CHECKS = [value for key, value in dict(globals()).items() if key.startswith("check_")]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_deploy_files_are_fixed(check):
    check(DeployTree.current())


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_each_check_fails_before_issue16(check):
    with pytest.raises(AssertionError):
        check(DeployTree.before_issue16())


def test_host_submitted_base_config_resolves_under_the_controllers_roots(tmp_path, monkeypatch):
    """The host's repo and the container's /app differ: the spec must name the config relative."""
    from spelltransfer.platform.roots import ServiceRoots
    from spelltransfer.sweep.client import spec_text_for_submit

    host_repo, container_app = tmp_path / "home" / "me" / "repo", tmp_path / "app"
    for repo in (host_repo, container_app):
        (repo / "configs" / "training").mkdir(parents=True)
        (repo / "configs" / "training" / "config.yaml").write_text("experiment: x\n")
    (host_repo / "configs" / "sweeps").mkdir()
    spec = host_repo / "configs" / "sweeps" / "s.yaml"
    spec.write_text("name: s\nbase_config: configs/training/config.yaml\nparameters: {optimizer.lr: {values: [1]}}\n")
    monkeypatch.chdir(host_repo)
    sent = yaml.safe_load(spec_text_for_submit(spec.relative_to(host_repo)))
    controller_roots = ServiceRoots.from_env({}, cwd=container_app)
    assert sent["base_config"] == "configs/training/config.yaml"
    monkeypatch.chdir(container_app)  # the controller resolves it against its own working directory
    assert controller_roots.check("configs", "base_config", sent["base_config"]) == \
        (container_app / "configs" / "training" / "config.yaml").resolve()


def test_api_token_file_is_read_when_the_variable_is_unset(tmp_path, monkeypatch):
    from spelltransfer.platform.security import TOKEN_ENV, TOKEN_FILE_ENV, SecuritySettings

    (tmp_path / "api_token").write_text("tok-from-file\n")
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(tmp_path / "api_token"))
    assert SecuritySettings.from_env().token == "tok-from-file"
    monkeypatch.setenv(TOKEN_ENV, "tok-from-env")  # an explicit variable wins
    assert SecuritySettings.from_env().token == "tok-from-env"
    assert "tok-from" not in repr(SecuritySettings.from_env())


def test_vllm_mounts_what_champion_pull_writes():
    tree = DeployTree.current()
    compose = tree.compose()
    vllm, pull = compose["services"]["vllm"], compose["services"]["champion-pull"]
    model = PurePosixPath(option(tree.argv(compose, "vllm"), "--model"))
    assert volume_of(vllm, model) == volume_of(pull, PurePosixPath(pull["environment"]["SPELLTRANSFER_CACHE"]))
    assert mounts(vllm) and APP == PurePosixPath("/app")
    assert os.path.basename(str(model)) == "smollm2-135m-instruct"
