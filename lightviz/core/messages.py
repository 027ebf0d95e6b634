"""Short, safe messages about user input: an error's first line, a bounded preview of a value,
and how deeply a JSON text nests (measured without parsing it).

>>> first_line(ValueError("bad value")), preview("x" * 100, 5)
('bad value', "'xxxx…")
"""

from __future__ import annotations

import re
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deeply `text`'s arrays and objects nest (brackets inside strings do not count),
    found in one linear pass without parsing.

    >>> json_depth('{"a": [1, {"b": "[[["}]}'), json_depth("[]" * 5), json_depth("3")
    (3, 1, 0)
    """
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def first_line(error: BaseException) -> str:
    """An error's message, one line of at most 200 characters."""
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def preview(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
