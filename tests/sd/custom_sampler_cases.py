"""The cases that tools/comfy_reference/custom_sampling_refs.py ran through ComfyUI's own nodes and functions and
that the tests run through sdgraph's: SAMPLER nodes with options on the toy denoiser, the schedulers, the sigma
extension and bislerp. Plain data (ComfyUI's node names and inputs), no torch: the dev script imports this next
to a ComfyUI checkout. "model" stands for the model input (SD1's discrete schedule on both sides)."""
from __future__ import annotations

MODEL = "model"

# key -> (node class name, inputs in ComfyUI's order); each runs on the toy problem's two schedules
SAMPLER_NODES: dict[str, tuple[str, dict]] = {
    "euler_a_cfgpp_eta": ("SamplerEulerAncestralCFGPP", {"eta": 0.6, "s_noise": 0.8}),
    "dpmpp_3m_sde_options": ("SamplerDPMPP_3M_SDE", {"eta": 0.5, "s_noise": 1.4, "noise_device": "cpu"}),
    "dpmpp_3m_sde_ode": ("SamplerDPMPP_3M_SDE", {"eta": 0.0, "s_noise": 1.0, "noise_device": "gpu"}),
    "dpm_adaptive_eta": ("SamplerDPMAdaptative", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05,
                                                  "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0, "accept_safety": 0.81,
                                                  "eta": 0.5, "s_noise": 0.8}),
    "dpm_adaptive_order2": ("SamplerDPMAdaptative", {"order": 2, "rtol": 0.1, "atol": 0.01, "h_init": 0.1,
                                                     "pcoeff": 0.1, "icoeff": 0.9, "dcoeff": 0.05,
                                                     "accept_safety": 0.7, "eta": 0.0, "s_noise": 1.0}),
    "er_sde_stage2": ("SamplerER_SDE", {"solver_type": "ER-SDE", "max_stage": 2, "eta": 1.0, "s_noise": 0.6}),
    "er_sde_reverse": ("SamplerER_SDE", {"solver_type": "Reverse-time SDE", "max_stage": 3, "eta": 0.5,
                                         "s_noise": 1.0}),
    "er_sde_reverse_eta0": ("SamplerER_SDE", {"solver_type": "Reverse-time SDE", "max_stage": 3, "eta": 0.0,
                                              "s_noise": 1.0}),
    "er_sde_ode": ("SamplerER_SDE", {"solver_type": "ODE", "max_stage": 1, "eta": 1.0, "s_noise": 1.0}),
    "sa_solver_low_orders": ("SamplerSASolver", {"model": MODEL, "eta": 0.7, "sde_start_percent": 0.1,
                                                 "sde_end_percent": 0.9, "s_noise": 0.8, "predictor_order": 2,
                                                 "corrector_order": 1, "use_pece": False, "simple_order_2": False}),
    "sa_solver_pece_simple": ("SamplerSASolver", {"model": MODEL, "eta": 1.0, "sde_start_percent": 0.2,
                                                  "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
                                                  "corrector_order": 4, "use_pece": True, "simple_order_2": True}),
    "sa_solver_simple_2": ("SamplerSASolver", {"model": MODEL, "eta": 1.0, "sde_start_percent": 0.2,
                                               "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 2,
                                               "corrector_order": 2, "use_pece": False, "simple_order_2": True}),
    "sa_solver_whole_range": ("SamplerSASolver", {"model": MODEL, "eta": 1.3, "sde_start_percent": 0.0,
                                                  "sde_end_percent": 1.0, "s_noise": 1.0, "predictor_order": 5,
                                                  "corrector_order": 6, "use_pece": False, "simple_order_2": False}),
    "sa_solver_ode": ("SamplerSASolver", {"model": MODEL, "eta": 0.0, "sde_start_percent": 0.2,
                                          "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
                                          "corrector_order": 0, "use_pece": False, "simple_order_2": False}),
    "lcm_upscale_bislerp": ("SamplerLCMUpscale", {"scale_ratio": 1.5, "scale_steps": -1, "upscale_method": "bislerp"}),
    "lcm_upscale_bilinear": ("SamplerLCMUpscale", {"scale_ratio": 2.0, "scale_steps": 2,
                                                   "upscale_method": "bilinear"}),
    "lcm_upscale_nearest": ("SamplerLCMUpscale", {"scale_ratio": 1.3, "scale_steps": 3,
                                                  "upscale_method": "nearest-exact"}),
    "lcm_upscale_area": ("SamplerLCMUpscale", {"scale_ratio": 1.75, "scale_steps": -1, "upscale_method": "area"}),
    "lcm_upscale_bicubic": ("SamplerLCMUpscale", {"scale_ratio": 1.2, "scale_steps": 1, "upscale_method": "bicubic"}),
    "lcm_upscale_same_size": ("SamplerLCMUpscale", {"scale_ratio": 1.0, "scale_steps": -1,
                                                    "upscale_method": "bislerp"}),
    "euler_cfgpp_alternative": ("SamplerEulerCFGpp", {"version": "alternative"}),
    "euler_cfgpp_regular": ("SamplerEulerCFGpp", {"version": "regular"}),
}

