"""Run ComfyUI's own GLIGEN classes and sampling on a tiny UNet and a tiny GLIGEN file and store the sampled
latents (dev tooling, not part of sdgraph).

The tiny SD1-style UNet and GLIGEN file of `tests/sd/gligen_files.py` go into ComfyUI as its loaders would take
them: the UNet's LDM weights into a real `BaseModel` (SD1.5 model config, the UNet config ComfyUI detects from the
weights) behind a `ModelPatcher`, the GLIGEN file through `comfy.sd.load_gligen`. For each case ComfyUI's
`GLIGENTextBoxApply` (with a stand-in CLIP giving each text a seeded pooled output), `ConditioningSetArea` /
`ConditioningCombine` and `RescaleCFG` build the inputs and `comfy.sample.sample` samples them.
`tests/sd/test_gligen.py` runs sdgraph's nodes on the same model and file and compares. Imports the checkout on
the CPU as `make_references.py` does.

    python tools/comfy_reference/gligen_refs.py --comfyui /tmp/comfyui --out tests/sd/data/gligen_refs.npz
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sd"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gligen_files import CASES, LATENT_SHAPE, SEED, StubClip, gligen_unet, ldm_unet_state, save_gligen  # noqa: E402
from sampler_patches import import_comfy, write_cases  # noqa: E402
from sampling_support import text  # noqa: E402


def comfy_model(unet: Any) -> Any:
    import torch
    import comfy.model_base
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models

    sd = ldm_unet_state(unet)
    unet_config = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
    config = comfy.supported_models.SD15(unet_config)
    cpu = torch.device("cpu")
    base = comfy.model_base.BaseModel(config, comfy.model_base.ModelType.EPS, device=cpu)
    own = {k.removeprefix("model.diffusion_model."): v for k, v in sd.items()}
    base.diffusion_model.load_state_dict(own, strict=True)
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def run_case(case: dict[str, Any], patcher: Any, gligen: Any) -> Any:
    import torch
    import comfy.sample
    import nodes
    from comfy_extras.nodes_model_advanced import RescaleCFG

    positive = [[text(1), {}]]
    for words, width, height, x, y in case["boxes"]:
        positive = nodes.GLIGENTextBoxApply().append(positive, StubClip(), gligen, words, width, height, x, y)[0]
    if case.get("area"):
        positive = nodes.ConditioningSetArea().append(positive, *case["area"], 1.0)[0]
        positive = nodes.ConditioningCombine().combine(positive, [[text(3), {}]])[0]
    negative = [[text(2), {}]]
    model = patcher
    if case.get("rescale") is not None:
        model = RescaleCFG().patch(model, case["rescale"])[0]
    latent = torch.zeros(LATENT_SHAPE)
    noise = comfy.sample.prepare_noise(latent, SEED)
    return comfy.sample.sample(model, noise, case["steps"], case["cfg"], case["sampler"], case["scheduler"],
                               positive, negative, latent, denoise=1.0, disable_pbar=True, seed=SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "gligen_refs.npz")
    args = parser.parse_args()
    unet = gligen_unet()  # diffusers first: it does not import under the torchvision stand-in
    scratch = Path(tempfile.mkdtemp(prefix="gligen-ref-"))
    save_gligen(scratch / "tiny_gligen.safetensors", unet)
    import_comfy(args.comfyui.resolve())
    import torch
    import comfy.sd

    torch.set_num_threads(2)
    patcher, gligen = comfy_model(unet), comfy.sd.load_gligen(str(scratch / "tiny_gligen.safetensors"))
    write_cases(CASES, lambda case: run_case(case, patcher, gligen), args.out)


if __name__ == "__main__":
    main()
