"""Run Impact Pack nodes that need no model in sdgraph and in ComfyUI, and compare (issue 17's meaning check).

An evaluation command, not a test (Impact Pack is third-party and not committed). A picture of three white
shapes on black, made with PIL, becomes a mask (core ImageToMask) that goes through Impact's ImpactDilateMask,
ImpactGaussianBlurMask, MaskToSEGS, ImpactSEGSOrderedFilter (the largest shape), SegsToCombinedMask,
SubtractMask and AddMask; SEGSPreview previews the segments, and ImpactWildcardProcessor fills a wildcard text
with a seed (shown by core PreviewAny). Masks are saved by core SaveImage.

Each side runs in a child process of tools/pack_workflow.py on its own copy of the pack and its own base
directory. The parent prints per node what each side did, compares the UI outputs and the saved pixels, and
checks what the outputs must show whatever either side did. Run it where Impact's requirements are installed
(a venv with torch and torchvision, see tools/pack_report.py):

    python -m tools.impact_workflow /tmp/cn_impact --comfyui /tmp/comfyui --scratch /tmp/impact-workflow
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_workflow import _frames, _strip_ui, compare_files, fresh_scratch, prepare_base, run_both  # noqa: E402

PACK = "ComfyUI-Impact-Pack"
SOURCE = "iw_source.png"
WILDCARD = "a {red|green|blue} {cat|dog|bird} on a {hill|boat}"


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def _save(mask: str, prefix: str) -> dict[str, dict[str, Any]]:
    return {f"{mask}i": _node("MaskToImage", mask=[mask, 0]),
            f"{mask}s": _node("SaveImage", images=[f"{mask}i", 0], filename_prefix=prefix)}


WORKFLOW: dict[str, dict[str, Any]] = {
    "1": _node("LoadImage", image=SOURCE),
    "2": _node("ImageToMask", image=["1", 0], channel="red"),
    "3": _node("ImpactDilateMask", mask=["2", 0], dilation=3),
    "4": _node("ImpactGaussianBlurMask", mask=["3", 0], kernel_size=5, sigma=2.0),
    "5": _node("MaskToSEGS", mask=["2", 0], combined=False, crop_factor=1.5, bbox_fill=False, drop_size=10,
               contour_fill=False),
    "6": _node("ImpactSEGSOrderedFilter", segs=["5", 0], target="area(=w*h)", order=True, take_start=0,
               take_count=1),
    "7": _node("SegsToCombinedMask", segs=["6", 0]),
    "8": _node("SubtractMask", mask1=["2", 0], mask2=["7", 0]),
    "9": _node("AddMask", mask1=["8", 0], mask2=["7", 0]),
    "10": _node("SEGSPreview", segs=["5", 0], alpha_mode=True, min_alpha=0.2, fallback_image_opt=["1", 0]),
    # the editor fills populated_text from wildcard_text (Populate mode); the node then resolves it with the seed
    "11": _node("ImpactWildcardProcessor", wildcard_text=WILDCARD, populated_text=WILDCARD, mode=True, seed=7,
                **{"Select to add Wildcard": "Select the Wildcard to add to the text"}),
    "12": _node("PreviewAny", source=["11", 0]),
    **_save("2", "iw_mask"), **_save("3", "iw_dilated"), **_save("4", "iw_blurred"),
    **_save("7", "iw_largest"), **_save("8", "iw_rest"), **_save("9", "iw_readded"),
}


def make_source(path: Path) -> None:
    """80x60: a big rectangle, a smaller ellipse and a small square, white on black (three separate shapes)."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    image = Image.new("RGB", (80, 60))
    draw = ImageDraw.Draw(image)
    draw.rectangle((6, 8, 35, 40), fill=(255, 255, 255))
    draw.ellipse((46, 10, 71, 31), fill=(255, 255, 255))
    draw.rectangle((50, 42, 61, 53), fill=(255, 255, 255))
    image.save(path)


def _files(ui: dict[str, Any]) -> dict[str, list[str]]:
    """Per output node, the files its UI output names, under their folder (output/ or temp/)."""
    return {node: [os.path.join(item.get("type", "output"), item.get("subfolder", ""), item["filename"])
                   for item in outputs.get("images", []) or [] if isinstance(item, dict) and "filename" in item]
            for node, outputs in ui.items() if outputs.get("images")}


