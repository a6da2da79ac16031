"""Limits on what the package reads, defined once; every refusal names the limit it hit.

A config, spec or data file from a careless or hostile user must fail fast with a one-line
error, never hang a process or grow it by gigabytes. ``spelltransfer.safe_yaml`` enforces the
YAML limits, ``read_lines`` the ones on JSONL/TSV data and eval files, and
``spelltransfer.errors`` the length of anything an error message shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

MIB = 1024 * 1024

# YAML configs and sweep specs (spelltransfer.safe_yaml)
YAML_MAX_BYTES = 1 * MIB        # a config or spec file / text
YAML_MAX_NODES = 100_000        # scalars + lists + mappings, an alias counting as the whole node it repeats
YAML_MAX_DEPTH = 64             # nested lists/mappings

# Example files: train/validation/test JSONL, a user's eval JSONL or TSV (spelltransfer.data.io)
DATA_MAX_LINE_BYTES = 1 * MIB   # one example is a few hundred bytes
DATA_MAX_FILE_BYTES = 512 * MIB  # ~1.5 million examples

# Error messages (spelltransfer.errors)
SHOWN_VALUE_CHARS = 80          # a value or key quoted in an error is cut to this
SHOWN_PROBLEMS = 10             # at most this many problems listed in one error


def size_text(n: int) -> str:
    """``1048576`` -> ``1 MiB`` (limits are named in errors in these units)."""
    for unit, size in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def read_lines(path: str | os.PathLike, max_line_bytes: int = DATA_MAX_LINE_BYTES,
               max_file_bytes: int = DATA_MAX_FILE_BYTES) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 text file, read line by line within the limits.

    A file larger than ``max_file_bytes`` is refused before reading; a line longer than
    ``max_line_bytes`` is refused after reading at most that much of it. Lines are split as
    ``str.splitlines`` splits them (numbering included). Raises DataError naming file, line and limit.
    """
    from spelltransfer.errors import DataError

    path = Path(path)
    size = path.stat().st_size
    if size > max_file_bytes:
        raise DataError(f"{path}: file is {size} bytes, over the {size_text(max_file_bytes)} limit on data files")
    number, total = 0, 0
    with open(path, "rb") as handle:
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            total += len(raw)
            if total > max_file_bytes:  # grew while being read
                raise DataError(f"{path}: over the {size_text(max_file_bytes)} limit on data files")
            if len(raw) > max_line_bytes and not (len(raw) == max_line_bytes + 1 and raw.endswith(b"\n")):
                raise DataError(f"{path}:{number + 1}: line longer than the {size_text(max_line_bytes)} limit on one line")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number + 1}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            for piece in text.splitlines():
                number += 1
                yield number, piece
