"""YAML with bounded alias expansion, for front matter written by anyone.

YAML aliases make a DAG: nine anchors of nine aliases each ("billion laughs") take a few hundred
bytes and load instantly, but anything that walks the result (JSON for the index, the site's
templates, `str()`) visits 9⁹ values and runs out of memory. `load` composes the document first,
counts the values it expands to without expanding it (each node once, memoised), and refuses a
document over `MAX_VALUES` — or one whose aliases loop — with a `MarkedYAMLError` that names the
line, so callers report it like any YAML error. Documents without aliases are loaded as before.

Loaded documents are memoised by their text (a copy is returned: callers mutate front matter), as a
`mkdocs serve` rebuild reads the front matter of every unchanged note again.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

MAX_VALUES = 10_000  # values a front matter may expand to: real ones have tens


class AliasBombError(yaml.MarkedYAMLError):
    """The document expands, through aliases, to more than `MAX_VALUES` values, loops or nests too deeply."""


MEMO_SIZE = 4096
_MEMO: dict[tuple[str, type[Any], int], Any] = {}


def front_matter_line(error: yaml.YAMLError, default: int = 0) -> int:
    """The file's line where PyYAML stopped reading a front matter (its text starts after the
    opening ---), or `default` when the error carries no place."""
    mark = getattr(error, "problem_mark", None)
    return mark.line + 2 if mark is not None else default


def load(text: str, loader: type[Any] = yaml.SafeLoader, max_values: int = MAX_VALUES) -> Any:
    """`yaml.load(text, loader)`, refusing documents that expand to more than `max_values` values."""
    key = (text, loader, max_values)
    if key not in _MEMO:
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.clear()
        _MEMO[key] = _load(text, loader, max_values)  # an error is raised, never kept
    return copy.deepcopy(_MEMO[key])


def _load(text: str, loader: type[Any], max_values: int) -> Any:
    instance = loader(text)
    try:
        node = instance.get_single_node()
        if node is None:
            return None
        if "*" in text:  # no alias, no expansion: skip the count
            _check(node, max_values)
        return instance.construct_document(node)
    except RecursionError:
        raise AliasBombError(problem="values nested too deeply", problem_mark=None) from None
    finally:
        instance.dispose()


def _check(root: yaml.Node, limit: int) -> None:
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise AliasBombError(
                problem="an alias refers to the node that contains it (a loop)", problem_mark=node.start_mark
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        if total > limit:
            raise AliasBombError(
                problem=f"aliases expand it to more than {limit:,} values (a YAML bomb?)",
                problem_mark=node.start_mark,
            )
        return total

    size(root)