def report(ours: dict[str, Any], ref: dict[str, Any], base_ours: Path, base_ref: Path) -> list[str]:
    lines = [f"sdgraph: {ours['status']} {ours.get('error') or ''}".rstrip(),
             f"ComfyUI: {ref['status']} {ref.get('error') or ''} (missing classes: {ref['missing']})".rstrip(),
             "", f"{'node':>4} {'class':26} {'sdgraph':10} {'ComfyUI':10}"]
    for node in WORKFLOW:
        got, want = ours["nodes"].get(node, {"state": "-"}), ref["nodes"].get(node, {"state": "-"})
        why = got.get("message") or want.get("message") or ""
        lines.append(f"{node:>4} {WORKFLOW[node]['class_type']:26} {got['state']:10} {want['state']:10} {why[:120]}")
    lines += ["", "UI outputs:"]
    for node in sorted(set(ours["ui"]) | set(ref["ui"])):
        a, b = _strip_ui(ours["ui"].get(node, {}), base_ours), _strip_ui(ref["ui"].get(node, {}), base_ref)
        lines.append(f"  {node}: {'equal' if a == b else 'DIFFER'} {json.dumps(a)[:150]}")
        if a != b:
            lines.append(f"  {'':{len(node)}}  ComfyUI: {json.dumps(b)[:150]}")
    lines += ["", "saved files (sdgraph vs ComfyUI, pixels decoded):"]
    files_ours, files_ref = _files(ours["ui"]), _files(ref["ui"])
    for node in sorted(set(files_ours) | set(files_ref)):
        for mine, theirs in zip(files_ours.get(node, []), files_ref.get(node, [])):
            lines.append(f"  {node}: {mine}: {compare_files(base_ours / mine, base_ref / theirs)}")
        if len(files_ours.get(node, [])) != len(files_ref.get(node, [])):
            lines.append(f"  {node}: file lists differ: {files_ours.get(node)} vs {files_ref.get(node)}")
    return lines


def _grow(mask: Any) -> Any:
    """A binary mask dilated by a 3x3 square: each pixel is the maximum of its neighbourhood."""
    import numpy as np  # noqa: PLC0415

    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def meaning_checks(ours: dict[str, Any], base: Path) -> list[str]:
    """What sdgraph's outputs must show, from the source picture alone."""
    import numpy as np  # noqa: PLC0415

    def mask(prefix: str) -> Any:
        return _frames(base / "output" / f"{prefix}_00001_.png")[0, ..., 0].astype(np.int64)

    source = _frames(base / "input" / SOURCE)[0, ..., 0] > 127
    shapes, dilated, largest, rest = mask("iw_mask") > 127, mask("iw_dilated") > 127, mask("iw_largest"), mask("iw_rest")
    big = np.zeros_like(source)
    big[8:41, 6:36] = True  # the rectangle PIL drew (both corners inclusive)
    text = "".join(ours["ui"].get("12", {}).get("text", [""]))
    words = text.split()
    checks = [
        ("the red-channel mask is the three shapes", (shapes == source).all()),
        ("ImpactDilateMask 3 is the shapes grown by a 3x3 square (a 1-pixel rim)", (dilated == _grow(shapes)).all()),
        ("the largest SEGS by area is the big rectangle, as a mask", ((largest > 127) == big).all()),
        ("SubtractMask leaves the ellipse and the square", ((rest > 127) == (source & ~big)).all()),
        ("AddMask puts the rectangle back: the shapes again", ((mask("iw_readded") > 127) == source).all()),
        (f"SEGSPreview previews the 3 segments ({len(ours['ui'].get('10', {}).get('images', []))})",
         len(ours["ui"].get("10", {}).get("images", [])) == 3),
        (f"the wildcard is filled from its choices: {text!r}",
         len(words) == 6 and words[1] in ("red", "green", "blue") and words[2] in ("cat", "dog", "bird")
         and words[5] in ("hill", "boat")),
    ]
    return [f"  {'ok ' if good else 'BAD'} {what}" for what, good in checks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("custom_nodes", type=Path, help=f"a custom_nodes directory holding {PACK}")
    parser.add_argument("--comfyui", type=Path, default=Path("/tmp/comfyui"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/impact-workflow"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    scratch = args.scratch.resolve()
    stand_in = fresh_scratch(scratch)
    base_ours, base_ref = scratch / "sdgraph-base", scratch / "comfyui-base"
    for base in (base_ours, base_ref):
        prepare_base(base, args.custom_nodes.resolve(), (PACK,), make_source, SOURCE)
    workflow = scratch / "workflow.json"
    workflow.write_text(json.dumps(WORKFLOW))
    ours, ref = run_both(args.comfyui, scratch, stand_in, workflow)
    print("\n".join(report(ours, ref, base_ours, base_ref)))
    print("\nwhat the outputs must show (sdgraph's):")
    print("\n".join(meaning_checks(ours, base_ours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
