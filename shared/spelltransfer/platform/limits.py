"""Bounds on what one request may carry, checked at the API before anything is stored or started.

An override becomes one argument of the training process; the kernel refuses a single argument
over 128 KiB (``MAX_ARG_STRLEN``) and a whole command line over about 2 MB, and a request that
got past the API with one would fail to start forever. So every string and list a request holds
is bounded here, far below those limits, and the error names the field and the limit.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from spelltransfer.errors import ConfigError

MAX_OVERRIDE_BYTES = 4096        # one key=value override (the longest shipped one is ~150)
MAX_OVERRIDES = 256              # overrides in one trial (a spec's fixed ones plus its parameters)
MAX_OVERRIDES_TOTAL_BYTES = 65536
MAX_PATH_BYTES = 4096            # PATH_MAX
MAX_LABELS = 32
MAX_LABEL_BYTES = 256            # a label's key or value
MAX_SPEC_BYTES = 262144          # a sweep spec's YAML text
MAX_EXTRA_ARGS = 16
MAX_EXTRA_ARG_BYTES = 256
MAX_ADDRESS_BYTES = 256


def _size(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def check_text(field: str, text: str, limit: int) -> None:
    size = _size(text or "")
    if size > limit:
        raise ConfigError(f"{field}: {size} bytes, over the limit of {limit} bytes")


def check_overrides(field: str, overrides: Iterable[str]) -> None:
    overrides = list(overrides)
    if len(overrides) > MAX_OVERRIDES:
        raise ConfigError(f"{field}: {len(overrides)} overrides, over the limit of {MAX_OVERRIDES}")
    total = 0
    for index, assignment in enumerate(overrides):
        size = _size(assignment)
        if size > MAX_OVERRIDE_BYTES:
            key = assignment.partition("=")[0][:80]
            raise ConfigError(f"{field}[{index}] ({key}): {size} bytes, over the limit of "
                              f"{MAX_OVERRIDE_BYTES} bytes per override")
        total += size
    if total > MAX_OVERRIDES_TOTAL_BYTES:
        raise ConfigError(f"{field}: {total} bytes in all, over the limit of {MAX_OVERRIDES_TOTAL_BYTES} bytes")


def check_labels(field: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"{field}: {len(labels)} labels, over the limit of {MAX_LABELS}")
    for key, value in labels.items():
        check_text(f"{field} key", key, MAX_LABEL_BYTES)
        check_text(f"{field}[{key[:40]}]", value, MAX_LABEL_BYTES)
