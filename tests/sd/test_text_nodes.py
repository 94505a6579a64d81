"""Primitive, PreviewAny and string nodes: each answer computed by hand, ComfyUI's corner cases (RegexExtract's
groups, findall's tuples), clear errors for bad patterns, and the modules import no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdgraph.nodes.sd import primitives as P
from sdgraph.nodes.sd import strings as S
from sdgraph.runtime import RuntimeOptions, create_executor
from sdgraph.workflow import parse_workflow


def run(node_cls: type, **inputs):
    node = node_cls()
    out = node.run(**inputs)
    return out


def one(node_cls: type, **inputs):
    (value,) = run(node_cls, **inputs)
    return value


def test_primitives_pass_their_value_through() -> None:
    assert one(P.PrimitiveInt, value=-(2 ** 63 - 1)) == -(2 ** 63 - 1)
    assert one(P.PrimitiveFloat, value=2.5) == 2.5
    assert one(P.PrimitiveString, value="a b") == "a b"
    assert one(P.PrimitiveStringMultiline, value="a\nb") == "a\nb"
    assert one(P.PrimitiveBoolean, value=True) is True


@pytest.mark.parametrize("value, text", [
    ("plain", "plain"), (3, "3"), (2.5, "2.5"), (True, "True"), (None, "None"),
    ([1, "a", None], '[1, "a", null]'), ({"k": [1.5]}, '{"k": [1.5]}'),
])
def test_preview_any_text(value, text) -> None:
    assert run(P.PreviewAny, source=value).ui == {"text": [text]}


def test_preview_any_falls_back_to_str_for_what_json_refuses() -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    class Hopeless:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert P.preview_text(Thing()) == "a thing"
    assert P.preview_text({1, 2}) == str({1, 2})
    assert P.preview_text(Hopeless()) == "source exists, but could not be serialized."


def test_string_basics() -> None:
    assert one(S.StringConcatenate, string_a="ab", string_b="cd", delimiter=", ") == "ab, cd"
    assert one(S.StringConcatenate, string_a="ab", string_b="cd", delimiter="") == "abcd"
    assert one(S.StringSubstring, string="abcdef", start=1, end=4) == "bcd"
    assert one(S.StringSubstring, string="abcdef", start=-3, end=-1) == "de"
    assert one(S.StringSubstring, string="abcdef", start=0, end=0) == ""
    assert one(S.StringLength, string="héllo\n") == 6
    assert one(S.StringReplace, string="a.b.c", find=".", replace="--") == "a--b--c"
    assert one(S.StringTrim, string=" \t x y \n", mode="Both") == "x y"
    assert one(S.StringTrim, string="  x  ", mode="Left") == "x  "
    assert one(S.StringTrim, string="  x  ", mode="Right") == "  x"


@pytest.mark.parametrize("mode, expected", [
    ("UPPERCASE", "HELLO WORLD-X"), ("lowercase", "hello world-x"), ("Capitalize", "Hello world-x"),
    ("Title Case", "Hello World-X"),
])
def test_case_converter(mode, expected) -> None:
    assert one(S.CaseConverter, string="hELLO wORLD-x", mode=mode) == expected


def test_contains_and_compare_with_and_without_case() -> None:
    assert one(S.StringContains, string="Red Circle", substring="circle", case_sensitive=True) is False
    assert one(S.StringContains, string="Red Circle", substring="circle", case_sensitive=False) is True
    cases = [("Starts With", "Red Circle", "red", False, True), ("Starts With", "Red Circle", "red", True, False),
             ("Ends With", "a red circle", "CIRCLE", False, True), ("Ends With", "a red circle", "red", False, False),
             ("Equal", "Abc", "abc", True, False), ("Equal", "Abc", "abc", False, True)]
    for mode, a, b, sensitive, expected in cases:
        assert one(S.StringCompare, string_a=a, string_b=b, mode=mode, case_sensitive=sensitive) is expected, mode


FLAGS = {"case_insensitive": True, "multiline": False, "dotall": False}


def test_regex_match_flags() -> None:
    assert one(S.RegexMatch, string="Hello", regex_pattern="^hello$", **FLAGS) is True
    assert one(S.RegexMatch, string="Hello", regex_pattern="^hello$", **{**FLAGS, "case_insensitive": False}) is False
    assert one(S.RegexMatch, string="a\nb", regex_pattern="^b$", **FLAGS) is False
    assert one(S.RegexMatch, string="a\nb", regex_pattern="^b$", **{**FLAGS, "multiline": True}) is True
    assert one(S.RegexMatch, string="a\nb", regex_pattern="a.b", **FLAGS) is False
    assert one(S.RegexMatch, string="a\nb", regex_pattern="a.b", **{**FLAGS, "dotall": True}) is True


TEXT = "w=12 h=34 w=56"


@pytest.mark.parametrize("pattern, mode, index, expected", [
    (r"\d+", "First Match", 1, "12"),
    (r"\d+", "All Matches", 1, "12\n34\n56"),
    (r"w=(\d+)", "All Matches", 1, "12\n56"),  # one group: findall gives the group, not the whole match
    (r"(\w)=(\d+)", "All Matches", 1, "w\nh\nw"),  # several groups: the first of each tuple
    (r"(\w)=(\d+)", "First Group", 2, "12"),
    (r"(\w)=(\d+)", "First Group", 0, "w=12"),
    (r"(\w)=(\d+)", "First Group", 3, ""),  # fewer groups than the index
    (r"(\w)=(\d+)", "All Groups", 2, "12\n34\n56"),
    (r"(\w)=(\d+)", "All Groups", 0, "w=12\nh=34\nw=56"),
    (r"\w=\d+", "All Groups", 0, ""),  # no groups: nothing, even for index 0
    (r"(\w)=(\d+)", "All Groups", 5, ""),
    (r"x+", "First Match", 1, ""),
    (r"x+", "All Matches", 1, ""),
    (r"(x)|(\d+)", "First Group", 1, ""),  # group 1 took no part in the match
    (r"(x)|(\d+)", "All Groups", 2, "12\n34\n56"),
    (r"W=(\d+)", "First Group", 1, "12"),  # case-insensitive by default
])
def test_regex_extract(pattern, mode, index, expected) -> None:
    assert one(S.RegexExtract, string=TEXT, regex_pattern=pattern, mode=mode, group_index=index, **FLAGS) == expected


def test_regex_replace_count_groups_and_flags() -> None:
    assert one(S.RegexReplace, string=TEXT, regex_pattern=r"(\w)=(\d+)", replace=r"\2:\1") == "12:w 34:h 56:w"
    assert one(S.RegexReplace, string=TEXT, regex_pattern=r"\d+", replace="#", count=2) == "w=# h=# w=56"
    assert one(S.RegexReplace, string=TEXT, regex_pattern="W", replace="v") == "v=12 h=34 v=56"
    assert one(S.RegexReplace, string=TEXT, regex_pattern="W", replace="v", case_insensitive=False) == TEXT


@pytest.mark.parametrize("node", [S.RegexMatch, S.RegexExtract, S.RegexReplace])
def test_an_invalid_pattern_is_an_error_naming_the_input(node) -> None:
    extra = {"RegexExtract": {"mode": "First Match", "group_index": 1}, "RegexReplace": {"replace": ""}}
    with pytest.raises(ValueError, match=rf"{node.__name__}\.regex_pattern: '\(ab' is not a valid regular "
                                         r"expression \(missing \), unterminated subpattern at position 0\)"):
        node().run(string="ab", regex_pattern="(ab", **FLAGS, **extra.get(node.__name__, {}))
    assert "regex_pattern" in node.validate_inputs(None, regex_pattern="a[")
    assert node.validate_inputs(None, regex_pattern="a[b]") is None


def test_a_replacement_naming_a_missing_group_is_an_error_naming_replace() -> None:
    with pytest.raises(ValueError, match=r"RegexReplace\.replace: '\\\\2' is not a valid replacement"):
        S.RegexReplace().run(string="ab", regex_pattern="(a)", replace=r"\2")


def test_through_the_executor(tmp_path: Path) -> None:
    """Primitives wired into string nodes into PreviewAny: the executed output carries the text; a literal bad
    pattern is refused before anything runs, naming the input."""
    executor = create_executor(RuntimeOptions(base_dir=tmp_path, plugins=False))
    workflow = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "Size: 512x768"}},
        "2": {"class_type": "RegexExtract", "inputs": {"string": ["1", 0], "regex_pattern": r"(\d+)x(\d+)",
                                                        "mode": "First Group", "case_insensitive": True,
                                                        "multiline": False, "dotall": False, "group_index": 2}},
        "3": {"class_type": "StringLength", "inputs": {"string": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
    result = executor.run(parse_workflow(workflow))
    assert result.ok, result.error
    assert result.outputs["4"] == {"text": ["768"]} and result.outputs["5"] == {"text": ["3"]}
    workflow["2"]["inputs"]["regex_pattern"] = "(unclosed"
    bad = executor.run(parse_workflow(workflow))
    assert not bad.ok
    assert "RegexExtract.regex_pattern: '(unclosed' is not a valid regular expression" in json.dumps(bad.node_errors)


def test_the_modules_import_no_torch() -> None:
    code = ("import sys; import sdgraph.nodes.sd.primitives, sdgraph.nodes.sd.strings; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
