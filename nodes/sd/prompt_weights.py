"""Prompt emphasis: `(word)` weighs 1.1, `(word:1.5)` weighs 1.5, nesting multiplies, `\\(` is a literal bracket.

The syntax and meaning node-graph users know: only round brackets carry weight; an unmatched bracket is text.
"""
from __future__ import annotations

DEFAULT_EMPHASIS = 1.1


def parse_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs, adjacent runs of equal weight merged."""
    runs: list[tuple[str, float]] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "()\\":
            buf.append(text[i + 1])
            i += 2
            continue
        close = _matching_close(text, i) if ch == "(" else -1
        if close < 0:
            buf.append(ch)
            i += 1
            continue
        _flush(runs, buf, weight)
        inner, factor = _split_weight(text[i + 1:close])
        runs.extend(parse_weights(inner, weight * factor))
        i = close + 1
    _flush(runs, buf, weight)
    return _merge(runs)


def _matching_close(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return i
        i += 1
    return -1


def _split_weight(inner: str) -> tuple[str, float]:
    """`text:1.3` -> ("text", 1.3) when the last top-level colon is followed by a number; else 1.1."""
    depth, colon, i = 0, -1, 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\":
            i += 2
            continue
        depth += (ch == "(") - (ch == ")")
        if ch == ":" and depth == 0:
            colon = i
        i += 1
    if colon >= 0:
        try:
            return inner[:colon], float(inner[colon + 1:].strip())
        except ValueError:
            pass
    return inner, DEFAULT_EMPHASIS


def _flush(runs: list[tuple[str, float]], buf: list[str], weight: float) -> None:
    if buf:
        runs.append(("".join(buf), weight))
        buf.clear()


def _merge(runs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    for text, weight in runs:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        elif text:
            merged.append((text, weight))
    return merged
