"""Run ComfyUI's own sampler-level patch nodes and sampling code on a toy UNet and store the sampled latents
(dev tooling, not part of sdgraph).

The toy UNet (`tests/sd/toy_unet.py`) sits inside ComfyUI's real `BaseModel` (an SD1.5 model config, its model
sampling, `apply_model`) behind a real `ModelPatcher`; each case of `tests/sd/sampler_patch_cases.py` patches it
with ComfyUI's node classes (ModelSamplingDiscrete, RescaleCFG, CFGZeroStar, APG, TCFG, DifferentialDiffusion,
...) and samples with `comfy.sample.sample` (KSampler's path: noise from the seed, noise mask, KSamplerX0Inpaint)
or, for a guider, the guider's own `sample`. `tests/sd/test_sampler_patches_reference.py` runs sdgraph's nodes
on the same toy and compares. Imports the checkout on the CPU as `make_references.py` does.

    python tools/comfy_reference/sampler_patches.py --comfyui /tmp/comfyui \\
        --out tests/sd/data/sampler_patches.npz
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sd"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_references import write_torchvision_stand_in  # noqa: E402
from sampler_patch_cases import CASES  # noqa: E402
from toy_unet import LATENT_SHAPE, SEED, toy_latent, toy_mask, toy_output, toy_text  # noqa: E402


def import_comfy(comfyui: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="comfy-patches-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()


def toy_model_patcher() -> Any:
    import torch
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    class ToyDiffusionModel(torch.nn.Module):
        def __init__(self, **_: Any) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))
            self.dtype = torch.float32

        def forward(self, x: Any, timesteps: Any = None, context: Any = None, **_: Any) -> Any:
            return toy_output(x, timesteps, context)

    config = comfy.supported_models.SD15(dict(comfy.supported_models.SD15.unet_config))
    base = comfy.model_base.BaseModel(config, comfy.model_base.ModelType.EPS, device=torch.device("cpu"),
                                      unet_model=ToyDiffusionModel)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def node_classes() -> dict[str, Any]:
    import comfy_extras.nodes_apg as apg
    import comfy_extras.nodes_cfg as cfg
    import comfy_extras.nodes_custom_sampler as custom
    import comfy_extras.nodes_differential_diffusion as dd
    import comfy_extras.nodes_model_advanced as advanced
    import comfy_extras.nodes_perpneg as perpneg
    import comfy_extras.nodes_tcfg as tcfg

    return {"ModelSamplingDiscrete": advanced.ModelSamplingDiscrete,
            "ModelSamplingContinuousEDM": advanced.ModelSamplingContinuousEDM,
            "ModelSamplingContinuousV": advanced.ModelSamplingContinuousV, "RescaleCFG": advanced.RescaleCFG,
            "CFGZeroStar": cfg.CFGZeroStar, "APG": apg.APG, "TCFG": tcfg.TCFG,
            "DifferentialDiffusion": dd.DifferentialDiffusion, "PerpNegGuider": perpneg.PerpNegGuider,
            "DualCFGGuider": custom.DualCFGGuider, "BasicScheduler": custom.BasicScheduler}


def apply(cls: Any, **inputs: Any) -> Any:
    """A node's first output: V1 nodes by their FUNCTION, V3 nodes by execute."""
    if hasattr(cls, "FUNCTION"):
        return getattr(cls(), cls.FUNCTION)(**inputs)[0]
    return cls.execute(**inputs)[0]


def run_case(case: dict[str, Any], patcher: Any, classes: dict[str, Any]) -> Any:
    import torch
    import comfy.sample
    import comfy.samplers

    model = patcher
    for name, inputs in case["patches"]:
        model = apply(classes[name], model=model, **inputs)
    positive, negative, empty = ([[toy_text(seed), {}]] for seed in (1, 2, 3))
    latent = toy_latent() if case["masked"] else torch.zeros(LATENT_SHAPE)
    mask = toy_mask() if case["masked"] else None
    noise = comfy.sample.prepare_noise(latent, SEED)
    if case["guider"] is None:
        return comfy.sample.sample(model, noise, case["steps"], case["cfg"], case["sampler"], case["scheduler"],
                                   positive, negative, latent, denoise=case["denoise"], noise_mask=mask,
                                   disable_pbar=True, seed=SEED)
    name, inputs = case["guider"]
    if name == "PerpNegGuider":
        guider = apply(classes[name], model=model, positive=positive, negative=negative,
                       empty_conditioning=empty, **inputs)
    else:
        guider = apply(classes[name], model=model, cond1=positive, cond2=empty, negative=negative, **inputs)
    sigmas = apply(classes["BasicScheduler"], model=model, scheduler=case["scheduler"], steps=case["steps"],
                   denoise=case["denoise"])
    sampler = comfy.samplers.sampler_object(case["sampler"])
    return guider.sample(noise, latent, sampler, sigmas, denoise_mask=mask, disable_pbar=True, seed=SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "sampler_patches.npz")
    args = parser.parse_args()
    import_comfy(args.comfyui.resolve())
    import torch

    torch.set_num_threads(2)
    patcher, classes = toy_model_patcher(), node_classes()
    write_cases(CASES, lambda case: run_case(case, patcher, classes), args.out)


def write_cases(cases: dict[str, Any], run: Any, out: Path) -> None:
    """Run each case under inference mode and store its result, as float32, in one compressed .npz."""
    import torch

    results = {}
    for name, case in cases.items():
        with torch.inference_mode():
            result = run(case)
        results[name] = result.float().numpy()
        print(name, tuple(result.shape), float(result.abs().max()), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **results)
    print("wrote", out)


if __name__ == "__main__":
    main()
