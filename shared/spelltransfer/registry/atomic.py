"""The registry's JSON files (manifests, state, provenance): indent 2, sorted keys, folder created.

Written with ``spelltransfer.atomic`` (temp file in the same folder + fsync + os.replace): readers see old or new.
"""

from __future__ import annotations

from pathlib import Path

from spelltransfer import atomic


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json_atomic(path, payload, indent=2, sort_keys=True)
