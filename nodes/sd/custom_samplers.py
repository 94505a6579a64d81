"""More SAMPLER nodes of the custom-sampling set: samplers of `k_samplers` with the options ComfyUI's nodes
expose (CFG++ Euler ancestral, DPM-Solver++(3M) SDE, adaptive DPM-Solver, ER-SDE, SA-Solver), LCM with
upscaling between steps, and the two Euler CFG++ versions.

Each node returns a `SamplerChoice`: the sampler's name and the keyword options it is called with (an
"s_noise" option scales the sampler's noise, see `sampling.call_sampler`). At their defaults the nodes sample
as the KSampler name they stand for. `sampling` registers these nodes.
"""
from __future__ import annotations

from typing import Any

from sdgraph.node import Float, Input, Int, Node, Output
from sdgraph.spec import InputSpec
from sdgraph.types import BOOLEAN, MODEL

from sdgraph.nodes.sd.custom_sampling import SAMPLER, SAMPLERS, SamplerChoice, _option
from sdgraph.nodes.sd.custom_sigmas import choice
from sdgraph.nodes.sd.k_extra import PowerNoiseScaler
from sdgraph.nodes.sd.k_sa_solver import sa_tau_interval
from sdgraph.nodes.sd.k_upscale import UPSCALE_METHODS
from sdgraph.nodes.sd.model_sampling import model_sampling_of

_NOISE_DEVICE = choice("noise_device", ["gpu", "cpu"])


def _switch(name: str) -> InputSpec:
    """A boolean declared as ComfyUI declares these: no default in the description (it starts off)."""
    return InputSpec(name=name, type=BOOLEAN, section="required", default=False, implied_default=True)


