"""Prompt emphasis: `(word)` weighs 1.1, `(word:1.5)` weighs 1.5, nesting multiplies, `\\(` is a literal bracket.

The syntax and meaning node-graph users know: only round brackets carry weight; an unmatched bracket is text.
Brackets are matched in one pass and the text is then read once, so the time is linear in the prompt's length
however many brackets are unmatched or nested.
"""
from __future__ import annotations

DEFAULT_EMPHASIS = 1.1


def parse_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs, adjacent runs of equal weight merged."""
    closes, colons = _match_brackets(text)
    runs: list[tuple[str, float]] = []
    buf: list[str] = []
    open_groups: list[tuple[int, int, float]] = []  # (end of the group's text, its ")", the weight outside it)
    i = 0
    while i < len(text):
        if open_groups and i == open_groups[-1][0]:
            _flush(runs, buf, weight)
            _, close, weight = open_groups.pop()
            i = close + 1
            continue
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "()\\":
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == "(" and i in closes:
            _flush(runs, buf, weight)
            end, factor = _group_weight(text, i, closes[i], colons.get(i))
            open_groups.append((end, closes[i], weight))
            weight *= factor
            i += 1
            continue
        buf.append(ch)
        i += 1
    _flush(runs, buf, weight)
    return _merge(runs)


def _match_brackets(text: str) -> tuple[dict[int, int], dict[int, int]]:
    """For each matched "(": its ")" and the last colon directly inside it (a backslash escapes any character)."""
    closes: dict[int, int] = {}
    colons: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            closes[stack.pop()] = i
        elif ch == ":" and stack:
            colons[stack[-1]] = i
        i += 1
    return closes, colons


def _group_weight(text: str, start: int, close: int, colon: int | None) -> tuple[int, float]:
    """Where the group's text ends and its weight: `text:1.3` ends at the colon and weighs 1.3; else 1.1."""
    if colon is not None:
        try:
            return colon, float(text[colon + 1:close].strip())
        except ValueError:
            pass
    return close, DEFAULT_EMPHASIS


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