# key -> (node class name, inputs); the sigmas the node returns
SCHEDULER_NODES: dict[str, tuple[str, dict]] = {
    "vp_default": ("VPScheduler", {"steps": 20, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}),
    "vp_other": ("VPScheduler", {"steps": 7, "beta_d": 12.5, "beta_min": 0.3, "eps_s": 0.01}),
    "vp_one": ("VPScheduler", {"steps": 1, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}),
    "laplace_default": ("LaplaceScheduler", {"steps": 20, "sigma_max": 14.614642, "sigma_min": 0.0291675, "mu": 0.0,
                                             "beta": 0.5}),
    "laplace_shifted": ("LaplaceScheduler", {"steps": 9, "sigma_max": 10.0, "sigma_min": 0.05, "mu": 0.7,
                                             "beta": 1.3}),
    "laplace_narrow": ("LaplaceScheduler", {"steps": 6, "sigma_max": 14.6, "sigma_min": 0.03, "mu": -1.5,
                                            "beta": 0.2}),
    "laplace_one": ("LaplaceScheduler", {"steps": 1, "sigma_max": 14.614642, "sigma_min": 0.0291675, "mu": 0.0,
                                         "beta": 0.5}),
    "beta_default": ("BetaSamplingScheduler", {"model": MODEL, "steps": 20, "alpha": 0.6, "beta": 0.6}),
    "beta_skewed": ("BetaSamplingScheduler", {"model": MODEL, "steps": 9, "alpha": 0.3, "beta": 1.7}),
    "beta_other": ("BetaSamplingScheduler", {"model": MODEL, "steps": 5, "alpha": 2.0, "beta": 0.5}),
    "beta_many": ("BetaSamplingScheduler", {"model": MODEL, "steps": 40, "alpha": 0.6, "beta": 0.6}),
    "beta_one": ("BetaSamplingScheduler", {"model": MODEL, "steps": 1, "alpha": 0.6, "beta": 0.6}),
}
for _family in ("SD1", "SDXL", "SVD"):
    for _steps, _denoise in ((10, 1.0), (10, 0.6), (25, 1.0), (4, 1.0), (7, 0.5), (1, 1.0), (1, 0.4)):
        SCHEDULER_NODES[f"ays_{_family}_{_steps}_{_denoise}"] = (
            "AlignYourStepsScheduler", {"model_type": _family, "steps": _steps, "denoise": _denoise})
for _coeff in (0.8, 1.05, 1.2, 1.5):
    for _steps in (2, 10, 20, 21, 35):
        for _denoise in (1.0, 0.7):
            SCHEDULER_NODES[f"gits_{_coeff}_{_steps}_{_denoise}"] = (
                "GITSScheduler", {"coeff": _coeff, "steps": _steps, "denoise": _denoise})

# ExtendIntermediateSigmas on 8 Karras steps over SD1's range (KarrasScheduler's defaults)
EXTEND_INPUT = ("KarrasScheduler", {"steps": 8, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 7.0})
EXTEND_CASES: dict[str, dict] = {
    "linear_top": {"steps": 2, "start_at_sigma": -1.0, "end_at_sigma": 12.0, "spacing": "linear"},
    "cosine_middle": {"steps": 3, "start_at_sigma": 10.0, "end_at_sigma": 1.0, "spacing": "cosine"},
    "sine_all": {"steps": 4, "start_at_sigma": -1.0, "end_at_sigma": 0.0, "spacing": "sine"},
    "one_step": {"steps": 1, "start_at_sigma": -1.0, "end_at_sigma": 0.0, "spacing": "linear"},
}

# bislerp: seeded [2, 4, h, w] inputs resized to (height, width)
BISLERP_CASES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "up": ((6, 6), (9, 9)), "uneven": ((8, 5), (12, 7)), "same": ((8, 8), (8, 8)), "down": ((7, 9), (4, 5)),
}
BISLERP_SEED = 7
