"""What the one-shot GPU checks (fused_gradcheck.py, graphs_gradcheck.py) share.

The GPU machine has torch/transformers/triton but not pydantic, so the packed modules are loaded
without the ``spelltransfer.train`` / ``.packed`` package inits (trainer.py imports pydantic).
Rows go to stdout as JSON lines and, when ``$OUT`` is set, to ``$OUT/<name>.json`` after each one,
so a run cut by its time limit still brings back what it measured.
"""

from __future__ import annotations

import json
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path


def import_packed() -> types.SimpleNamespace:
    """The packed modules (attention, batches, chunk_loss, fused, graphs, multi_lora, optimizer)."""
    import importlib.util

    spec = importlib.util.find_spec("spelltransfer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("spelltransfer is not importable: run with PYTHONPATH=$PWD/shared")
    root = Path(list(spec.submodule_search_locations)[0])
    for name, sub in (("spelltransfer.train", "train"), ("spelltransfer.train.packed", "train/packed")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(root / sub)]
            sys.modules[name] = module
    from spelltransfer.train.packed import attention, batches, chunk_loss, fused, graphs, multi_lora, optimizer

    return types.SimpleNamespace(attention=attention, batches=batches, chunk_loss=chunk_loss, fused=fused,
                                 graphs=graphs, multi_lora=multi_lora, optimizer=optimizer)


class Rows(list):
    """Result rows: each ``emit`` prints one JSON line and rewrites ``$OUT/<file_name>``."""

    def __init__(self, file_name: str):
        super().__init__()
        self.out_dir = os.environ.get("OUT")
        self.file_name = file_name

    def emit(self, row: dict) -> None:
        self.append(row)
        print(json.dumps(row), flush=True)
        if self.out_dir:
            Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            Path(self.out_dir, self.file_name).write_text(json.dumps(list(self), indent=1) + "\n")


def environment(torch, device: str, **extra) -> dict:
    """The header row: torch, device (name, capability, CUDA), triton and transformers versions."""
    header = {"torch": torch.__version__, "device": device, "python": sys.version.split()[0], **extra}
    if device == "cuda":
        header.update(name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                      cuda=torch.version.cuda)
    try:
        import triton

        header["triton"] = triton.__version__
    except ImportError:
        header["triton"] = None
    import transformers

    header["transformers"] = transformers.__version__
    return header


def rel(a, b) -> float:
    """|a - b| / |b| (|a - b| where b is 0)."""
    den = float(b.norm())
    return float((a - b).norm()) / den if den else float((a - b).norm())


def sig(x: float) -> float:
    """Four significant digits, for the rows."""
    return float(f"{x:.4g}")


def has_config(module, key: str) -> bool:
    """Whether a torch config module (inductor, functorch) has the dotted ``key``."""
    return key in getattr(module, "_config", {})


def _configs():
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config

    return inductor_config, functorch_config


def unsupported(spec: dict) -> str | None:
    """Why this torch cannot run a variant (a config it patches does not exist here), or None."""
    inductor_config, functorch_config = _configs()
    missing = ([k for k in spec["inductor"] if not has_config(inductor_config, k)]
               + [k for k in spec["functorch"] if not has_config(functorch_config, k)])
    return f"this torch has no config {missing}" if missing else None


@contextmanager
def patched(torch, spec: dict):
    """A variant's compile settings: a fresh Dynamo cache, cleared counters, its inductor/functorch patches."""
    from torch._dynamo.utils import counters

    inductor_config, functorch_config = _configs()
    torch._dynamo.reset()
    counters.clear()
    with inductor_config.patch(spec["inductor"]), functorch_config.patch(spec["functorch"]):
        yield
