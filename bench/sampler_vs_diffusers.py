"""KSampler against a hand-written diffusers denoising loop: same UNet, scheduler, steps, cfg, side by side.

    python -m bench.sampler_vs_diffusers                   # CPU: the tiny UNet (8x8), a small one (16x16), null
    python -m bench.sampler_vs_diffusers --device cuda     # GPU: SD 1.5's UNet (random weights), 512x512, fp16

Runs alternate (ours, diffusers, ours, ...) so that load on a shared machine hits both alike; the figure is the
median of the per-pair time ratios ours / diffusers (target <= 1.03). KSampler runs as a node (NodeContext,
progress events) on a model under the real ModelManager; the diffusers loop is what StableDiffusionPipeline runs
between encoding the prompt and decoding the latents: [uncond; cond] in one UNet call, guidance, scheduler.step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__" and not __package__:
    # Run as a file, sys.path[0] is bench/ and `import sdgraph` could find another checkout's install: rerun as a
    # module of this checkout, whose root `python -m` puts first on sys.path.
    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

import torch  # noqa: E402

SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "norm_num_groups": 32, "act_fn": "silu",
}
SMALL_UNET: dict[str, Any] = {
    "sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": (64, 128, 128), "cross_attention_dim": 128, "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), "norm_num_groups": 32,
}

# (our sampler, our scheduler, diffusers scheduler class, its config)
PAIRS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("euler", "normal", "EulerDiscreteScheduler", {"timestep_spacing": "linspace"}),
    ("dpmpp_2m", "karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True, "final_sigmas_type": "zero"}),
]
BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


class NullUNet(torch.nn.Module):
    """A UNet stand-in that costs one multiply: what is left of a run is the sampling loop's own overhead."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((1,), 0.5))

    def forward(self, x: torch.Tensor, t: Any, encoder_hidden_states: Any = None, return_dict: bool = True,
                **kwargs: Any) -> tuple[torch.Tensor]:
        return (x * self.scale,)


def unet_config(name: str) -> tuple[dict[str, Any], int]:
    """(UNet config, latent size) of a benchmark model."""
    if name == "tiny":
        from sdgraph.tiny.architecture import LATENT_SIZE, UNET_CONFIG

        return dict(UNET_CONFIG), LATENT_SIZE
    return {"small": (SMALL_UNET, 16), "sd15": (SD15_UNET, 64)}[name]


def build_model(name: str, device: torch.device, precision: str, latent: int | None = None
                ) -> tuple[Any, Any, int, int]:
    """A DiffusionModel over a random UNet under a ModelManager; returns (model, manager, latent size, text dim)."""
    from diffusers import UNet2DConditionModel

    from sdgraph.models import ModelManager
    from sdgraph.nodes.sd.model_objects import DiffusionModel

    if name == "null":
        config, default_latent, unet = {"cross_attention_dim": 768}, 64, NullUNet().to(device)
    else:
        config, default_latent = unet_config(name)
        torch.manual_seed(0)
        with torch.device(device):  # initialise where it will run: SD 1.5's 860M parameters init fast on a GPU
            unet = UNet2DConditionModel(**config)
    latent = latent or default_latent
    manager = ModelManager(device, precision=precision)
    model = DiffusionModel(slot=manager.manage(unet, f"bench-{name}", role="unet"), name=name)
    model.unet(manager)  # resident before timing, as after a first run
    return model, manager, latent, int(config["cross_attention_dim"])


