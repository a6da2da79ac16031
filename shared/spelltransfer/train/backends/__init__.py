"""Training backends behind one interface; ``get_backend('auto')`` picks Unsloth on CUDA when installed."""

from __future__ import annotations

import importlib.util

from spelltransfer.errors import ConfigError
from spelltransfer.train.backends.base import Backend, LoadedModel


def unsloth_available() -> bool:
    """CUDA and the unsloth package are both present (checked without importing unsloth)."""
    if importlib.util.find_spec("unsloth") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend_name(name: str) -> str:
    if name == "auto":
        return "unsloth" if unsloth_available() else "hf"
    if name not in ("hf", "unsloth"):
        raise ConfigError(f"training.backend: must be one of auto, hf, unsloth (got {name!r})")
    return name


def get_backend(name: str) -> Backend:
    name = resolve_backend_name(name)
    if name == "unsloth":
        from spelltransfer.train.backends.unsloth import UnslothBackend

        return UnslothBackend()
    from spelltransfer.train.backends.hf import HFBackend

    return HFBackend()


__all__ = ["Backend", "LoadedModel", "get_backend", "resolve_backend_name", "unsloth_available"]
