"""The cases of the sampler-patch reference (tests/sd/test_sampler_patches_reference.py), shared with
tools/comfy_reference/sampler_patches.py, which ran ComfyUI's own nodes and sampling code on them. Plain data:
each side maps the node names to its own node classes.

A case: the MODEL patch nodes applied in order (name, inputs), then either KSampler (sampler, scheduler, steps,
cfg, denoise) or, with "guider", SamplerCustomAdvanced with that guider node, KSamplerSelect(sampler) and
BasicScheduler(scheduler, steps). "masked" samples the toy latent under the toy noise mask instead of an empty
latent. Positive, negative and empty conditionings are toy_text(1), toy_text(2), toy_text(3). The cases in
UNCHANGED sample what they sample without their patches: TCFG at cfg 1 has no unconditional side to damp, and
PerpNegGuider runs the pre- and post-cfg functions but never the cfg function (RescaleCFG's hook).
"""
from __future__ import annotations

from typing import Any

BASE: dict[str, Any] = {"patches": [], "sampler": "euler", "scheduler": "karras", "steps": 6, "cfg": 5.0,
                        "denoise": 1.0, "masked": False, "guider": None}


def _case(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


UNCHANGED = {"tcfg_cfg1", "perp_neg_rescale"}

CASES: dict[str, dict[str, Any]] = {
    "plain": _case(),
    "plain_dpmpp_2m_normal": _case(sampler="dpmpp_2m", scheduler="normal"),
    "rescale_cfg": _case(patches=[("RescaleCFG", {"multiplier": 0.7})]),
    "cfg_zero_star": _case(patches=[("CFGZeroStar", {})]),
    "apg": _case(patches=[("APG", {"eta": 0.5, "norm_threshold": 2.0, "momentum": 0.3})]),
    "tcfg": _case(patches=[("TCFG", {})]),
    "tcfg_cfg1": _case(patches=[("TCFG", {})], cfg=1.0),
    "apg_cfg1": _case(patches=[("APG", {"eta": 0.5, "norm_threshold": 0.0, "momentum": 0.0})], cfg=1.0),
    "v_prediction": _case(patches=[("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False})]),
    # zsnr starts at sigma ~4519. With "normal", euler's first step goes to sigma ~4 and ComfyUI's float32
    # x + d * dt (|x| ~ 4519) keeps ~5e-4 of rounding (sdgraph steps by lerp): those cases run karras, or
    # dpmpp_2m for "normal", whose step has no such cancellation.
    "v_zsnr_rescale": _case(patches=[("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": True}),
                                     ("RescaleCFG", {"multiplier": 0.7})]),
    "v_zsnr_dpmpp_2m_normal": _case(patches=[("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": True})],
                                    sampler="dpmpp_2m", scheduler="normal"),
    "eps_zsnr_karras": _case(patches=[("ModelSamplingDiscrete", {"sampling": "eps", "zsnr": True})]),
    "lcm": _case(patches=[("ModelSamplingDiscrete", {"sampling": "lcm", "zsnr": False})], sampler="lcm",
                 scheduler="sgm_uniform", steps=4, cfg=1.5),
    "x0": _case(patches=[("ModelSamplingDiscrete", {"sampling": "x0", "zsnr": False})], scheduler="simple"),
    "img_to_img": _case(patches=[("ModelSamplingDiscrete", {"sampling": "img_to_img", "zsnr": False})]),
    "edm": _case(patches=[("ModelSamplingContinuousEDM", {"sampling": "edm", "sigma_max": 120.0,
                                                          "sigma_min": 0.002})], steps=8),
    "edm_v_normal": _case(patches=[("ModelSamplingContinuousEDM", {"sampling": "v_prediction", "sigma_max": 80.0,
                                                                   "sigma_min": 0.01})], scheduler="normal"),
    "edm_eps_exponential": _case(patches=[("ModelSamplingContinuousEDM", {"sampling": "eps", "sigma_max": 20.0,
                                                                          "sigma_min": 0.03})],
                                 scheduler="exponential"),
    "edm_playground": _case(patches=[("ModelSamplingContinuousEDM", {"sampling": "edm_playground_v2.5",
                                                                     "sigma_max": 80.0, "sigma_min": 0.002})],
                            masked=True, denoise=0.7),
    "cosmos_rflow": _case(patches=[("ModelSamplingContinuousEDM", {"sampling": "cosmos_rflow", "sigma_max": 80.0,
                                                                   "sigma_min": 0.002})]),
    "continuous_v": _case(patches=[("ModelSamplingContinuousV", {"sampling": "v_prediction", "sigma_max": 500.0,
                                                                 "sigma_min": 0.03})], steps=8),
    "differential_diffusion": _case(patches=[("DifferentialDiffusion", {"strength": 1.0})], masked=True),
    "differential_diffusion_half": _case(patches=[("DifferentialDiffusion", {"strength": 0.5})], masked=True,
                                         denoise=0.8, scheduler="normal"),
    "cfg_pp_zero_star": _case(patches=[("CFGZeroStar", {})], sampler="euler_cfg_pp", cfg=1.4),
    "perp_neg": _case(guider=("PerpNegGuider", {"cfg": 5.0, "neg_scale": 1.2})),
    "perp_neg_zero_star": _case(patches=[("CFGZeroStar", {})],
                                guider=("PerpNegGuider", {"cfg": 4.0, "neg_scale": 0.8})),
    "perp_neg_rescale": _case(patches=[("RescaleCFG", {"multiplier": 0.5})],
                              guider=("PerpNegGuider", {"cfg": 4.0, "neg_scale": 0.8})),
    "dual_cfg_rescale": _case(patches=[("RescaleCFG", {"multiplier": 0.6})],
                              guider=("DualCFGGuider", {"cfg_conds": 4.0, "cfg_cond2_negative": 2.0,
                                                        "style": "regular"})),
    "dual_cfg_nested_zero_star": _case(patches=[("CFGZeroStar", {})],
                                 guider=("DualCFGGuider", {"cfg_conds": 3.0, "cfg_cond2_negative": 2.5,
                                                           "style": "nested"})),
}