class SamplerEulerAncestralCFGPP(Node):
    """Euler ancestral CFG++ with its eta (the fresh noise's share of each step) and s_noise."""

    category = SAMPLERS
    display_name = "SamplerEulerAncestralCFG++"
    inputs = [Float("eta", 1.0, min=0.0, max=1.0, step=0.01, round=False),
              Float("s_noise", 1.0, min=0.0, max=10.0, step=0.01, round=False)]
    outputs = [Output(SAMPLER)]

    def run(self, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        return (SamplerChoice("euler_ancestral_cfg_pp", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_3M_SDE(Node):
    """DPM-Solver++(3M) SDE with eta and s_noise. The Brownian noise is drawn on the CPU whichever noise_device
    is chosen, so both choices give the same picture."""

    category = SAMPLERS
    inputs = [_option("eta", 1.0), _option("s_noise", 1.0), _NOISE_DEVICE]
    outputs = [Output(SAMPLER)]

    def run(self, eta: float, s_noise: float, noise_device: str) -> tuple[SamplerChoice]:
        return (SamplerChoice("dpmpp_3m_sde", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMAdaptative(Node):
    """DPM-Solver with adaptive step sizes: its order (2 or 3), the error tolerances, the first step, the step
    controller's coefficients and acceptance threshold; eta above 0 adds ancestral noise (scaled by s_noise)."""

    category = SAMPLERS
    inputs = [Int("order", 3, min=2, max=3, step=None), _option("rtol", 0.05), _option("atol", 0.0078),
              _option("h_init", 0.05), _option("pcoeff", 0.0), _option("icoeff", 1.0), _option("dcoeff", 0.0),
              _option("accept_safety", 0.81), _option("eta", 0.0), _option("s_noise", 1.0)]
    outputs = [Output(SAMPLER)]

    def run(self, order: int, rtol: float, atol: float, h_init: float, pcoeff: float, icoeff: float,
            dcoeff: float, accept_safety: float, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        if order not in (2, 3):
            raise ValueError(f"SamplerDPMAdaptative.order: must be 2 or 3, got {order}")
        options = {"order": order, "rtol": rtol, "atol": atol, "h_init": h_init, "pcoeff": pcoeff,
                   "icoeff": icoeff, "dcoeff": dcoeff, "accept_safety": accept_safety, "eta": eta, "s_noise": s_noise}
        return (SamplerChoice("dpm_adaptive", options),)


class SamplerER_SDE(Node):
    """The extended reverse-time SDE solver: ER-SDE's own noise scaling, the reverse-time SDE's (lambda^(eta +
    1); eta 0 is the ODE) or the ODE (no noise); max_stage caps its order."""

    category = SAMPLERS
    inputs = [choice("solver_type", ["ER-SDE", "Reverse-time SDE", "ODE"]),
              Int("max_stage", 3, min=1, max=3, step=None), _option("eta", 1.0), _option("s_noise", 1.0)]
    outputs = [Output(SAMPLER)]

    def run(self, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        options: dict[str, Any] = {"s_noise": s_noise, "max_stage": max_stage}
        if solver_type != "ER-SDE":
            options["noise_scaler"] = PowerNoiseScaler(eta + 1)
        return (SamplerChoice("er_sde", options),)


class SamplerSASolver(Node):
    """SA-Solver with its stochastic strength eta over a part of the model's schedule (from sde_start_percent to
    sde_end_percent of the sampling process), s_noise, the predictor's and corrector's orders (corrector 0: none),
    PECE mode (the corrected state evaluated again) and the simplified second-order weights."""

    category = SAMPLERS
    inputs = [Input("model", MODEL), Float("eta", 1.0, min=0.0, max=10.0, step=0.01, round=False),
              Float("sde_start_percent", 0.2, min=0.0, max=1.0, step=0.001),
              Float("sde_end_percent", 0.8, min=0.0, max=1.0, step=0.001), _option("s_noise", 1.0),
              Int("predictor_order", 3, min=1, max=6, step=None), Int("corrector_order", 4, min=0, max=6, step=None),
              _switch("use_pece"), _switch("simple_order_2")]
    outputs = [Output(SAMPLER)]

    def run(self, model: Any, eta: float, sde_start_percent: float, sde_end_percent: float, s_noise: float,
            predictor_order: int, corrector_order: int, use_pece: bool, simple_order_2: bool
            ) -> tuple[SamplerChoice]:
        for name, value, low in (("predictor_order", predictor_order, 1), ("corrector_order", corrector_order, 0)):
            if not low <= value <= 6:
                raise ValueError(f"SamplerSASolver.{name}: must be from {low} to 6, got {value}")
        interval = sa_tau_interval(model_sampling_of(model), sde_start_percent, sde_end_percent)
        options = {"tau_interval": interval, "eta": eta, "s_noise": s_noise, "predictor_order": predictor_order,
                   "corrector_order": corrector_order, "pece": bool(use_pece), "simple_order_2": bool(simple_order_2)}
        return (SamplerChoice("sa_solver", options),)


class SamplerLCMUpscale(Node):
    """LCM sampling that enlarges the latent between steps up to scale_ratio times its size, over scale_steps
    steps (-1: about half of them), resized with upscale_method."""

    category = SAMPLERS
    inputs = [Float("scale_ratio", 1.0, min=0.1, max=20.0, step=0.01),
              Int("scale_steps", -1, min=-1, max=1000, step=1), choice("upscale_method", UPSCALE_METHODS)]
    outputs = [Output(SAMPLER)]

    def run(self, scale_ratio: float, scale_steps: int, upscale_method: str) -> tuple[SamplerChoice]:
        if not scale_ratio > 0.0:
            raise ValueError(f"SamplerLCMUpscale.scale_ratio: must be above 0, got {scale_ratio}")
        options = {"total_upscale": scale_ratio, "upscale_steps": None if scale_steps < 0 else scale_steps,
                   "upscale_method": upscale_method}
        return (SamplerChoice("lcm_upscale", options),)


class SamplerEulerCFGpp(Node):
    """Euler CFG++: "regular" is KSampler's euler_cfg_pp, "alternative" steps along x - 2 guided + unconditional
    (experimental in ComfyUI)."""

    category = "_for_testing"
    display_name = "SamplerEulerCFG++"
    inputs = [choice("version", ["regular", "alternative"])]
    outputs = [Output(SAMPLER)]

    def run(self, version: str) -> tuple[SamplerChoice]:
        return (SamplerChoice("euler_cfg_pp_alternative" if version == "alternative" else "euler_cfg_pp"),)


NODES = [SamplerEulerAncestralCFGPP, SamplerDPMPP_3M_SDE, SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver,
         SamplerLCMUpscale, SamplerEulerCFGpp]
