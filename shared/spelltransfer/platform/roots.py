"""Where the platform services may read and write: every path a request names lies under a root.

A token holder must not make a service read ``/etc/shadow`` as a config or write a database or a
plot wherever the service user can. So the controller, the trainer worker and the evaluator
resolve each path a request names (symlinks followed, relative paths against the service's
working directory) and refuse one outside the roots of its kind with ``ConfigError`` (gRPC
INVALID_ARGUMENT) naming the field — before the file is opened:

- ``configs``: ``config_path`` (StartTrial), a spec's ``base_config``;
- ``data``: ``training.data_dir``, a model or adapter folder, the evaluator's ``data``/``adapter``;
- ``results``: a spec's ``results_dir`` and ``wandb.dir``, ``training.plot_dir``/``output_root``,
  ``training.tracking.wandb.dir``, a ``file:`` tracking URI;
- ``storage``: ``sqlite:///PATH`` in a spec's ``storage`` and in MLflow tracking URIs.

Roots come from ``SPELLTRANSFER_{CONFIGS,DATA,RESULTS,STORAGE}_ROOTS`` (``os.pathsep``-separated;
relative entries against the working directory); unset = the defaults below. A service adds its
own folder (the worker's ``--work-dir``, the controller's ``--state-dir``). The embedded local
platform (``sweep run --local``, the demo) talks only to the services it started, with a token only
it knows, so it sets the roots to ``/``: its paths are its user's own.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from spelltransfer.errors import ConfigError

KINDS = ("configs", "data", "results", "storage")
ENV_VARS = {kind: f"SPELLTRANSFER_{kind.upper()}_ROOTS" for kind in KINDS}
DEFAULTS: dict[str, tuple[str, ...]] = {
    "configs": ("configs",),
    "data": ("data", "results", "checkpoints", "models"),  # datasets, built data, adapters, model folders
    "results": ("results", "checkpoints"),
    "storage": ("results",),
}
# Training-config keys (``--set`` paths) that name a path, and the root kind each must lie under.
PATH_FIELDS: dict[str, str] = {
    "training.data_dir": "data",
    "training.plot_dir": "results",
    "training.output_root": "results",
    "training.tracking.wandb.dir": "results",
    "training.tracking.mlflow.tracking_uri": "uri",
    "model.name": "model",
}
_SHOWN = 120  # characters of an offending value quoted in an error


def _quote(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


@dataclass(frozen=True)
class ServiceRoots:
    """Resolved folders per kind; ``check`` refuses a path outside them."""

    configs: tuple[Path, ...] = field(default_factory=tuple)
    data: tuple[Path, ...] = field(default_factory=tuple)
    results: tuple[Path, ...] = field(default_factory=tuple)
    storage: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> "ServiceRoots":
        env = os.environ if env is None else env
        base = Path(cwd or os.getcwd())
        kinds = {}
        for kind in KINDS:
            text = env.get(ENV_VARS[kind])
            entries = [e for e in text.split(os.pathsep) if e.strip()] if text else list(DEFAULTS[kind])
            kinds[kind] = tuple(_resolve(base / entry) for entry in entries)
        return cls(**kinds)

    @classmethod
    def unrestricted(cls) -> "ServiceRoots":
        root = (Path("/"),)
        return cls(root, root, root, root)

    def adding(self, **extra: Iterable[str | Path]) -> "ServiceRoots":
        """These roots plus ``extra`` folders per kind (a service's own work folder)."""
        changes = {}
        for kind, paths in extra.items():
            if kind not in KINDS:
                raise ValueError(f"unknown root kind {kind!r}")
            changes[kind] = getattr(self, kind) + tuple(_resolve(Path(p)) for p in paths)
        return replace(self, **changes)

    def describe(self, kind: str) -> str:
        return ", ".join(str(p) for p in getattr(self, kind)) or "none"

    # ---- checks: each returns the resolved path or raises ConfigError naming ``field``

    def check(self, kind: str, field: str, value: str | Path) -> Path:
        text = str(value)
        if not text or "\x00" in text:
            raise ConfigError(f"{field}: not a usable path ({_quote(text)})")
        path = _resolve(Path(text).expanduser())
        if not any(_within(path, root) for root in getattr(self, kind)):
            raise ConfigError(f"{field}: {_quote(text)} is outside the service's {kind} roots "
                              f"({self.describe(kind)}; set {ENV_VARS[kind]})")
        return path

    def check_storage_url(self, field: str, url: str | None) -> None:
        """``sqlite:///PATH`` must be under the storage roots; server URLs (postgresql, mysql) are fine."""
        if not url:
            return
        if url.startswith("sqlite:"):
            path = url[len("sqlite:"):]
            if path in ("", "//", "///:memory:", "//:memory:"):
                return
            if not path.startswith("///"):
                raise ConfigError(f"{field}: expected sqlite:///PATH (got {_quote(url)})")
            self.check("storage", field, path[3:].split("?", 1)[0])

    def check_tracking_uri(self, field: str, uri: str | None) -> None:
        """An MLflow tracking URI: ``sqlite:`` under storage, ``file:`` or a bare path under results."""
        if not uri:
            return
        if uri.startswith("sqlite:"):
            self.check_storage_url(field, uri)
        elif uri.startswith("file:"):
            self.check("results", field, urllib.parse.urlsplit(uri).path or ".")
        elif "://" not in uri and not uri.startswith(("databricks", "uc:")):
            self.check("results", field, uri)

    def check_model(self, field: str, name: str) -> None:
        """A model given as a folder (absolute, ``./``, ``~`` or existing) must be under the data roots;
        a model name (``smollm2-135m``, a hub id) is not a path."""
        if not name:
            return
        looks_like_path = name.startswith(("/", ".", "~")) or os.path.exists(name)
        if looks_like_path:
            self.check("data", field, name)

    def check_setting(self, key: str, value: Any, field: str | None = None) -> None:
        """One training-config key's value, if ``key`` is a path field (see ``PATH_FIELDS``)."""
        kind = PATH_FIELDS.get(key)
        if kind is None or value is None:
            return
        field = field or key
        if kind == "uri":
            self.check_tracking_uri(field, str(value))
        elif kind == "model":
            self.check_model(field, str(value))
        else:
            self.check(kind, field, str(value))

    def check_run_config(self, config: Any, prefix: str = "") -> None:
        """Every path field of a validated training config (``spelltransfer.train.config.RunConfig``)."""
        training = config.training
        values = {
            "training.data_dir": training.data_dir,
            "training.plot_dir": training.plot_dir,
            "training.output_root": training.output_root,
            "training.tracking.wandb.dir": training.tracking.wandb.dir,
            "training.tracking.mlflow.tracking_uri": training.tracking.mlflow.tracking_uri,
            "model.name": config.model.name,
        }
        for key, value in values.items():
            self.check_setting(key, value, f"{prefix}{key}")


def _resolve(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