def ksampler_runner(model: Any, manager: Any, pair: tuple, steps: int, cfg: float, positive: list,
                    negative: list, latent: dict) -> Callable[[], torch.Tensor]:
    from sdgraph.context import InterruptFlag, NodeContext, Services
    from sdgraph.node import define
    from sdgraph.nodes.sd.sampling import KSampler

    node = define(KSampler, "sd-sampling")
    ctx = NodeContext(node_id="3", prompt_id="bench", services=Services(models=manager), interrupt=InterruptFlag(),
                      on_progress=lambda value, total, preview: None)
    inputs = dict(model=model, seed=1, steps=steps, cfg=cfg, sampler_name=pair[0], scheduler=pair[1],
                  positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    return lambda: node.invoke(inputs, ctx)[0]["samples"]


def diffusers_runner(model: Any, manager: Any, pair: tuple, steps: int, cfg: float, positive: list,
                     negative: list, latent: dict) -> Callable[[], torch.Tensor]:
    import diffusers

    unet = model.unet(manager)
    device, dtype = model.compute_device(manager), model.dtype(manager)
    scheduler = getattr(diffusers, pair[2])(**BETAS, **pair[3])
    context = torch.cat([negative[0][0], positive[0][0]]).to(device, dtype)
    shape = tuple(latent["samples"].shape)

    @torch.inference_mode()
    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        scheduler.set_timesteps(steps, device=device)
        latents = torch.randn(shape, generator=generator).to(device, dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise_pred = unet(model_input, t, encoder_hidden_states=context, return_dict=False)[0]
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + cfg * (cond - uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        return latents.float().cpu()

    return run


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_pair(model: Any, manager: Any, latent_size: int, text_dim: int, pair: tuple, steps: int,
               repeats: int, cfg: float = 7.5) -> dict[str, Any]:
    device = torch.device(model.compute_device(manager))
    generator = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, text_dim, generator=generator), {}]]
    negative = [[torch.randn(1, 77, text_dim, generator=generator), {}]]
    latent = {"samples": torch.zeros(1, 4, latent_size, latent_size)}
    ours = ksampler_runner(model, manager, pair, steps, cfg, positive, negative, latent)
    ref = diffusers_runner(model, manager, pair, steps, cfg, positive, negative, latent)
    ours(), ref()  # warm-up: kernels, allocator, caches
    ours_t, ref_t = [], []
    for _ in range(repeats):
        ours_t.append(timed(ours, device))
        ref_t.append(timed(ref, device))
    ratios = [a / b for a, b in zip(ours_t, ref_t)]
    return {"sampler": f"{pair[0]}/{pair[1]} vs {pair[2]}", "steps": steps,
            "ratio_median": statistics.median(ratios),
            "ratio_of_medians": statistics.median(ours_t) / statistics.median(ref_t),
            "ours_s": statistics.median(ours_t), "diffusers_s": statistics.median(ref_t),
            "ours_it_s": steps / statistics.median(ours_t), "diffusers_it_s": steps / statistics.median(ref_t)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=None,
                        help="comma-separated: tiny, small, sd15, null (a free UNet: the loops' own overhead)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--precision", default="auto", help="auto (fp32 on CPU, fp16 on GPU), fp32, fp16, bf16")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1 on the CPU: threads that wait for busy cores spin and "
                             "swamp the timings on a shared machine; 0 keeps torch's default)")
    parser.add_argument("--latent", type=int, default=None, help="latent size (default: the model's own)")
    parser.add_argument("--check-devices", action="store_true",
                        help="also sample the tiny model on the CPU and on --device in fp32 and compare")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    names = (args.models or ("sd15,null" if device.type == "cuda" else "tiny,small,null")).split(",")
    repeats = args.repeats or (10 if device.type == "cuda" else 7)
    results = []
    for name in names:
        model, manager, latent_size, text_dim = build_model(name, device, args.precision, args.latent)
        for pair in PAIRS:
            row = {"model": name, "device": str(device), "dtype": str(model.dtype(manager)).replace("torch.", ""),
                   "latent": latent_size, **bench_pair(model, manager, latent_size, text_dim, pair, args.steps,
                                                       repeats)}
            results.append(row)
            print(f"{name:5s} {row['dtype']:8s} {row['sampler']:45s} ratio {row['ratio_median']:.3f} "
                  f"(of medians {row['ratio_of_medians']:.3f})  ours {row['ours_it_s']:7.2f} it/s  "
                  f"diffusers {row['diffusers_it_s']:7.2f} it/s", flush=True)
        del model, manager
    if args.check_devices:
        results.append(check_devices(device))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def check_devices(device: torch.device) -> dict[str, Any]:
    """The same seed on the CPU and on `device` (fp32): noise is drawn on the CPU, so the latents agree up to
    the devices' arithmetic."""
    outputs = {}
    for where in ("cpu", str(device)):
        model, manager, latent_size, text_dim = build_model("tiny", torch.device(where), "fp32")
        generator = torch.Generator().manual_seed(0)
        positive = [[torch.randn(1, 77, text_dim, generator=generator), {}]]
        negative = [[torch.randn(1, 77, text_dim, generator=generator), {}]]
        latent = {"samples": torch.zeros(2, 4, latent_size, latent_size)}
        pair = ("euler_ancestral", "karras", "", {})
        outputs[where] = ksampler_runner(model, manager, pair, 20, 7.5, positive, negative, latent)()
    diff = float((outputs["cpu"] - outputs[str(device)]).abs().max())
    scale = float(outputs["cpu"].abs().max())
    print(f"same seed, euler_ancestral/karras, tiny fp32: max |cpu - {device}| = {diff:.2e} (latents up to {scale:.2f})")
    return {"check": "cpu_vs_device", "device": str(device), "max_abs_diff": diff, "max_abs_latent": scale}


if __name__ == "__main__":
    raise SystemExit(main())
