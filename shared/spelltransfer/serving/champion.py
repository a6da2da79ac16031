"""Fetch the registry's champion adapter for serving, through the registry's own command.

Serving never imports registry internals: it runs ``spelltransfer registry pull NAME@champion
--out DIR`` (the registry engineer's contract) and expects a PEFT adapter folder in ``DIR``
(or ``DIR/final``/``DIR/adapter``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spelltransfer.errors import ConfigError, ModelNotFoundError
from spelltransfer.run_folder import RunFolder


def find_adapter_folder(root: Path) -> Path:
    for candidate in (root, RunFolder(root).final, root / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    found = sorted(root.rglob("adapter_config.json"))
    if found:
        return found[0].parent
    raise ModelNotFoundError(f"registry pull wrote no PEFT adapter (adapter_config.json) under {root}")


def pull_champion(name: str, out_dir: Path, alias: str = "champion", timeout_s: float = 600) -> Path:
    """``spelltransfer registry pull NAME@ALIAS --out DIR``; returns the adapter folder."""
    if not name or "@" in name:
        raise ConfigError(f"--champion '{name}': give the registered model name only (the alias is '{alias}')")
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "spelltransfer.cli", "registry", "pull", f"{name}@{alias}", "--out", str(out_dir)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        raise ModelNotFoundError(f"registry pull {name}@{alias} took over {timeout_s:.0f} s") from error
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise ModelNotFoundError(f"registry pull {name}@{alias} failed (exit {completed.returncode}): "
                                 f"{' '.join(detail)}; serve a local adapter with --adapter NAME=PATH instead")
    return find_adapter_folder(out_dir)
