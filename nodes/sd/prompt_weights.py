"""Prompt emphasis, read as ComfyUI reads it: a prompt becomes (text, weight) segments, in order.

- `(text)` weighs 1.1 times what surrounds it, so `((text))` weighs 1.21; `(text:1.5)` weighs 1.5 whatever
  surrounds it (the number after the group's last colon; when it is not a number, the colon is text).
- `\\(` and `\\)` are literal brackets.
- Brackets pair up as a depth counter says, read left to right. A `(` that never closes starts a segment that
  runs to the end of its enclosing group; it is text unless that text happens to end with `)`. A `)` at the top
  level with nothing open makes the depth negative, and until the depth is back at zero brackets are text.
- Segments are not merged: each is tokenized on its own, and a short one is kept whole when the prompt is cut into
  75-token chunks (see `text_encoding`).

One scan pairs the brackets and finds the top-level groups; the segments are then read with an explicit stack
and bisection over the bracket and colon positions, so the time is linear (up to a log) in the prompt's length
however deep its brackets nest or however many are unmatched.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

DEFAULT_EMPHASIS = 1.1
# Escaped brackets are swapped for control characters while the brackets are paired, then swapped back.
_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))
_BRACKET = re.compile(r"[()]")


def parse_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """The prompt's (text, weight) segments, in order; empty segments are left out."""
    marked = text
    for escaped, marker in _ESCAPES:
        marked = marked.replace(escaped, marker)
    prompt = _Brackets(marked)
    segments: list[tuple[str, float]] = []
    for start, end, is_group in prompt.top_level():
        if is_group:
            prompt.read_group(start, end, weight, segments)
        else:
            segments.append((marked[start:end + 1], weight))
    return [(_unescape(t), w) for t, w in segments if t]


def _unescape(text: str) -> str:
    for escaped, marker in _ESCAPES:
        text = text.replace(marker, escaped[-1])
    return text


@dataclass
class _Frame:
    pos: int  # next character to read
    stop: int  # end of the range (exclusive)
    weight: float


class _Brackets:
    """A prompt with its brackets paired, read into segments."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.brackets = [m.start() for m in _BRACKET.finditer(text)]
        self.colons = [i for i, ch in enumerate(text) if ch == ":"] if ":" in text else []
        self.partner: dict[int, int] = {}
        self._top: list[tuple[int, int, bool]] = []
        self._pair_brackets()

    def _pair_brackets(self) -> None:
        """Pair brackets, and split the top level into text spans and groups (start, end inclusive, is_group)."""
        depth, open_at, text_from, item_from = 0, [], 0, -1
        for i in self.brackets:
            if self.text[i] == "(":
                if depth == 0:
                    if i > text_from:
                        self._top.append((text_from, i - 1, False))
                    item_from = i
                if depth >= 0:
                    open_at.append(i)
                depth += 1
            else:
                depth -= 1
                if depth >= 0 and open_at:
                    self.partner[open_at.pop()] = i
                if depth == 0:
                    self._top.append((item_from, i, True))
                    text_from = i + 1
                    item_from = -1
        end = len(self.text) - 1
        if item_from >= 0:  # an item that never closed runs to the end
            self._top.append((item_from, end, self._looks_grouped(item_from, end)))
        elif text_from <= end:
            self._top.append((text_from, end, False))

    def top_level(self) -> list[tuple[int, int, bool]]:
        return self._top

    def _looks_grouped(self, start: int, end: int) -> bool:
        return end > start and self.text[start] == "(" and self.text[end] == ")"

    def read_group(self, start: int, end: int, weight: float, out: list[tuple[str, float]]) -> None:
        """Append the segments of the group text[start..end] (its brackets included) to `out`."""
        stack = [self._enter(start, end, weight)]
        while stack:
            frame = stack[-1]
            if frame.pos >= frame.stop:
                stack.pop()
                continue
            child = self.text.find("(", frame.pos, frame.stop)
            if child < 0:
                child = frame.stop
            if child > frame.pos:
                out.append((self.text[frame.pos:child], frame.weight))
                frame.pos = child
                continue
            close = self.partner.get(child, frame.stop)
            close = close if close < frame.stop else frame.stop - 1  # unclosed: to the end of the range
            frame.pos = close + 1
            if self._looks_grouped(child, close):
                stack.append(self._enter(child, close, frame.weight))
            else:
                out.append((self.text[child:close + 1], frame.weight))

    def _enter(self, start: int, end: int, outer: float) -> _Frame:
        """The frame reading the inside of group text[start..end], at the group's weight."""
        colon = self._last_colon(start + 1, end)
        if colon is not None:
            explicit = _number(self.text[colon + 1:end])
            if explicit is not None:
                return _Frame(start + 1, colon, explicit)
        return _Frame(start + 1, end, outer * DEFAULT_EMPHASIS)

    def _last_colon(self, lo: int, hi: int) -> int | None:
        """The last colon in text[lo:hi] if it is not the first character and no bracket follows it there."""
        k = bisect.bisect_left(self.colons, hi) - 1
        if k < 0 or self.colons[k] <= lo:
            return None
        colon = self.colons[k]
        b = bisect.bisect_right(self.brackets, colon)
        if b < len(self.brackets) and self.brackets[b] < hi:
            return None  # a bracket after the colon: what follows it is not a number
        return colon


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None

