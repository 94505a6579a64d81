"""Run ComfyUI's own sampler-side conditioning code on the toy scenarios of `tests/sd/cond_toy.py` and store the
guided estimates (dev tooling, not part of sdgraph).

For each scenario the conditioning goes through what `CFGGuider.sample` does before the first step:
`convert_cond`, the latent scaled in (`process_latent_in` unless it is all zeros), the noise mask prepared
(`prepare_mask`), then `process_conds` (areas in percent, masks and mask bounds, start/end percent as sigmas,
the model's extra conds including the inpainting / InstructPix2Pix concat, area twins); each sigma is then
evaluated with `sampling_function` (calc_cond_batch: area crops, weights with their edge fade, the average,
cfg). The model is a stand-in over the toy epsilon function: ComfyUI's discrete EPS model sampling, SD 1.5's
latent format, and BaseModel's (or IP2P's) own `extra_conds` / `concat_cond`; only `apply_model` is the toy.
Imports the checkout on the CPU as `make_references.py` does.

    python tools/comfy_reference/conditioning_reference.py --comfyui /tmp/comfyui \\
        --out tests/sd/data/conditioning_reference.npz
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
from cond_toy import scenarios, start, toy_eps  # noqa: E402
from make_references import write_torchvision_stand_in  # noqa: E402


def import_comfy(comfyui: Path) -> Any:
    scratch = Path(tempfile.mkdtemp(prefix="comfy-cond-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.samplers
    return comfy


class _Patcher:
    def prepare_state(self, timestep: Any) -> None:
        pass

    def apply_hooks(self, hooks: Any) -> dict:
        return {}


def stand_in_model(comfy: Any, kind: str | None) -> Any:
    import comfy.latent_formats
    import comfy.model_base as model_base
    import comfy.model_sampling as model_sampling

    class EpsDiscrete(model_sampling.ModelSamplingDiscrete, model_sampling.EPS):
        pass

    base = model_base.IP2P if kind == "ip2p" else model_base.BaseModel

    class ToyModel:
        extra_conds = model_base.BaseModel.extra_conds
        concat_cond = base.concat_cond
        process_latent_in = model_base.BaseModel.process_latent_in
        set_inpaint = model_base.BaseModel.set_inpaint

        def __init__(self) -> None:
            self.model_sampling = EpsDiscrete()
            self.latent_format = comfy.latent_formats.SD15()
            self.current_patcher = _Patcher()
            self.concat_keys = ()
            self.process_ip2p_image_in = lambda image: image
            if kind == "inpaint":
                self.set_inpaint()

        def encode_adm(self, **kwargs: Any) -> None:
            return None

        def memory_required(self, input_shape: Any, cond_shapes: Any = None) -> int:
            return 0

        def apply_model(self, x: Any, t: Any, c_concat: Any = None, c_crossattn: Any = None, control: Any = None,
                        transformer_options: Any = None, **kwargs: Any) -> Any:
            import torch

            xc = self.model_sampling.calculate_input(t, x)
            if c_concat is not None:
                xc = torch.cat([xc, c_concat.to(xc)], dim=1)
            eps = toy_eps(xc, self.model_sampling.timestep(t).float(), c_crossattn)
            return self.model_sampling.calculate_denoised(t, eps, x)

    return ToyModel()


def run_case(comfy: Any, name: str, case: dict[str, Any]) -> dict[str, np.ndarray]:
    import torch
    from comfy.sampler_helpers import convert_cond, prepare_mask

    model = stand_in_model(comfy, case["kind"])
    samples = case["samples"]
    noise = torch.zeros_like(samples)
    latent_image = model.process_latent_in(samples) if torch.count_nonzero(samples) > 0 else samples
    mask = case["noise_mask"]
    mask = prepare_mask(mask, noise.shape, "cpu") if mask is not None else None
    conds = {"positive": convert_cond(case["positive"]), "negative": convert_cond(case["negative"])}
    conds = comfy.samplers.process_conds(model, noise, conds, "cpu", latent_image, mask, 0)
    out = {}
    for i, sigma in enumerate(case["sigmas"]):
        x = start(name, tuple(samples.shape), sigma, i)
        timestep = torch.full((samples.shape[0],), sigma, dtype=torch.float32)
        with torch.no_grad():
            denoised = comfy.samplers.sampling_function(model, x, timestep, conds["negative"], conds["positive"],
                                                        case["cfg"], model_options={}, seed=0)
        out[f"{name}/{i}"] = denoised.numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "conditioning_reference.npz")
    args = parser.parse_args()
    comfy = import_comfy(args.comfyui.resolve())
    out: dict[str, np.ndarray] = {}
    for name, case in scenarios().items():
        part = run_case(comfy, name, case)
        out.update(part)
        print(name, [float(np.abs(v).max()) for v in part.values()], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
