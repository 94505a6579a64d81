"""The parity cases: API-format prompts that sdgraph and the reference ComfyUI both run.

Every case decodes in node "8"; that node's IMAGE output is what is compared. The checkpoint name is filled in
by whoever runs the case (`prompt(case, ckpt_name)`).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

INPUT_IMAGE = "parity_input.png"
INPAINT_IMAGE = "parity_inpaint.png"  # INPUT_IMAGE with a transparent, soft-edged disc: LoadImage's mask
LORA = "parity-lora-kohya.safetensors"
HYPERNETWORK = "parity-hypernetwork.pt"
CONTROLNETS = {"original": "parity-controlnet-original.safetensors",
               "diffusers": "parity-controlnet-diffusers.safetensors"}  # one net in two file layouts
DECODE_NODE = "8"
SAMPLER_NODE = "3"  # its LATENT output is stored too, unscaled as ComfyUI keeps it

_BASE: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": None}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red circle on a blue background"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
    "3": {"class_type": "KSampler", "inputs": {
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "seed": 42,
        "steps": 4, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
}


SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_sde",
            "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu",
            "ddpm", "lcm", "ddim", "uni_pc", "uni_pc_bh2")
# The samplers that came with ComfyUI's full list (issue 15): each with karras.
NEWER_SAMPLERS = ("euler_cfg_pp", "euler_ancestral_cfg_pp", "heunpp2", "dpm_fast", "dpm_adaptive",
                  "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "ipndm",
                  "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
                  "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
                  "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece")
SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta", "linear_quadratic",
              "kl_optimal")
# One-token words, so the token positions below are exact for the CLIP tokenizer.
_WORDS = ("red green blue circle square small large soft bright dark light round shape line edge corner top left "
          "right bottom center wide thin tall short warm cold calm deep pale sharp").split()


def _words(count: int, offset: int = 0) -> str:
    return " ".join(_WORDS[(i + offset) % len(_WORDS)] for i in range(count))


# 73 tokens, then a 3-token weighted run that would straddle the first 75-token cut (short: it moves whole into
# the second chunk), 60 tokens, then a 15-token weighted run that straddles the second cut (long: it is split).
LONG_PROMPT = (f"{_words(73)} (glowing red disc:1.3) {_words(60, 5)} (soft blue gradient background with fine "
               "grain and a gentle vignette at every corner:0.8) the end")


def _case(sampler: str = "euler", scheduler: str = "normal", batch: int = 1, img2img: bool = False) -> dict:
    p = copy.deepcopy(_BASE)
    p["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler)
    p["5"]["inputs"]["batch_size"] = batch
    if img2img:
        del p["5"]
        p["10"] = {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}}
        p["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        p["3"]["inputs"].update(latent_image=["11", 0], denoise=0.6)
    return p


def _inpaint(style: str) -> dict:
    """Inpainting a soft-edged disc (the mask is the picture's transparency): VAEEncodeForInpaint at full denoise,
    or VAEEncode + SetLatentNoiseMask at 0.8."""
    p = _case()
    del p["5"]
    p["10"] = {"class_type": "LoadImage", "inputs": {"image": INPAINT_IMAGE}}
    if style == "encode_for_inpaint":
        p["11"] = {"class_type": "VAEEncodeForInpaint",
                   "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["10", 1], "grow_mask_by": 6}}
        p["3"]["inputs"]["latent_image"] = ["11", 0]
    else:
        p["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        p["12"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["10", 1]}}
        p["3"]["inputs"].update(latent_image=["12", 0], denoise=0.8)
    return p


def _with_text(positive: str, negative: str = "blurry") -> dict:
    p = _case()
    p["6"]["inputs"]["text"], p["7"]["inputs"]["text"] = positive, negative
    return p


def _clip_skip() -> dict:
    p = _case()
    p["20"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}}
    p["6"]["inputs"]["clip"] = p["7"]["inputs"]["clip"] = ["20", 0]
    return p


def _lora() -> dict:
    p = _case("dpmpp_2m", "karras")
    p["21"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": LORA,
                                                        "strength_model": 0.8, "strength_clip": 0.6}}
    p["3"]["inputs"]["model"] = ["21", 0]
    p["6"]["inputs"]["clip"] = p["7"]["inputs"]["clip"] = ["21", 1]
    return p


def _controlnet(layout: str) -> dict:
    """ControlNetApplyAdvanced with the img2img picture as the hint, strength 0.9, over the first 80%."""
    p = _case()
    p["30"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNETS[layout]}}
    p["31"] = {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}}
    p["32"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["30", 0], "image": ["31", 0],
        "strength": 0.9, "start_percent": 0.0, "end_percent": 0.8}}
    p["3"]["inputs"].update(positive=["32", 0], negative=["32", 1])
    return p


def _patched(*chain: tuple[str, dict[str, Any]], width: int = 64, height: int = 64) -> dict:
    """The euler / normal case with model-patch nodes chained between the checkpoint and the sampler."""
    p = _case()
    p["5"]["inputs"].update(width=width, height=height)
    source: list[Any] = ["4", 0]
    for number, (class_type, inputs) in enumerate(chain, start=40):
        p[str(number)] = {"class_type": class_type, "inputs": {"model": source, **inputs}}
        source = [str(number), 0]
    p["3"]["inputs"]["model"] = source
    return p


_FREEU = {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}
_SHRINK = {"block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0, "end_percent": 0.5,
           "downscale_after_skip": True, "downscale_method": "bicubic", "upscale_method": "bicubic"}
# The UNet-level model patches (issue 15). HyperTile with swap_size 1 draws nothing at random (ComfyUI draws from
# torch's global generator); TomePatchModel always does, so it has no reference. FreeU_V2 runs 128 x 64: at 64 x 64
# the deepest features are 1 x 1, whose normalised mean map is 0 / 0 (ComfyUI samples NaN; sdgraph leaves them).
# PAG and SAG change the middle block's self-attention, over one position at 64 x 64 (where attending is the
# identity): PAG runs 128 x 64 (2 positions), SAG 128 x 128 (its map must lay out on a grid: 2 x 2).
PATCH_CASES: dict[str, dict[str, Any]] = {
    "freeu": _patched(("FreeU", _FREEU)),
    "freeu_v2": _patched(("FreeU_V2", _FREEU), width=128),
    "deep_shrink": _patched(("PatchModelAddDownscale", _SHRINK)),
    "deep_shrink_before_skip": _patched(("PatchModelAddDownscale", dict(
        _SHRINK, block_number=1, downscale_factor=1.5, downscale_after_skip=False, downscale_method="bilinear",
        upscale_method="area"))),
    "hypertile": _patched(("HyperTile", {"tile_size": 32, "swap_size": 1, "max_depth": 1, "scale_depth": False})),
    "hypernetwork": _patched(("HypernetworkLoader", {"hypernetwork_name": HYPERNETWORK, "strength": 0.8})),
    "pag": _patched(("PerturbedAttentionGuidance", {"scale": 3.0}), width=128),
    "sag": _patched(("SelfAttentionGuidance", {"scale": 0.8, "blur_sigma": 2.0}), width=128, height=128),
    "freeu_hypertile_hypernetwork": _patched(
        ("HypernetworkLoader", {"hypernetwork_name": HYPERNETWORK, "strength": 0.8}), ("FreeU_V2", _FREEU),
        ("HyperTile", {"tile_size": 32, "swap_size": 1, "max_depth": 0, "scale_depth": False}), width=128),
}


def _sampler_cases() -> dict[str, dict[str, Any]]:
    """Every sampler with "normal" and "karras", the other schedulers with euler, and the pairings some samplers
    are usually run with."""
    pairs = [(s, sch) for s in SAMPLERS for sch in ("normal", "karras")]
    pairs += [("euler", sch) for sch in SCHEDULERS if sch not in ("normal", "karras")]
    pairs += [("ddim", "ddim_uniform"), ("lcm", "sgm_uniform"), ("uni_pc", "simple")]
    pairs += [(s, "karras") for s in NEWER_SAMPLERS]
    return {f"{s}_{sch}": _case(s, sch) for s, sch in pairs}


CASES: dict[str, dict[str, Any]] = {
    **_sampler_cases(),
    "batch2_euler_normal": _case(batch=2),
    "batch2_euler_ancestral_normal": _case("euler_ancestral", batch=2),
    "batch2_dpmpp_2m_sde_karras": _case("dpmpp_2m_sde", "karras", batch=2),
    "img2img_euler_normal_d06": _case(img2img=True),
    "inpaint_encode_for_inpaint": _inpaint("encode_for_inpaint"),
    "inpaint_noise_mask": _inpaint("noise_mask"),
    "emphasis": _with_text("a (red:1.3) circle on a ((blue)) background, (sharp:0.7)", "(blurry:1.2), lowres"),
    "long_prompt": _with_text(LONG_PROMPT),
    "clip_skip_2": _clip_skip(),
    "lora_kohya": _lora(),
    "controlnet_original_layout": _controlnet("original"),
    "controlnet_diffusers_layout": _controlnet("diffusers"),
    **PATCH_CASES,
}


def prompt(name: str, ckpt_name: str) -> dict[str, Any]:
    p = copy.deepcopy(CASES[name])
    p["4"]["inputs"]["ckpt_name"] = ckpt_name
    return p


def input_image() -> np.ndarray:
    """The img2img source: a 64x64 RGB gradient with a disc, as uint8 (written as PNG by each runner)."""
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    disc = ((x - 24) ** 2 + (y - 30) ** 2 < 15 ** 2).astype(np.float32)
    rgb = np.stack([x * 4 * (1 - disc) + 230 * disc, y * 3, 255 - x * 2], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def inpaint_image() -> np.ndarray:
    """INPUT_IMAGE as RGBA, transparent (mask 1) in a disc whose edge fades over 6 pixels."""
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    distance = np.sqrt((x - 38) ** 2 + (y - 34) ** 2)
    alpha = np.clip((distance - 12) / 6, 0, 1) * 255
    return np.concatenate([input_image(), alpha.astype(np.uint8)[..., None]], axis=-1)


def write_inputs(folder) -> None:
    """The pictures the cases load, into an input folder."""
    from PIL import Image

    Image.fromarray(input_image()).save(folder / INPUT_IMAGE)
    Image.fromarray(inpaint_image(), "RGBA").save(folder / INPAINT_IMAGE)


def png_pixels(image: np.ndarray) -> np.ndarray:
    """The 8-bit pixels a PNG writer that truncates (as ComfyUI's SaveImage does) stores for a float image."""
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)
