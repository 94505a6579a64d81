"""Text nodes: joining, replacing, cutting, measuring, comparing and changing case, and regular expressions.

They behave as ComfyUI's string nodes, with two differences on purpose:
- a regular expression that does not compile (or a replacement naming a group the pattern lacks) is an error that
  names the node and input, where ComfyUI's RegexMatch and RegexExtract quietly answer False / "" and its
  RegexReplace fails with Python's bare message; a literal pattern is checked before the workflow runs;
- a group that took no part in the match extracts as "" (ComfyUI passes None on, or fails joining it).
Like ComfyUI, patterns are not guarded against catastrophic backtracking: Python's `re` runs them as written.
Pure Python: no torch.
"""
from __future__ import annotations

import re
from typing import Any

from sdgraph.node import Boolean, Combo, Int, Node, Output, String
from sdgraph.nodes.sd.primitives import without_default
from sdgraph.paths import Dirs
from sdgraph.types import BOOLEAN, INT, STRING

CATEGORY = "utils/string"


def _text(name: str) -> Any:
    return String(name, multiline=True)


class StringConcatenate(Node):
    """The two texts joined, with the delimiter between them."""

    display_name = "Concatenate"
    category = CATEGORY
    inputs = [_text("string_a"), _text("string_b"), String("delimiter", "")]
    outputs = [Output(STRING)]

    def run(self, string_a: str, string_b: str, delimiter: str) -> tuple:
        return (delimiter.join((string_a, string_b)),)


class StringSubstring(Node):
    """The characters from `start` up to (not including) `end`; negative positions count from the end, as in
    Python slicing."""

    display_name = "Substring"
    category = CATEGORY
    inputs = [_text("string"), without_default(Int("start", 0)), without_default(Int("end", 0))]
    outputs = [Output(STRING)]

    def run(self, string: str, start: int, end: int) -> tuple:
        return (string[start:end],)


class StringLength(Node):
    """The number of characters."""

    display_name = "Length"
    category = CATEGORY
    inputs = [_text("string")]
    outputs = [Output(INT, "length")]

    def run(self, string: str) -> tuple:
        return (len(string),)


CASES = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize, "Title Case": str.title}


class CaseConverter(Node):
    """The text in upper or lower case, with its first letter capitalised, or with every word capitalised."""

    display_name = "Case Converter"
    category = CATEGORY
    inputs = [_text("string"), Combo("mode", list(CASES))]
    outputs = [Output(STRING)]

    def run(self, string: str, mode: str) -> tuple:
        return (CASES[mode](string),)


TRIMS = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}


class StringTrim(Node):
    """The text without the white space at its start, its end, or both."""

    display_name = "Trim"
    category = CATEGORY
    inputs = [_text("string"), Combo("mode", list(TRIMS))]
    outputs = [Output(STRING)]

    def run(self, string: str, mode: str) -> tuple:
        return (TRIMS[mode](string),)


class StringReplace(Node):
    """Every occurrence of `find` replaced by `replace` (plain text, not a pattern)."""

    display_name = "Replace"
    category = CATEGORY
    inputs = [_text("string"), _text("find"), _text("replace")]
    outputs = [Output(STRING)]

    def run(self, string: str, find: str, replace: str) -> tuple:
        return (string.replace(find, replace),)


class StringContains(Node):
    """Whether `substring` occurs in the text."""

    display_name = "Contains"
    category = CATEGORY
    inputs = [_text("string"), _text("substring"), Boolean("case_sensitive", True)]
    outputs = [Output(BOOLEAN, "contains")]

    def run(self, string: str, substring: str, case_sensitive: bool) -> tuple:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


COMPARES = {"Starts With": str.startswith, "Ends With": str.endswith, "Equal": str.__eq__}


class StringCompare(Node):
    """Whether text A starts with, ends with, or equals text B."""

    display_name = "Compare"
    category = CATEGORY
    inputs = [_text("string_a"), _text("string_b"), Combo("mode", list(COMPARES)), Boolean("case_sensitive", True)]
    outputs = [Output(BOOLEAN)]

    def run(self, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple:
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        return (COMPARES[mode](string_a, string_b),)


# ---- regular expressions -------------------------------------------------------------------------------------


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return ((re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0)
            | (re.DOTALL if dotall else 0))


def compile_pattern(where: str, pattern: str, flags: int) -> re.Pattern[str]:
    """The compiled pattern, or a ValueError naming `where` (node.input) and what is wrong with it."""
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        position = "" if exc.pos is None else f" at position {exc.pos}"
        raise ValueError(f"{where}: {pattern!r} is not a valid regular expression ({exc.msg}{position})") from None


def _pattern_problem(where: str, regex_pattern: Any, flags: int) -> str | None:
    """A literal pattern checked before the run (a linked one is checked when it arrives)."""
    if not isinstance(regex_pattern, str):
        return None
    try:
        compile_pattern(where, regex_pattern, flags)
    except ValueError as exc:
        return str(exc)
    return None


FLAG_INPUTS = (Boolean("case_insensitive", True), Boolean("multiline", False), Boolean("dotall", False))


class RegexMatch(Node):
    """Whether the pattern matches anywhere in the text."""

    display_name = "Regex Match"
    category = CATEGORY
    inputs = [_text("string"), _text("regex_pattern"), *FLAG_INPUTS]
    outputs = [Output(BOOLEAN, "matches")]

    def run(self, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool, dotall: bool) -> tuple:
        flags = regex_flags(case_insensitive, multiline, dotall)
        return (compile_pattern("RegexMatch.regex_pattern", regex_pattern, flags).search(string) is not None,)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, regex_pattern: Any = None, case_insensitive: bool = True,
                        multiline: bool = False, dotall: bool = False, **_: Any) -> str | None:
        return _pattern_problem("RegexMatch.regex_pattern", regex_pattern,
                                regex_flags(case_insensitive, multiline, dotall))


