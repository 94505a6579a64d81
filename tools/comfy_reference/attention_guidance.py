"""Run ComfyUI's PerturbedAttentionGuidance and SelfAttentionGuidance nodes and sampling code on a tiny real UNet
and store the sampled latents (dev tooling, not part of sdgraph).

The UNet of `tests/sd/attention_toy.py` (random, SD1 layout, a transformer in its middle block) is built with
diffusers, renamed to LDM keys with sdgraph's `ldm_names`, and loaded into ComfyUI's own UNetModel inside its
BaseModel (SD15's model config and model sampling) behind a ModelPatcher. Each case of `attention_toy.CASES`
patches it with ComfyUI's node classes and samples with `comfy.sample.sample` (KSampler's path), or with
BasicGuider through the guider's `sample`. tests/sd/test_attention_guidance_reference.py runs sdgraph's nodes on
the diffusers module and compares.

    python tools/comfy_reference/attention_guidance.py --comfyui /tmp/comfyui \\
        --out tests/sd/data/attention_guidance.npz
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "sd"), str(Path(__file__).resolve().parent)]
from attention_toy import CASES, SEED, UNET_CONFIG, attention_unet, toy_text  # noqa: E402
from sampler_patches import apply, import_comfy, write_cases  # noqa: E402


def ldm_weights() -> dict[str, Any]:
    """The toy's weights in LDM names (built before ComfyUI is imported: its torchvision stand-in would confuse
    diffusers' imports)."""
    from sdgraph.nodes.sd.ldm_names import unet_to_ldm

    unet = attention_unet()
    return {k: v.clone() for k, v in unet_to_ldm(unet.state_dict(), dict(unet.config)).items()}


def toy_model_patcher(weights: dict[str, Any]) -> Any:
    import torch
    import comfy.model_base
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models

    prefix = "model.diffusion_model."
    unet_config = comfy.model_detection.detect_unet_config(weights, prefix)
    assert unet_config["context_dim"] == UNET_CONFIG["cross_attention_dim"], unet_config
    config = comfy.supported_models.SD15(unet_config)
    cpu = torch.device("cpu")
    base = comfy.model_base.BaseModel(config, comfy.model_base.ModelType.EPS, device=cpu)
    base.load_model_weights(dict(weights), prefix)
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def node_classes() -> dict[str, Any]:
    import comfy_extras.nodes_custom_sampler as custom
    import comfy_extras.nodes_model_advanced as advanced
    import comfy_extras.nodes_pag as pag
    import comfy_extras.nodes_sag as sag

    return {"PerturbedAttentionGuidance": pag.PerturbedAttentionGuidance,
            "SelfAttentionGuidance": sag.SelfAttentionGuidance,
            "ModelSamplingDiscrete": advanced.ModelSamplingDiscrete, "BasicGuider": custom.BasicGuider,
            "BasicScheduler": custom.BasicScheduler}


def run_case(case: dict[str, Any], patcher: Any, classes: dict[str, Any]) -> Any:
    import torch
    import comfy.sample
    import comfy.samplers

    model = patcher
    for name, inputs in case["patches"]:
        model = apply(classes[name], model=model, **inputs)
    positive, negative = ([[toy_text(seed), {}]] for seed in (1, 2))
    latent = torch.zeros(case["shape"])
    noise = comfy.sample.prepare_noise(latent, SEED)
    if case["guider"] is None:
        return comfy.sample.sample(model, noise, case["steps"], case["cfg"], case["sampler"], case["scheduler"],
                                   positive, negative, latent, disable_pbar=True, seed=SEED)
    guider = apply(classes["BasicGuider"], model=model, conditioning=positive)
    sigmas = apply(classes["BasicScheduler"], model=model, scheduler=case["scheduler"], steps=case["steps"],
                   denoise=1.0)
    return guider.sample(noise, latent, comfy.samplers.sampler_object(case["sampler"]), sigmas, disable_pbar=True,
                         seed=SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "attention_guidance.npz")
    args = parser.parse_args()
    weights = ldm_weights()
    import_comfy(args.comfyui.resolve())
    import torch

    torch.set_num_threads(2)
    patcher, classes = toy_model_patcher(weights), node_classes()
    write_cases(CASES, lambda case: run_case(case, patcher, classes), args.out)


if __name__ == "__main__":
    main()
