"""Compare sdgraph's node specs with ComfyUI's /object_info for the Stable Diffusion family list.

    python -m tools.node_spec_report [--reference DIR] [--verbose]

For every class_type in `sd-family-nodes.txt` it compares what `sdgraph nodes --json` describes (built in-process
from the same registry) with `comfyui-core-nodes.json`: per input section the ordered names, each input's type, the
choices of every combo except file lists (ComfyUI's dump leaves those empty: they depend on the folders), the
default/min/max/step of numbers, the defaults of other widgets and the widget flags editors act on; then the output
types and output names, and the category (where editors file the node). It prints how many names are equal, differ (each difference listed) or are missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_DIR = Path(os.environ.get("SDGRAPH_COMFY_REFERENCE", "/work/shared/reference"))
SECTIONS = ("required", "optional", "hidden")
HIDDEN_KINDS = ("PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG")
# Widget options compared besides the type and choices: the numbers' ranges, every widget's default, and the flags
# that change what an editor shows (a seed's control widget, an upload button, a text box, a socket-only widget).
COMPARED_OPTIONS = ("default", "min", "max", "step", "multiline", "forceInput", "control_after_generate",
                    "image_upload")
FALSE_WHEN_ABSENT = ("multiline", "forceInput", "control_after_generate", "image_upload")
# Combos whose choices are the files of a folder on the machine that made the dump (ComfyUI's dump lists its own
# input/ and models/configs/ files here; it leaves the model folders empty): their choices are not compared.
FOLDER_INPUTS = {("CheckpointLoader", "config_name"), ("LoadImage", "image"), ("LoadImageMask", "image")}


def family_names(reference_dir: Path = REFERENCE_DIR) -> list[str]:
    """The class_types of sd-family-nodes.txt, in file order (comment lines skipped)."""
    names: list[str] = []
    for line in (reference_dir / "sd-family-nodes.txt").read_text().splitlines():
        if not line.lstrip().startswith("#"):
            names.extend(line.split())
    return names


def comfy_reference(reference_dir: Path = REFERENCE_DIR) -> dict[str, Any]:
    return json.loads((reference_dir / "comfyui-core-nodes.json").read_text())


def sdgraph_specs() -> dict[str, Any]:
    """Every node as `sdgraph nodes --json` describes it, from an executor over an empty home (no plugins), so
    file-list combos are empty as in ComfyUI's dump."""
    from sdgraph.runtime import RuntimeOptions, create_executor

    with tempfile.TemporaryDirectory() as home:
        executor = create_executor(RuntimeOptions(base_dir=Path(home), plugins=False))
        return json.loads(json.dumps(executor.registry.describe(executor.services.dirs), default=str))


def _input(entry: Any) -> dict[str, Any]:
    """One /object_info input in a normal form: {"type", "choices" (combos), options...}. Both ComfyUI shapes of a
    combo, `[[choices], {...}]` and `["COMBO", {"options": [choices], ...}]`, become the same thing."""
    if isinstance(entry, str):  # a hidden input: its kind only
        return {"type": entry}
    if isinstance(entry, list) and len(entry) == 1 and entry[0] in HIDDEN_KINDS:  # a V3 node's hidden input, ["PROMPT"]: the same as "PROMPT"
        return {"type": entry[0]}
    head = entry[0]
    opts = dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}
    out: dict[str, Any] = {}
    if isinstance(head, list):
        out["type"], out["choices"] = "COMBO", list(head)
    elif head == "COMBO":
        out["type"], out["choices"] = "COMBO", list(opts.get("options", []))
    else:
        out["type"] = head
    for key in COMPARED_OPTIONS:
        value = opts.get(key, False if key in FALSE_WHEN_ABSENT else None)
        if key in FALSE_WHEN_ABSENT:
            value = bool(value)
        if value is not None or key in FALSE_WHEN_ABSENT:
            out[key] = value
    return out


def compare_node(ours: dict[str, Any], theirs: dict[str, Any], class_type: str = "") -> list[str]:
    """The differences between sdgraph's description of one node and ComfyUI's, one line each (empty: equal)."""
    diffs: list[str] = []
    for section in SECTIONS:
        our_order = list(ours.get("input_order", {}).get(section, []))
        their_order = list(theirs.get("input_order", {}).get(section, []))
        if our_order != their_order:
            diffs.append(f"{section} inputs: sdgraph {our_order} != ComfyUI {their_order}")
        our_inputs, their_inputs = ours.get("input", {}).get(section, {}), theirs.get("input", {}).get(section, {})
        for name in their_order:
            if name not in our_order:
                continue
            a, b = _input(our_inputs[name]), _input(their_inputs[name])
            folder = b.get("choices") == [] or (class_type, name) in FOLDER_INPUTS
            if folder and a.get("type") == "COMBO" == b.get("type"):  # a file list: its choices depend on the folder
                a.pop("choices", None), b.pop("choices")
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key) and not _same_number(a.get(key), b.get(key)):
                    diffs.append(f"{section}.{name}.{key}: sdgraph {a.get(key)!r} != ComfyUI {b.get(key)!r}")
    for key in ("output", "output_name", "category"):
        if list(ours.get(key, [])) != list(theirs.get(key, [])):
            diffs.append(f"{key}: sdgraph {ours.get(key)} != ComfyUI {theirs.get(key)}")
    return diffs


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and float(a) == float(b))


@dataclass
class Report:
    equal: list[str] = field(default_factory=list)
    different: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.equal) + len(self.different) + len(self.missing)

    def summary(self) -> str:
        present = len(self.equal) + len(self.different)
        return (f"{self.total} names: {present} present ({len(self.equal)} equal to ComfyUI, "
                f"{len(self.different)} with differences), {len(self.missing)} missing; "
                f"{100 * len(self.equal) / max(self.total, 1):.1f}% equal")

    def text(self, exceptions: dict[str, str] | None = None) -> str:
        lines = [self.summary()]
        for name, diffs in self.different.items():
            reason = (exceptions or {}).get(name)
            lines.append(f"  {name}" + (f"  [exception: {reason}]" if reason else ""))
            lines.extend(f"    - {d}" for d in diffs)
        lines.append(f"missing ({len(self.missing)}): {' '.join(self.missing)}")
        return "\n".join(lines)


def build_report(ours: dict[str, Any] | None = None, reference_dir: Path = REFERENCE_DIR) -> Report:
    ours = sdgraph_specs() if ours is None else ours
    theirs = comfy_reference(reference_dir)
    report = Report()
    for name in family_names(reference_dir):
        if name not in ours:
            report.missing.append(name)
            continue
        diffs = compare_node(ours[name], theirs[name], name)
        if diffs:
            report.different[name] = diffs
        else:
            report.equal.append(name)
    return report


def _exceptions() -> dict[str, str]:
    """The documented, deliberate differences, as the conformance test holds them."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "tests" / "sd" / "test_comfy_node_specs.py"
    spec = importlib.util.spec_from_file_location("_comfy_node_specs", path)
    if spec is None or spec.loader is None or not path.exists():
        return {}
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.EXCEPTIONS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE_DIR,
                        help="folder holding sd-family-nodes.txt and comfyui-core-nodes.json")
    args = parser.parse_args(argv)
    print(build_report(reference_dir=args.reference).text(_exceptions()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
