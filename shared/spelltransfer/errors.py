"""Typed errors raised where a problem is detected; CLI and services map them to exits/status codes.

Each error names what was wrong (a field, a file and line, a model name) and how to fix it, and
quotes what the user gave only briefly (``short_repr``, ``shown_key``, ``format_validation_error``).
"""

import re as _re
import reprlib as _reprlib

from spelltransfer.limits import SHOWN_PROBLEMS, SHOWN_VALUE_CHARS


class SpellTransferError(Exception):
    """Base class: a user-facing problem with a clear message (no traceback needed)."""


class ConfigError(SpellTransferError):
    """A configuration value is invalid; the message names the field."""


class DataError(SpellTransferError):
    """A data file is missing, malformed (the message names file and line) or empty."""


class ModelNotFoundError(SpellTransferError):
    """A model name or path cannot be resolved offline."""


# ----------------------------------------------------------------------------- bounded messages
#
# An error may quote what the user gave, but never all of it: a value is cut to
# SHOWN_VALUE_CHARS (its repr is never built whole, so a huge or self-repeating value costs
# nothing), and a key that is not a plain name (``root:$6$...:20228:...`` when /etc/shadow is
# read as YAML) is described, not shown, so a config error cannot echo a file's content.

_PLAIN_KEY = _re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class _HeadRepr(_reprlib.Repr):
    """reprlib's bounded repr, strings cut at the end (reprlib keeps both ends of a long string)."""

    def repr_str(self, value: str, level: int) -> str:
        return repr(value[:self.maxstring]) + ("…" if len(value) > self.maxstring else "")


_repr = _HeadRepr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 2, 4, 4, 4, 4
_repr.maxfrozenset = _repr.maxdeque = _repr.maxarray = 4
_repr.maxstring = _repr.maxother = SHOWN_VALUE_CHARS
_repr.maxlong = 40


def shorten(text: str, limit: int = SHOWN_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + "…"


def short_repr(value: object, limit: int = SHOWN_VALUE_CHARS) -> str:
    """A repr of at most ``limit`` characters, built without the full repr (bounded in time and memory)."""
    try:
        return shorten(_repr.repr(value), limit)
    except Exception:  # noqa: BLE001 - a repr that fails (or an int too long to print) is described
        return f"<{type(value).__name__}>"


def shown_key(key: object, limit: int = SHOWN_VALUE_CHARS) -> str:
    """A mapping key as an error may show it: a plain name (letters, digits, ``_.-``) as is, else described."""
    text = key if isinstance(key, str) else str(key) if isinstance(key, (int, float, bool)) or key is None else None
    if text is not None and len(text) <= limit and _PLAIN_KEY.fullmatch(text):
        return text
    length = f"{len(text)} characters" if text is not None else type(key).__name__
    return f"<key not shown: {length}>"


_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def describe_problem(error: dict) -> str:
    """One pydantic error (``ValidationError.errors()`` item) in words, the value quoted briefly."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUNDS:
        symbol, name = _BOUNDS[kind]
        message = f"must be {symbol} {short_repr(ctx.get(name))}"
    elif kind == "extra_forbidden":
        return "unknown key"
    elif kind == "literal_error":
        message = f"must be one of {shorten(str(ctx.get('expected')), 4 * SHOWN_VALUE_CHARS)}"
    elif kind == "missing":
        return "required"
    else:
        message = error["msg"].removeprefix("Value error, ")
        message = shorten(message[0].lower() + message[1:] if message else message, 4 * SHOWN_VALUE_CHARS)
    value = error.get("input")
    return message if isinstance(value, dict) else f"{message} (got {short_repr(value)})"


def _is_branch_tag(part: object) -> bool:
    """Pydantic adds list indexes and the union member (``bool``, ``literal['auto']``,
    ``function-after[...]``) to locations; they are dropped so one field reads as one location."""
    text = str(part)
    return isinstance(part, int) or "[" in text or text in {"bool", "int", "float", "str", "list", "dict"}


def format_validation_error(error, root: str = "config") -> str:
    """A pydantic ``ValidationError`` as ``field: problem; field: problem`` — every bad field by its
    dotted path (keys that are not plain names described, not shown), each value cut short, at most
    SHOWN_PROBLEMS locations. ``root`` names a problem of the whole object."""
    by_location: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        location = ".".join(shown_key(p) for p in item["loc"] if not _is_branch_tag(p))
        message = describe_problem(item)
        if not location and _re.match(r"[A-Za-z0-9_.\-]+: ", message):
            location, message = message.split(": ", 1)  # a model check that names its field
        by_location.setdefault(location or root, []).append(message)
    lines = [f"{location}: {' or '.join(dict.fromkeys(messages))}" for location, messages in by_location.items()]
    more = len(lines) - SHOWN_PROBLEMS
    return "; ".join(lines[:SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
