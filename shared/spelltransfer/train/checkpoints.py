"""Checkpoints that survive kill -9: written to a temp folder, then renamed into place.

``DIR/checkpoints/step-N/`` holds the adapter (``adapter_config.json`` +
``adapter_model.safetensors``), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` (python, numpy,
torch and CUDA generators) and ``trainer_state.json`` (step, data position, early-stopping
state, eval history). ``manifest.json`` is written last with every file's size and sha256; a
folder whose manifest is missing or does not match is corrupt and skipped on resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from spelltransfer.atomic import staged_dir

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def capture_rng() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, trainer_state: dict) -> Checkpoint:
    """Write step-N atomically under ``root`` and return it."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    target = root / f"step-{step}"
    # A resumed run re-reaching a step replaces it: staged_dir moves the old one aside first.
    with staged_dir(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        torch.save(capture_rng(), staging / "rng.pt")
        (staging / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=1))
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(staging.iterdir()) if p.is_file()}
        (staging / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))
        for path in staging.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)
    return Checkpoint(step, target)


def list_checkpoints(root: Path) -> list[Checkpoint]:
    """step-N folders under ``root``, oldest first (temp folders ignored)."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_DIR.match(path.name)
        if match and path.is_dir():
            found.append(Checkpoint(int(match.group(1)), path))
    return sorted(found, key=lambda c: c.step)


def verify_checkpoint(checkpoint: Checkpoint) -> str | None:
    """None when intact, else why not."""
    manifest_path = checkpoint.path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json (write interrupted?)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        return f"unreadable manifest.json ({error})"
    for required in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json"):
        if required not in files:
            return f"manifest lacks {required}"
    for name, expected in files.items():
        path = checkpoint.path / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its sha256"
    return None


def latest_valid_checkpoint(root: Path) -> Checkpoint | None:
    """The newest intact checkpoint, warning about each corrupt one skipped."""
    for checkpoint in reversed(list_checkpoints(root)):
        problem = verify_checkpoint(checkpoint)
        if problem is None:
            return checkpoint
        log.warning("skipping corrupt checkpoint %s: %s", checkpoint.path, problem)
    return None


def load_checkpoint(checkpoint: Checkpoint, model, optimizer, scheduler) -> dict:
    """Restore adapter weights, optimizer, scheduler and RNG; return the trainer state."""
    import torch

    load_adapter_weights(checkpoint.path, model)
    optimizer.load_state_dict(torch.load(checkpoint.path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint.path / "scheduler.pt", weights_only=True))
    restore_rng(torch.load(checkpoint.path / "rng.pt", weights_only=False))
    return json.loads((checkpoint.path / "trainer_state.json").read_text())


def load_adapter_weights(adapter_dir: Path, model) -> None:
    """Copy LoRA weights from a saved adapter folder into the live PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"adapter in {adapter_dir} does not fit the model: unexpected keys {unexpected[:3]}")


def prune_checkpoints(root: Path, keep_last: int, keep_steps: set[int]) -> list[Path]:
    """Delete all but the newest ``keep_last`` and those in ``keep_steps`` (the best)."""
    checkpoints = list_checkpoints(root)
    newest = {c.step for c in checkpoints[-keep_last:]} if keep_last else set()
    removed = []
    for checkpoint in checkpoints:
        if checkpoint.step not in newest and checkpoint.step not in keep_steps:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
            removed.append(checkpoint.path)
    for leftover in [*root.glob(".step-*"), *root.glob(".old-step-*")]:  # left by a killed writer
        shutil.rmtree(leftover, ignore_errors=True)
    return removed
