"""Run ComfyUI's own k-diffusion sampler functions on a toy denoiser and store their outputs (dev tooling).

The toy denoiser is the exact posterior mean for Gaussian data with a per-channel mean and std (a fixed linear map
of x for each sigma); `tests/sd/test_sampler_toy_reference.py` runs sdgraph's samplers on the same denoiser,
sigmas, start and seed and compares. ComfyUI draws its own noise (a seeded CPU generator, or its Brownian tree for
the SDE samplers), so the test also checks that sdgraph queries its noise sources as ComfyUI does.

ComfyUI's sampler functions read `model.inner_model.model_patcher.get_model_object("model_sampling")` (and some
code paths `model.inner_model.inner_model.model_sampling`); the stand-in gives them an epsilon-prediction
`ModelSamplingDiscrete` from ComfyUI itself. Imports the checkout on the CPU as `make_references.py` does.

    python tools/comfy_reference/toy_samplers.py --comfyui /tmp/comfyui --out tests/sd/data/toy_samplers.npz
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sd"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_references import write_torchvision_stand_in  # noqa: E402
from toy_denoiser import SEED, SHAPE, toy_denoise, toy_guided, toy_sigmas, toy_start  # noqa: E402

# ComfyUI's sampler names, each run through comfy.samplers.ksampler(name).sampler_function (the k-diffusion
# function, or for dpm_fast / dpm_adaptive ComfyUI's wrapper that takes their sigma range from the schedule)
SAMPLERS = ("dpm_fast", "dpm_adaptive", "heunpp2", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "ipndm", "ipndm_v", "deis", "res_multistep",
            "res_multistep_ancestral", "gradient_estimation", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
            "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
            "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp")


def import_sampling(comfyui: Path):
    scratch = Path(tempfile.mkdtemp(prefix="comfy-toy-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.model_sampling as model_sampling
    import comfy.samplers as samplers
    return samplers, model_sampling


class _Patcher:
    def __init__(self, ms):
        self.ms = ms

    def get_model_object(self, name):
        assert name == "model_sampling", name
        return self.ms


class _Inner:
    def __init__(self, ms):
        self.model_patcher = _Patcher(ms)
        self.model_sampling = ms
        self.inner_model = self


class ToyModel:
    """What ComfyUI's samplers call as `model(x, sigma_batch, **extra_args)`. The *_cfg_pp samplers get the
    guided toy (`toy_guided`), whose unconditional estimate goes to the post-CFG functions they register in
    `model_options`, as ComfyUI's cfg function hands it over."""

    def __init__(self, ms):
        self.inner_model = _Inner(ms)

    def __call__(self, x, sigma, **extra_args):
        sigma = float(sigma.reshape(-1)[0])
        post_cfg = extra_args.get("model_options", {}).get("sampler_post_cfg_function", [])
        if not post_cfg:
            return toy_denoise(x, sigma)
        denoised, uncond = toy_guided(x, sigma)
        for fn in post_cfg:
            denoised = fn({"denoised": denoised, "uncond_denoised": uncond, "input": x})
        return denoised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "toy_samplers.npz")
    args = parser.parse_args()
    sampling, model_sampling = import_sampling(args.comfyui.resolve())
    import torch

    class EpsDiscrete(model_sampling.ModelSamplingDiscrete, model_sampling.EPS):
        pass

    model = ToyModel(EpsDiscrete())
    out = {}
    for schedule in ("karras", "uneven"):
        sigmas = toy_sigmas(schedule)
        for name in SAMPLERS:
            fn = sampling.ksampler(name).sampler_function
            with torch.no_grad():
                result = fn(model, toy_start(sigmas), sigmas.clone(), extra_args={"seed": SEED}, callback=None,
                            disable=True)
            out[f"{schedule}/{name}"] = result.numpy()
            print(schedule, name, float(result.abs().max()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print("wrote", args.out, SHAPE)


if __name__ == "__main__":
    main()
