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
# Tasks whose class lives in another task's module: name -> (module, class).
_VARIANTS = {"list_letter_position": ("letter_lists", "ListLetterPosition"),
             "list_letter_count": ("letter_lists", "ListLetterCount"),
             "list_letter_position_lw": ("letter_lists", "ListLetterPositionLetterWording"),
             "list_letter_count_lw": ("letter_lists", "ListLetterCountLetterWording"),
             "list_count_balanced": ("list_count", "ListCountBalanced"),
             "spell_quoted": ("spell_echo", "SpellQuoted")}


def get_task(name: str):
    """The task class for ``name`` ("spelling", "position" or "count")."""
    from spelltransfer.errors import DataError

    if name in _VARIANTS:
        module, cls = _VARIANTS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    if name not in _MODULES:
        raise DataError(f"task '{name}' unknown; use one of {', '.join([*_MODULES, *_VARIANTS])}")
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
