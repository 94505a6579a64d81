"""Sampling speed (it/s) of KSampler with the UNet fast paths against a hand-written diffusers loop, side by side.

    python -m bench.sampling_speed                                  # CUDA: SD1.5 512x512 and SDXL 1024x1024, fp16
    python -m bench.sampling_speed --device cpu --size 64 --steps 4 --models sd15     # CPU: minutes
    python -m bench.sampling_speed --device cpu --models tiny --steps 8               # the default model

Models are random-weight UNets of the real architectures (the configs shipped in sdgraph/data/configs), built on
the meta device and filled in place, one model in memory at a time. For each model and batch (1 and 4, CFG on, so
the UNet sees 2 and 8 rows) the modes run interleaved, round after round, so that a shared machine's load hits all
alike: KSampler (euler, normal) eager, --channels-last, --compile, --compile --channels-last, and the diffusers
loop StableDiffusion(XL)Pipeline runs between prompt encoding and decoding (EulerDiscreteScheduler, [uncond; cond]
in one UNet call) on the same module, eager. The compiled modes share the module: eager rounds run under
torch.compiler.set_stance("force_eager"). Reported: median it/s per mode, its ratio to the diffusers loop and to
KSampler eager, and the compile warm-up (the first run at that shape minus an eager run).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

if __name__ == "__main__" and not __package__:
    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

import torch  # noqa: E402

from bench.sampler_vs_diffusers import BETAS, timed  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "sdgraph" / "data"
# family: (UNet config, default image size); "tiny" is the committed default model's architecture
FAMILIES = {"sd15": ("configs/sd1.json", 512), "sdxl": ("configs/sdxl.json", 1024),
            "tiny": ("models/checkpoints/sdgraph-tiny/unet/config.json", 64)}
# (mode name, compile, channels_last); "diffusers" is the reference loop
MODES: list[tuple[str, bool, bool]] = [("eager", False, False), ("channels_last", False, True),
                                       ("compile", True, False), ("compile+channels_last", True, True)]


SCOPE = ["blocks", "default"]  # --compile-scope, --compile-mode of this run


def unet_config(family: str) -> dict[str, Any]:
    config = json.loads((DATA / FAMILIES[family][0]).read_text())
    config = config.get("unet", config)
    return {k: v for k, v in config.items() if not k.startswith("_")}


def random_unet(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The architecture with random weights, without diffusers' (slow, fp32, CPU) initialisation: built on the meta
    device, allocated on `device` in `dtype`, weights ~ N(0, 1/fan_in) so activations stay in range."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    unet = unet.to_empty(device=device).to(dtype).eval().requires_grad_(False)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, 1.0 / math.sqrt(param[0].numel()), generator=generator)
            elif name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()
    for buffer in unet.buffers():
        buffer.zero_()
    return unet


def build(family: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    from sdgraph.fast_path import FastPath
    from sdgraph.models import ModelManager
    from sdgraph.nodes.sd.model_objects import DiffusionModel

    unet = random_unet(unet_config(family), device, dtype)
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    manager = ModelManager(device, precision=precision, fast_path=FastPath())
    model = DiffusionModel(slot=manager.manage(unet, f"bench-{family}", role="unet"), name=family,
                           is_sdxl=family == "sdxl")
    model.unet(manager)
    return model, manager


def conditioning(family: str, config: dict[str, Any], seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    extras: dict[str, Any] = {}
    if family == "sdxl":
        extras["pooled_output"] = torch.randn(1, 1280, generator=generator)
    return [[torch.randn(1, 77, config["cross_attention_dim"], generator=generator), extras]]


def ksampler_runner(model: Any, manager: Any, steps: int, batch: int, latent: int, sides: tuple[list, list]
                    ) -> Callable[[], Any]:
    from sdgraph.context import InterruptFlag, NodeContext, Services
    from sdgraph.node import define
    from sdgraph.nodes.sd.sampling import KSampler

    node = define(KSampler, "sd-sampling")
    ctx = NodeContext(node_id="3", prompt_id="bench", services=Services(models=manager), interrupt=InterruptFlag(),
                      on_progress=lambda value, total, preview: None)
    inputs = dict(model=model, seed=1, steps=steps, cfg=7.0, sampler_name="euler", scheduler="normal",
                  positive=sides[0], negative=sides[1], latent_image={"samples": torch.zeros(batch, 4, latent, latent)},
                  denoise=1.0)
    return lambda: node.invoke(inputs, ctx)[0]["samples"]


def diffusers_runner(model: Any, manager: Any, steps: int, batch: int, latent: int, sides: tuple[list, list]
                     ) -> Callable[[], Any]:
    """What the diffusers pipelines run per image between encoding the prompt and decoding."""
    from diffusers import EulerDiscreteScheduler

    unet = model.unet(manager)
    device, dtype = model.compute_device(manager), model.dtype(manager)
    scheduler = EulerDiscreteScheduler(**BETAS, timestep_spacing="linspace")
    context = torch.cat([sides[1][0][0].expand(batch, -1, -1), sides[0][0][0].expand(batch, -1, -1)]).to(device, dtype)
    added = None
    if model.is_sdxl:
        pooled = torch.cat([sides[1][0][1]["pooled_output"].expand(batch, -1),
                            sides[0][0][1]["pooled_output"].expand(batch, -1)]).to(device, dtype)
        size = latent * 8
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=device, dtype=dtype).repeat(2 * batch, 1)
        added = {"text_embeds": pooled, "time_ids": time_ids}

    @torch.inference_mode()
    def run() -> torch.Tensor:
        scheduler.set_timesteps(steps, device=device)
        generator = torch.Generator().manual_seed(1)
        latents = torch.randn((batch, 4, latent, latent), generator=generator).to(device, dtype)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise = unet(model_input, t, encoder_hidden_states=context, added_cond_kwargs=added,
                         return_dict=False)[0]
            uncond, cond = noise.chunk(2)
            latents = scheduler.step(uncond + 7.0 * (cond - uncond), t, latents, return_dict=False)[0]
        return latents.float().cpu()

    return run


@contextlib.contextmanager
def mode_of(model: Any, manager: Any, compile_: bool, channels_last: bool) -> Iterator[None]:
    """Run with this mode: the manager's fast path set, the weights in its layout, eager when not compiling."""
    from sdgraph.fast_path import FastPath

    manager.fast_path = FastPath(compile=compile_, channels_last=channels_last, compile_scope=SCOPE[0],
                                 compile_mode=SCOPE[1])
    unet = model.slot.module
    layout = torch.channels_last if channels_last else torch.contiguous_format
    conv = next(p for p in unet.parameters() if p.dim() == 4)
    if not conv.is_contiguous(memory_format=layout):
        unet.to(memory_format=layout)
    stance = contextlib.nullcontext() if compile_ else torch.compiler.set_stance("force_eager")
    with stance:
        yield


