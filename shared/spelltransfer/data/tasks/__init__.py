"""One module per task; ``TASKS`` maps a task name to its class.

Imported lazily (PEP 562) so ``python -m spelltransfer.data.tasks.spelling`` runs its module
once, as ``__main__``, rather than also importing it through this package first.
"""

from __future__ import annotations

import importlib

_MODULES = {"spelling": "Spelling", "position": "Position", "count": "Count",
            # format tasks over lists of whole words (transfer mode format_aux); never evaluated
            "list_position": "ListPosition", "list_count": "ListCount",
            # the spell-first bridge (tasks/spell_echo.py); never evaluated
            "spell_echo": "SpellEcho"}


def get_task(name: str):
    """The task class for ``name`` ("spelling", "position" or "count")."""
    from spelltransfer.errors import DataError

    if name not in _MODULES:
        raise DataError(f"task '{name}' unknown; use one of {', '.join(_MODULES)}")
    return getattr(importlib.import_module(f"{__name__}.{name}"), _MODULES[name])


def __getattr__(attr: str):
    if attr == "TASKS":  # the evaluated tasks; the list tasks are training-only format tasks
        return {name: get_task(name) for name in ("spelling", "position", "count")}
    if attr in _MODULES.values():
        return get_task(next(k for k, v in _MODULES.items() if v == attr))
    if attr in ("Task", "seed_for"):
        return getattr(importlib.import_module(f"{__name__}.base"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = ["TASKS", "get_task", "Task", "seed_for", "Spelling", "Position", "Count"]
