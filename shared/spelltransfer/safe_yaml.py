"""The one way this package reads YAML (configs, sweep specs, resolved run configs).

``yaml.SafeLoader`` (the C loader when libyaml is there), narrowed to what a config needs:

* JSON-like values only: null, booleans, ints, floats, strings, lists, mappings. Any other tag
  (``!!python/...``, ``!!binary``, ``!!set``, ``!custom``, ...) is refused, and dates stay strings.
  Floats are read as YAML 1.2 reads them too: ``1e-4`` is a float (PyYAML's YAML 1.1 rules make
  it the string ``"1e-4"``).
* A duplicated mapping key is refused, naming the key and both lines (YAML keeps the last one silently).
* At most ``YAML_MAX_BYTES`` of text, ``YAML_MAX_NODES`` nodes and ``YAML_MAX_DEPTH`` levels of
  nesting. An alias counts as the whole node it repeats, so a ~600-byte "billion laughs"
  (``&a [lol, ...]``, ``&b [*a, *a, ...]``, ...) is refused after a few thousand events, before
  anything is built; an alias to an anchor that is still open (a recursive structure) is refused.

Every refusal is a ConfigError (``YamlError``) naming the source, the line and the limit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode

from spelltransfer.errors import ConfigError, shorten, short_repr, shown_key
from spelltransfer.limits import YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES, size_text

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader

__all__ = ["YamlError", "YamlSyntaxError", "load_yaml", "load_yaml_file", "read_yaml_text"]


class YamlError(ConfigError):
    """YAML that is refused (a limit, a tag, a duplicate key) or unreadable; names source and line."""


class YamlSyntaxError(YamlError):
    """Text that is not YAML at all."""


_TAG = "tag:yaml.org,2002:"
STANDARD_TAGS = frozenset(_TAG + name for name in ("null", "bool", "int", "float", "str", "seq", "map"))
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class _Loader(_BaseLoader):
    """SafeLoader with only the standard JSON-like tags and duplicate-key checks."""

    yaml_constructors = {tag: ctor for tag, ctor in SafeConstructor.yaml_constructors.items()
                         if tag in STANDARD_TAGS or tag is None}   # None: an unknown tag -> ConstructorError
    yaml_multi_constructors: dict = {}
    yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag in STANDARD_TAGS]
                               for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if not isinstance(node, MappingNode):  # pragma: no cover - only called for mappings
            raise yaml.constructor.ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
        mapping: dict = {}
        lines: dict = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                seen = key in mapping
            except TypeError:
                raise YamlError(f"{self.name_of_source}:{line}: a mapping key must be a plain value, "
                                f"not a {type(key).__name__}") from None
            if seen:
                raise YamlError(f"{self.name_of_source}:{line}: duplicate key {shown_key(key)!s} "
                                f"(first at line {lines[key]}); give each key once")
            mapping[key] = self.construct_object(value_node, deep=deep)
            lines[key] = line
        return mapping

    name_of_source = "YAML"


_Loader.add_implicit_resolver(_TAG + "float", _FLOAT_12, list("-+0123456789."))


def _where(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}" if mark is not None else source


def _check_events(text: str, source: str) -> None:
    """One pass over the parser's events: tags, nesting and the expanded node count."""
    count = 0
    open_nodes: list[tuple[str | None, int]] = []   # (anchor, count before the node) of each open collection
    sizes: dict[str, int] = {}                       # anchor -> nodes it stands for, once closed
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            size = sizes.get(event.anchor)
            if size is None:
                raise YamlError(f"{_where(source, event.start_mark)}: alias *{shorten(str(event.anchor), 40)} refers to "
                                "an anchor that is not defined before it or contains the alias (recursive structures "
                                "are refused)")
            count += size
        elif isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if event.tag is not None and event.tag != "!" and event.tag not in STANDARD_TAGS:
                raise YamlError(f"{_where(source, event.start_mark)}: tag {shorten(event.tag, 60)!r} is not allowed "
                                "(only null, bool, int, float, str, lists and mappings)")
            count += 1
            if isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                open_nodes.append((event.anchor, count - 1))
                if len(open_nodes) > YAML_MAX_DEPTH:
                    raise YamlError(f"{_where(source, event.start_mark)}: nested more than {YAML_MAX_DEPTH} levels deep "
                                    "(the limit on YAML nesting)")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = count - before
        if count > YAML_MAX_NODES:
            raise YamlError(f"{_where(source, event.start_mark)}: more than {YAML_MAX_NODES} YAML nodes (the limit; "
                            "an alias counts as the whole node it repeats)")


def load_yaml(text: str, source: str = "YAML") -> Any:
    """Parse one YAML document (``None`` for an empty one) within the limits; YamlError names ``source``."""
    if not isinstance(text, str):
        raise YamlError(f"{source}: expected YAML text, got {type(text).__name__}")
    if len(text) > YAML_MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > YAML_MAX_BYTES:
        raise YamlError(f"{source}: over the {size_text(YAML_MAX_BYTES)} limit on YAML text")
    try:
        _check_events(text, source)
        loader = _Loader(text)
        loader.name_of_source = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except YamlError:
        raise
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "unreadable"
        raise YamlSyntaxError(f"{_where(source, mark)}: not valid YAML: {shorten(str(problem), 120)}") from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(f"{source}: not valid YAML: {shorten(str(error), 120)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:  # e.g. an int of 5000 digits
        raise YamlError(f"{source}: a value cannot be read ({type(error).__name__}: {short_repr(str(error))})") from None


def read_yaml_text(path: str | os.PathLike) -> str:
    """A YAML file's text, refused unread when it is over ``YAML_MAX_BYTES`` or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise YamlError(f"{path}: not a file")
    if path.stat().st_size > YAML_MAX_BYTES:
        raise YamlError(f"{path}: file is {path.stat().st_size} bytes, over the {size_text(YAML_MAX_BYTES)} limit on YAML files")
    with open(path, "rb") as handle:
        data = handle.read(YAML_MAX_BYTES + 1)
    if len(data) > YAML_MAX_BYTES:
        raise YamlError(f"{path}: over the {size_text(YAML_MAX_BYTES)} limit on YAML files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def load_yaml_file(path: str | os.PathLike) -> Any:
    """``load_yaml`` of a file's text (``read_yaml_text``), errors naming the file and line."""
    return load_yaml(read_yaml_text(path), source=str(path))