def bench_shape(model: Any, manager: Any, family: str, batch: int, latent: int, steps: int, repeats: int,
                modes: list[tuple[str, bool, bool]]) -> dict[str, Any]:
    device = torch.device(model.compute_device(manager))
    config = dict(model.slot.module.config)
    sides = (conditioning(family, config, 1), conditioning(family, config, 2))
    ours = ksampler_runner(model, manager, steps, batch, latent, sides)
    runners: dict[str, tuple[Callable[[], Any], bool, bool]] = {
        name: (ours, c, cl) for name, c, cl in modes}
    runners["diffusers"] = (diffusers_runner(model, manager, steps, batch, latent, sides), False, False)
    first: dict[str, float] = {}
    for name, (fn, c, cl) in runners.items():  # warm-up; compiled modes compile here
        with mode_of(model, manager, c, cl):
            first[name] = timed(fn, device)
        print(f"  warm-up {name:22s} {first[name]:8.2f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, (fn, c, cl) in runners.items():
            with mode_of(model, manager, c, cl):
                times[name].append(timed(fn, device))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    rows = {}
    for name, median in medians.items():
        rows[name] = {"s_per_step": median / steps, "it_s": steps / median,
                      "vs_diffusers": medians["diffusers"] / median, "vs_eager": medians.get("eager", median) / median,
                      "warmup_s": max(first[name] - medians.get("eager", median), 0.0)}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=None,
                        help="comma-separated: sd15, sdxl, tiny (default sd15,sdxl on CUDA, sd15 on the CPU: SDXL "
                             "in fp32 takes 10 GB)")
    parser.add_argument("--size", type=int, default=None,
                        help="image size in pixels (default on CUDA 512 SD1.5, 1024 SDXL; on the CPU 64)")
    parser.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 20 CUDA, 4 CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5 CUDA, 3 CPU)")
    parser.add_argument("--modes", default=",".join(name for name, _, _ in MODES),
                        help="comma-separated KSampler modes (the diffusers loop always runs)")
    parser.add_argument("--precision", default=None, help="fp16 (CUDA default), bf16, fp32 (CPU default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1 on the CPU, where threads waiting for busy cores of a "
                             "shared machine spin and swamp the timings; 0 keeps torch's default)")
    parser.add_argument("--compile-scope", choices=("blocks", "unet"), default="blocks",
                        help="what the compile modes compile: the repeated blocks (default) or the whole UNet")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode of the compile modes")
    parser.add_argument("--cold", action="store_true",
                        help="compile into a fresh inductor cache (the warm-up of a first run on a new machine; "
                             "by default compiled kernels of earlier runs are reused from the on-disk cache)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    SCOPE[:] = [args.compile_scope, args.compile_mode]
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    threads = args.threads if args.threads is not None else (0 if cuda else 1)
    if threads:
        torch.set_num_threads(threads)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.precision or ("fp16" if cuda else "fp32")]
    steps = args.steps or (20 if cuda else 4)
    repeats = args.repeats or (5 if cuda else 3)
    wanted = args.modes.split(",")
    modes = [m for m in MODES if m[0] in wanted]
    results = []
    for family in (args.models or ("sd15,sdxl" if cuda else "sd15")).split(","):
        size = args.size or (FAMILIES[family][1] if cuda or family == "tiny" else 64)
        model, manager = build(family, device, dtype)
        for batch in (int(b) for b in args.batch.split(",")):
            print(f"{family} {size}x{size} batch {batch} {str(dtype).replace('torch.', '')} on {device}, "
                  f"{steps} steps x {repeats} rounds", flush=True)
            rows = bench_shape(model, manager, family, batch, size // 8, steps, repeats, modes)
            for name, row in rows.items():
                print(f"  {name:22s} {row['it_s']:8.3f} it/s  {row['s_per_step']:8.4f} s/step  "
                      f"x{row['vs_diffusers']:.3f} vs diffusers  x{row['vs_eager']:.3f} vs eager  "
                      f"warm-up {row['warmup_s']:.1f} s", flush=True)
                results.append({"model": family, "size": size, "batch": batch, "device": str(device),
                                "dtype": str(dtype), "mode": name, **row})
        del model, manager
        torch._dynamo.reset()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
