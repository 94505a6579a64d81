"""JSON read and written piece by piece, so a large document never holds the GIL in one long call.

`json.loads` of an 8 MB prompt holds the GIL for a tenth of a second or more, and the server's event loop, which
needs the GIL to answer anyone, waits all that time. Reading an object member by member (and the members of the
objects inside it, to a given depth) gives the other threads a turn between members. The result is the one
`json.loads` gives.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

_SEPARATOR = re.compile(r"\s*([:,}])\s*")
_SPACE = re.compile(r"\s*")


def dumps_members(value: dict[str, Any], dump: Callable[[Any], str] = json.dumps) -> str:
    """An object as JSON text, written member by member."""
    return "{" + ", ".join(f"{json.dumps(str(key))}: {dump(member)}" for key, member in value.items()) + "}"


def loads(text: str, *, depth: int = 1, decoder: json.JSONDecoder | None = None) -> Any:
    """Parse JSON text; objects down to `depth` levels are read member by member."""
    decoder = decoder or json.JSONDecoder()
    value, end = _value(text, _SPACE.match(text, 0).end(), depth, decoder)
    if _SPACE.match(text, end).end() != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _value(text: str, pos: int, depth: int, decoder: json.JSONDecoder) -> tuple[Any, int]:
    if depth < 0 or not text.startswith("{", pos):
        return decoder.raw_decode(text, pos)
    members: dict[str, Any] = {}
    pos = _SPACE.match(text, pos + 1).end()
    if text.startswith("}", pos):
        return members, pos + 1
    while True:
        if not text.startswith('"', pos):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
        key, pos = decoder.raw_decode(text, pos)
        pos = _expect(text, pos, ":")
        members[key], pos = _value(text, pos, depth - 1, decoder)
        separator = _SEPARATOR.match(text, pos)
        if separator is None or separator.group(1) == ":":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = separator.end()
        if separator.group(1) == "}":
            return members, pos


def _expect(text: str, pos: int, char: str) -> int:
    separator = _SEPARATOR.match(text, pos)
    if separator is None or separator.group(1) != char:
        raise json.JSONDecodeError(f"Expecting {char!r} delimiter", text, pos)
    return separator.end()
