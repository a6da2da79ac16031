"""How a prompt shows the word it asks about: bare (``garden``), in single quotes (``'garden'``)
or in double quotes (``"garden"``), the three forms people write.

Quoting changes the tokenization (" garden" -> " garden"; " 'garden'" -> " '", "g", "arden", "'"),
so a model trained only on bare words can fail on the quoted ones. Each example draws its
presentation from its own seeded stream (``Task``), so the template, separator, position and
letter an example asks about do not depend on it.
"""

from __future__ import annotations

PRESENTATIONS: dict[str, str] = {"bare": "{}", "single": "'{}'", "double": '"{}"'}


def present(word: str, presentation: str) -> str:
    """``word`` as the prompt shows it."""
    try:
        return PRESENTATIONS[presentation].format(word)
    except KeyError:
        raise ValueError(f"presentation {presentation!r} unknown; use one of {', '.join(PRESENTATIONS)}") from None
