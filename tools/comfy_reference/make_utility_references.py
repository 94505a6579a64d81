"""Write ComfyUI's answers for the utility-node parity cases (tests/sd/utility_cases.py) on the CPU.

Dev tooling, not part of sdgraph: it imports a ComfyUI checkout in this process (`--cpu`, the torchvision
stand-in of make_references.py), calls each case's node class from ComfyUI's own modules (nodes.py and
comfy_extras) with the case's inputs under inference mode, and stores the flattened outputs (saved files as their
bytes) in one compressed .npz, with the versions that made them in its `_meta` entry.

    python tools/comfy_reference/make_utility_references.py --comfyui /tmp/comfyui \
        --out tests/sd/data/utility_references.npz
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "sd")]  # a dev tool run as a script: the cases live in the tests
import utility_cases  # noqa: E402
from tools.comfy_reference.make_references import write_torchvision_stand_in  # noqa: E402

# Where each case's class lives in ComfyUI.
MODULES = {"ImageStitch": "comfy_extras.nodes_images", "ResizeAndPadImage": "comfy_extras.nodes_images",
           "ImageScaleToMaxDimension": "comfy_extras.nodes_images", "ImageAddNoise": "comfy_extras.nodes_images",
           "SaveAnimatedPNG": "comfy_extras.nodes_images", "ImageQuantize": "comfy_extras.nodes_post_processing",
           "Morphology": "comfy_extras.nodes_morphology", "Canny": "comfy_extras.nodes_canny",
           "PorterDuffImageComposite": "comfy_extras.nodes_compositing", "RebatchLatents": "comfy_extras.nodes_rebatch",
           "RebatchImages": "comfy_extras.nodes_rebatch", "LatentBatchSeedBehavior": "comfy_extras.nodes_latent",
           "MaskPreview": "comfy_extras.nodes_mask", "LoadImageOutput": "nodes"}
# ComfyUI's v3 classes are named otherwise than their node ids.
V3_CLASSES = {"ImageQuantize": "Quantize", "RebatchLatents": "LatentRebatch", "RebatchImages": "ImageRebatch"}


def import_comfyui(comfyui: Path, scratch: Path) -> None:
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import utils.install_util  # noqa: F401 - ComfyUI's own `utils` package, before comfy/ shadows the name
    import comfy.options
    comfy.options.enable_args_parsing()
    import folder_paths
    for kind in ("output", "temp", "input"):
        (scratch / kind).mkdir()
    folder_paths.set_output_directory(str(scratch / "output"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    folder_paths.set_input_directory(str(scratch / "input"))


def node_class(class_type: str) -> Any:
    module = importlib.import_module(MODULES[class_type])
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", {})
    return mappings.get(class_type) or getattr(module, V3_CLASSES.get(class_type, class_type))


def saved_files(ui: dict[str, Any]) -> list[bytes]:
    import folder_paths

    return [(Path(folder_paths.get_directory_by_type(r["type"])) / r["subfolder"] / r["filename"]).read_bytes()
            for r in ui["images"]]


def evaluate(class_type: str, inputs: dict[str, Any]) -> Any:
    cls = node_class(class_type)
    if hasattr(cls, "define_schema"):  # a v3 node: a classmethod `execute` giving a NodeOutput
        out = cls.execute(**inputs)
        return saved_files(out.ui) if out.ui else list(out.args)
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    return saved_files(out["ui"]) if isinstance(out, dict) else list(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="an exported ComfyUI checkout")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "utility_references.npz")
    args = parser.parse_args()

    import kornia
    import PIL
    import torch

    torch.set_num_threads(2)
    scratch = Path(tempfile.mkdtemp(prefix="comfy-utility-"))
    import_comfyui(args.comfyui.resolve(), scratch)
    utility_cases.write_output_picture(scratch / "output")
    arrays: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for name, (class_type, inputs) in utility_cases.cases().items():
            arrays.update(utility_cases.flatten(evaluate(class_type, inputs), name))
            print(name, flush=True)
    commit = args.comfyui / "COMMIT"
    meta = {"comfyui_commit": commit.read_text().strip() if commit.exists() else "unknown",
            "torch": torch.__version__, "kornia": kornia.__version__, "pillow": PIL.__version__}
    arrays["_meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(meta, len(arrays), "arrays ->", args.out)


if __name__ == "__main__":
    main()
