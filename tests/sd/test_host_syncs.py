"""The sampling loop never reads a device tensor on the host per step: on a GPU such a read (`.item()`,
`float(t)`, `bool(t)`, `.tolist()`, `.cpu()`) waits for every queued kernel, and at batch 1 the GPU then idles
while Python prepares the next step. Here the model's compute device is the meta device, whose tensors hold no
data: every host read of a device tensor is counted (and answered with a stand-in so that the run goes on), and
a run of twice the steps must read no more than a run of the steps."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from sampling_support import TinyModel, conditioning, empty_latent, tiny_unet
from sdgraph.context import InterruptFlag, NodeContext, Services
from sdgraph.node import define
from sdgraph.nodes.sd.conditioning import ConditioningSetArea
from sdgraph.nodes.sd.sampling import KSampler

STAND_INS: dict[str, Any] = {"item": 1.0, "__bool__": True, "__float__": 1.0, "__int__": 1, "__index__": 1}


class HostReads(TorchFunctionMode):
    """Counts host reads of meta tensors; answers them with a stand-in value."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if tensor is not None and tensor.device.type == "meta":
            if name in STAND_INS:
                self.reads.append(name)
                return STAND_INS[name]
            if name == "tolist":
                self.reads.append(name)
                return torch.zeros(tensor.shape, dtype=tensor.dtype).tolist()
            if name == "cpu" or (name == "to" and _to_cpu(args, kwargs)):
                self.reads.append(name)
                return torch.zeros(tensor.shape, dtype=kwargs.get("dtype", tensor.dtype))
        return func(*args, **kwargs)


def _to_cpu(args: tuple, kwargs: dict) -> bool:
    device = kwargs.get("device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
    return device is not None and torch.device(device).type == "cpu"


@pytest.fixture(scope="module")
def model() -> Any:
    return TinyModel(tiny_unet().to("meta"), device="meta")


def reads(model: Any, steps: int, **overrides: Any) -> list[str]:
    inputs = dict(model=model, seed=1, steps=steps, cfg=6.0, sampler_name="euler", scheduler="normal",
                  positive=conditioning(1), negative=conditioning(2), latent_image=empty_latent(), denoise=1.0)
    inputs.update(overrides)
    ctx = NodeContext(node_id="3", prompt_id="p", services=Services(), interrupt=InterruptFlag(),
                      on_progress=lambda value, total, preview: None)
    mode = HostReads()
    with mode:
        define(KSampler, "sd-sampling").invoke(inputs, ctx)
    return mode.reads


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "heun", "uni_pc",
                                     "ddim", "lcm", "dpmpp_sde", "res_multistep"])
def test_no_host_read_per_step(model: Any, sampler: str) -> None:
    few, more = reads(model, 3, sampler_name=sampler), reads(model, 6, sampler_name=sampler)
    # once per run: the sampled latent and the last denoised estimate come back to the CPU
    assert len(few) <= 2 and more == few, f"{sampler}: host reads per run {few}, with twice the steps {more}"


def test_no_host_read_per_step_with_area_conditioning(model: Any) -> None:
    (area,) = ConditioningSetArea().run(conditioning(1), width=32, height=32, x=0, y=0, strength=1.0)
    few, more = reads(model, 3, positive=area), reads(model, 6, positive=area)
    assert more == few, f"host reads per run {few}, with twice the steps {more}"


def test_no_host_read_per_step_through_the_hooked_pipeline(model: Any) -> None:
    hooked = TinyModel(model.module, device="meta")
    hooked.model_options = {"sampler_post_cfg_function": [lambda args: args["denoised"] * 1.0]}
    few, more = reads(hooked, 3), reads(hooked, 6)
    assert more == few, f"host reads per run {few}, with twice the steps {more}"
