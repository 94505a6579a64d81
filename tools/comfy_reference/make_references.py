"""Write ComfyUI reference images for the parity cases (tests/parity/cases.py), headless on the CPU.

Dev tooling, not part of sdgraph: it imports a ComfyUI checkout in this process (`--cpu`), evaluates each
API-format case with ComfyUI's own node classes (nodes.NODE_CLASS_MAPPINGS) in dependency order under
inference mode, and stores the decoded float image of node "8", its truncated 8-bit pixels and the sampled latent as
`<out>/<case>.npz`, with `<out>/references.json` describing how they were made.

ComfyUI imports torchvision, which cannot be installed on this machine (CUDA-only wheel). The harness writes a
tiny import-time stand-in package for it into its own temporary directory, put first on sys.path; nothing in the
SD1.x path it runs calls into it. The stand-in never lives in the sdgraph package or in this repository.

    python tools/comfy_reference/make_references.py --comfyui /tmp/comfyui --out tests/parity/data
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # a dev tool run as a script: the checkout's tests hold the shared cases
from tests.parity import cases as parity_cases  # noqa: E402
from tests.parity import checkpoints  # noqa: E402

_STUB = (
    "class _Missing:\n"
    "    def __init__(self, *a, **k):\n"
    "        raise RuntimeError('torchvision stand-in: not available in the reference harness')\n"
    "def __getattr__(name):\n"
    "    if name.startswith('__'):\n"
    "        raise AttributeError(name)\n"
    "    return _Missing\n"
)
_STUB_MODULES = ("", "transforms", "transforms/functional", "io", "ops", "utils", "models")


def write_torchvision_stand_in(where: Path) -> None:
    for sub in _STUB_MODULES:
        package = where / "torchvision" / sub
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(_STUB + "__version__ = '0.0.0+stand-in'\n")


# comfy_extras modules the cases use (ComfyUI registers them at server start, which the harness does not run)
_EXTRAS = ("nodes_freelunch.py", "nodes_model_downscale.py", "nodes_hypertile.py", "nodes_hypernetwork.py",
           "nodes_pag.py", "nodes_sag.py")


def import_comfyui(comfyui: Path, scratch: Path, checkpoint_dir: Path, input_dir: Path, lora_dir: Path,
                   controlnet_dir: Path, hypernetwork_dir: Path):
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import folder_paths
    folder_paths.add_model_folder_path("checkpoints", str(checkpoint_dir), is_default=True)
    folder_paths.add_model_folder_path("loras", str(lora_dir), is_default=True)
    folder_paths.add_model_folder_path("controlnet", str(controlnet_dir), is_default=True)
    folder_paths.add_model_folder_path("hypernetworks", str(hypernetwork_dir), is_default=True)
    folder_paths.set_input_directory(str(input_dir))
    import asyncio

    import nodes
    for name in _EXTRAS:
        loaded = asyncio.run(nodes.load_custom_node(str(comfyui / "comfy_extras" / name), module_parent="comfy_extras"))
        if not loaded:
            raise RuntimeError(f"ComfyUI's comfy_extras/{name} did not load")
    return nodes


# Nodes whose outputs depend only on their literal inputs and a file: evaluated once for all the cases.
_SHARED = ("CheckpointLoaderSimple", "LoadImage", "ControlNetLoader")
_shared_outputs: dict[str, tuple] = {}


def evaluate(nodes_module, prompt: dict, wanted: str) -> dict[str, tuple]:
    """Run the prompt's nodes that `wanted` depends on, each once, with ComfyUI's node classes; all outputs."""
    import torch

    done: dict[str, tuple] = {}

    def value(node_id: str) -> tuple:
        if node_id not in done:
            spec = prompt[node_id]
            kwargs = {k: value(v[0])[v[1]] if isinstance(v, list) else v for k, v in spec["inputs"].items()}
            cls = nodes_module.NODE_CLASS_MAPPINGS[spec["class_type"]]
            key = json.dumps([spec["class_type"], spec["inputs"]], sort_keys=True)
            if spec["class_type"] in _SHARED and key in _shared_outputs:
                done[node_id] = _shared_outputs[key]
            else:
                done[node_id] = tuple(getattr(cls(), cls.FUNCTION)(**kwargs))  # v3 nodes give a NodeOutput
                if spec["class_type"] in _SHARED:
                    _shared_outputs[key] = done[node_id]
        return done[node_id]

    with torch.inference_mode():
        value(wanted)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="an exported ComfyUI checkout")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "parity" / "data")
    parser.add_argument("--cases", nargs="*", default=list(parity_cases.CASES))
    parser.add_argument("--seed", type=int, default=0, help="the checkpoint's weight seed")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    ckpt = checkpoints.sd15_checkpoint(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="comfy-reference-"))
    input_dir, lora_dir, controlnet_dir = scratch / "input", scratch / "loras", scratch / "controlnet"
    hypernetwork_dir = scratch / "hypernetworks"
    for folder in (input_dir, lora_dir, controlnet_dir, hypernetwork_dir):
        folder.mkdir()
    parity_cases.write_inputs(input_dir)
    (lora_dir / parity_cases.LORA).symlink_to(checkpoints.kohya_lora(args.seed))
    for path, name in zip(checkpoints.sd15_controlnets(args.seed), parity_cases.CONTROLNETS.values()):
        (controlnet_dir / name).symlink_to(path)
    (hypernetwork_dir / parity_cases.HYPERNETWORK).symlink_to(checkpoints.hypernetwork(args.seed))
    nodes_module = import_comfyui(args.comfyui.resolve(), scratch, ckpt.parent, input_dir, lora_dir,
                                  controlnet_dir, hypernetwork_dir)

    args.out.mkdir(parents=True, exist_ok=True)
    meta_path = args.out / "references.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"cases": {}}
    commit_file = args.comfyui / "COMMIT"
    meta.update(comfyui_commit=commit_file.read_text().strip() if commit_file.exists() else "unknown",
                checkpoint=ckpt.name, checkpoint_seed=args.seed, checkpoint_version=checkpoints.VERSION,
                torch=torch.__version__, sdgraph_commit=subprocess.run(
                    ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
    for name in args.cases:
        start = time.perf_counter()
        outputs = evaluate(nodes_module, parity_cases.prompt(name, ckpt.name), parity_cases.DECODE_NODE)
        array = outputs[parity_cases.DECODE_NODE][0].float().cpu().numpy()
        latent = outputs[parity_cases.SAMPLER_NODE][0]["samples"].float().cpu().numpy()
        np.savez_compressed(args.out / f"{name}.npz", image=array, pixels=parity_cases.png_pixels(array),
                            latent=latent)
        meta["cases"][name] = {"shape": list(array.shape), "seconds": round(time.perf_counter() - start, 1),
                               "finite": bool(np.isfinite(array).all()),
                               "range": [float(array.min()), float(array.max())]}
        print(name, meta["cases"][name], flush=True)
        meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
