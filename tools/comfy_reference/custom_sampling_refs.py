"""Run ComfyUI's own custom-sampling nodes on the cases of tests/sd/custom_sampler_cases.py and store the
numbers (dev tooling) in tests/sd/data/custom_sampling.npz:

- "sampler/<schedule>/<case>": the SAMPLER node built with the case's inputs, its sampler function run with the
  node's options on the toy denoiser of `tests/sd/toy_denoiser.py` (as `toy_samplers.py` runs them), seeded
  start, `extra_args={"seed": SEED}`. SamplerLCMUpscale's noise comes from `randn_like` on ComfyUI's global
  generator, which its noise preparation seeds and draws the initial noise from: the script does the same
  before the call;
- "schedule/<case>": the sigmas of the scheduler nodes (BetaSamplingScheduler on SD1's discrete EPS sampling);
- "extend/<case>": ExtendIntermediateSigmas on KarrasScheduler's sigmas;
- "bislerp/<case>": `comfy.utils.bislerp` of seeded inputs.

    python tools/comfy_reference/custom_sampling_refs.py --comfyui /tmp/comfyui
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sd"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from custom_sampler_cases import (BISLERP_CASES, BISLERP_SEED, EXTEND_CASES, EXTEND_INPUT, MODEL,  # noqa: E402
                                  SAMPLER_NODES, SCHEDULER_NODES)
from toy_denoiser import SEED, SHAPE, toy_sigmas, toy_start  # noqa: E402
from toy_samplers import ToyModel, _Patcher, import_sampling  # noqa: E402


def _node_classes() -> dict:
    import comfy_extras.nodes_advanced_samplers as advanced
    import comfy_extras.nodes_align_your_steps as ays
    import comfy_extras.nodes_custom_sampler as custom
    import comfy_extras.nodes_gits as gits

    classes = dict(custom.NODE_CLASS_MAPPINGS)
    classes.update(SamplerLCMUpscale=advanced.SamplerLCMUpscale, SamplerEulerCFGpp=advanced.SamplerEulerCFGpp,
                   AlignYourStepsScheduler=ays.AlignYourStepsScheduler, GITSScheduler=gits.GITSScheduler)
    return classes


def _run_node(cls, inputs: dict, patcher):
    """The node's first output for these inputs (the V1 FUNCTION or the V3 execute)."""
    args = {k: (patcher if v == MODEL else v) for k, v in inputs.items()}
    if hasattr(cls, "FUNCTION"):
        return getattr(cls(), cls.FUNCTION)(**args)[0]
    return cls.execute(**args).result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "custom_sampling.npz")
    args = parser.parse_args()
    _, model_sampling = import_sampling(args.comfyui.resolve())
    import comfy.utils
    import torch

    class EpsDiscrete(model_sampling.ModelSamplingDiscrete, model_sampling.EPS):
        pass

    ms = EpsDiscrete()
    patcher, model, classes = _Patcher(ms), ToyModel(ms), _node_classes()
    out: dict[str, np.ndarray] = {}
    for schedule in ("karras", "uneven"):
        sigmas = toy_sigmas(schedule)
        for key, (name, inputs) in SAMPLER_NODES.items():
            sampler = _run_node(classes[name], inputs, patcher)
            torch.manual_seed(SEED)  # as comfy.sample.prepare_noise seeds the global generator ...
            torch.randn(SHAPE)  # ... and draws the initial noise from it
            with torch.no_grad():
                result = sampler.sampler_function(model, toy_start(sigmas), sigmas.clone(), extra_args={"seed": SEED},
                                                  callback=None, disable=True, **sampler.extra_options)
            out[f"sampler/{schedule}/{key}"] = result.numpy()
            print(schedule, key, tuple(result.shape), float(result.abs().max()), flush=True)
    for key, (name, inputs) in SCHEDULER_NODES.items():
        out[f"schedule/{key}"] = _run_node(classes[name], inputs, patcher).float().numpy()
    extend_input = _run_node(classes[EXTEND_INPUT[0]], EXTEND_INPUT[1], patcher)
    for key, inputs in EXTEND_CASES.items():
        out[f"extend/{key}"] = classes["ExtendIntermediateSigmas"]().extend(extend_input, **inputs)[0].numpy()
    generator = torch.Generator().manual_seed(BISLERP_SEED)
    for key, ((h, w), (height, width)) in BISLERP_CASES.items():
        samples = torch.randn((2, 4, h, w), generator=generator)
        out[f"bislerp/{key}"] = comfy.utils.bislerp(samples, width, height).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print("wrote", args.out, len(out), "arrays")


if __name__ == "__main__":
    main()
