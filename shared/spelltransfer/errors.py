"""Typed errors raised where a problem is detected; CLI and services map them to exits/status codes.

Each error names what was wrong (a field, a file and line, a model name) and how to fix it.
"""


class SpellTransferError(Exception):
    """Base class: a user-facing problem with a clear message (no traceback needed)."""


class ConfigError(SpellTransferError):
    """A configuration value is invalid; the message names the field."""


class DataError(SpellTransferError):
    """A data file is missing, malformed (the message names file and line) or empty."""


class ModelNotFoundError(SpellTransferError):
    """A model name or path cannot be resolved offline."""