def _group(match: re.Match[str], index: int) -> str:
    return match.group(index) or ""  # a group that took no part in the match


def extract(pattern: re.Pattern[str], string: str, mode: str, group_index: int) -> str:
    """RegexExtract's answer, as ComfyUI computes it; several results are joined by newlines.

    - "First Match": the whole first match.
    - "All Matches": every match; for a pattern with groups, the first group of each (what `re.findall` gives).
    - "First Group": group `group_index` of the first match (0 is the whole match), "" when it has fewer groups.
    - "All Groups": group `group_index` of every match, "" when the pattern has fewer groups (or none at all, even
      for index 0).
    """
    if mode == "First Match":
        match = pattern.search(string)
        return match.group(0) if match else ""
    if mode == "All Matches":
        found = pattern.findall(string)
        return "\n".join(m[0] if isinstance(m, tuple) else m for m in found)
    if mode == "First Group":
        match = pattern.search(string)
        return _group(match, group_index) if match and pattern.groups >= group_index else ""
    if mode == "All Groups":
        if not pattern.groups or pattern.groups < group_index:
            return ""
        return "\n".join(_group(m, group_index) for m in pattern.finditer(string))
    raise ValueError(f"RegexExtract.mode: unknown mode {mode!r}")


class RegexExtract(Node):
    """Text the pattern finds: the first match, all matches, or one group of the first or of every match."""

    display_name = "Regex Extract"
    category = CATEGORY
    inputs = [_text("string"), _text("regex_pattern"),
              Combo("mode", ["First Match", "All Matches", "First Group", "All Groups"]), *FLAG_INPUTS,
              Int("group_index", 1, min=0, max=100)]
    outputs = [Output(STRING)]

    def run(self, string: str, regex_pattern: str, mode: str, case_insensitive: bool, multiline: bool,
            dotall: bool, group_index: int) -> tuple:
        flags = regex_flags(case_insensitive, multiline, dotall)
        return (extract(compile_pattern("RegexExtract.regex_pattern", regex_pattern, flags), string, mode,
                        group_index),)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, regex_pattern: Any = None, case_insensitive: bool = True,
                        multiline: bool = False, dotall: bool = False, **_: Any) -> str | None:
        return _pattern_problem("RegexExtract.regex_pattern", regex_pattern,
                                regex_flags(case_insensitive, multiline, dotall))


class RegexReplace(Node):
    """Matches of the pattern replaced by `replace`, which may refer to groups (\\1, \\g<name>); `count` 0
    replaces every match, n only the first n."""

    display_name = "Regex Replace"
    category = CATEGORY
    inputs = [_text("string"), _text("regex_pattern"), _text("replace"),
              *(spec.model_copy(update={"section": "optional"}) for spec in FLAG_INPUTS),
              Int("count", 0, min=0, max=100, optional=True)]
    outputs = [Output(STRING)]

    def run(self, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
            multiline: bool = False, dotall: bool = False, count: int = 0) -> tuple:
        flags = regex_flags(case_insensitive, multiline, dotall)
        pattern = compile_pattern("RegexReplace.regex_pattern", regex_pattern, flags)
        try:
            return (pattern.sub(replace, string, count=count),)
        except (re.error, IndexError) as exc:
            raise ValueError(f"RegexReplace.replace: {replace!r} is not a valid replacement for "
                             f"{regex_pattern!r} ({exc})") from None

    @classmethod
    def validate_inputs(cls, dirs: Dirs, regex_pattern: Any = None, case_insensitive: bool = True,
                        multiline: bool = False, dotall: bool = False, **_: Any) -> str | None:
        return _pattern_problem("RegexReplace.regex_pattern", regex_pattern,
                                regex_flags(case_insensitive, multiline, dotall))


NODES = [StringConcatenate, StringSubstring, StringLength, CaseConverter, StringTrim, StringReplace,
         StringContains, StringCompare, RegexMatch, RegexExtract, RegexReplace]
