"""--compile and --channels-last: the flags reach the model manager, and the UNet they prepare samples what the
eager one does (within inductor's float reassociation), is reused across prompts, follows LoRA patches without
recompiling and takes ControlNet residuals."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sdgraph.cli import _parser, runtime_options
from sdgraph.fast_path import FastPath
from sdgraph.models import ModelManager
from sdgraph.nodes.sd.conditioning import ControlNet, TextEncode
from sdgraph.nodes.sd.loaders import ControlNetLoader, LoraLoaderModelOnly
from sdgraph.nodes.sd.loading import load_checkpoint
from sdgraph.nodes.sd.sampling import KSampler
from sdgraph.nodes.sd.unet_compile import REGIONS, compile_regions, is_compiled, prepare_unet
from sdgraph.nodes.sd.unet_merge import UnetCall, merge_key
from sdgraph.runtime import create_executor

from conftest import call, make_ctx

ROOT = Path(__file__).resolve().parents[2]

# Inductor and channels_last reorder float sums (fused group norms, attention, convolution blocking): per call
# the UNet's output moves by ~1e-6; after the sampler's steps the latents agree to this fraction of their
# largest magnitude (fp32).
TOLERANCE = 1e-4


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= TOLERANCE * float(b.abs().max())


def test_flags_parse_and_reach_the_model_manager(tmp_path: Path) -> None:
    args = _parser().parse_args(["run", "--compile", "--compile-mode", "max-autotune", "--channels-last",
                                 "--compile-scope", "unet", "--base-dir", str(tmp_path), "--no-plugins",
                                 "workflow.json"])
    options = runtime_options(args)
    assert options.fast_path == FastPath(compile=True, compile_mode="max-autotune", compile_scope="unet",
                                         channels_last=True)
    manager = create_executor(options).services.models
    assert manager.fast_path.compile and manager.fast_path.channels_last
    plain = runtime_options(_parser().parse_args(["run", "--base-dir", str(tmp_path), "workflow.json"]))
    assert not plain.fast_path.active


def test_serve_flags_reach_the_runtime_options(tmp_path: Path) -> None:
    from sdgraph.cli_serve import add_serve_arguments

    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--compile", "--channels-last"])
    assert args.compile and args.channels_last and args.compile_mode == "default"


def test_a_compiled_unet_never_merges_across_prompts(sd1: Any) -> None:
    model = sd1[0]
    unet = type(model.slot.module)(**model.slot.module.config)  # a fresh module: wrapping compiles nothing yet
    x, context = torch.zeros(2, 4, 8, 8), torch.zeros(2, 77, unet.config.cross_attention_dim)
    call_ = UnetCall(unet, x, torch.ones(1), context, {})
    assert merge_key(call_)[0] == id(unet)
    assert compile_regions(unet) == sum(type(m).__name__ in REGIONS for m in unet.modules()) > 0
    assert is_compiled(unet) and merge_key(call_)[0] == "alone"
    whole = type(unet)(**unet.config)
    assert compile_regions(whole, scope="unet") == 1 and whole._compiled_call_impl is not None


def test_a_streamed_unet_runs_eagerly(sd1: Any) -> None:
    unet = type(sd1[0].slot.module)(**sd1[0].slot.module.config)
    assert prepare_unet(unet, FastPath(compile=True), streamed=True) is unet and not is_compiled(unet)
    assert is_compiled(prepare_unet(unet, FastPath(compile=True)))


def test_channels_last_samples_what_eager_samples(dirs: Any, sd1: Any) -> None:
    eager = _sample(make_ctx(dirs, sd1[0].manager), sd1)
    manager = ModelManager(force_cpu=True, fast_path=FastPath(channels_last=True))
    loaded = _load(dirs, manager)
    out = _sample(make_ctx(dirs, manager), loaded)
    conv = loaded[0].slot.module.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert close(out, eager)


@pytest.mark.slow
def test_compiled_unet_matches_eager_is_reused_and_follows_lora_and_controlnet(dirs: Any, sd1: Any) -> None:
    from torch._dynamo.utils import counters

    eager_ctx = make_ctx(dirs, sd1[0].manager)
    manager = ModelManager(force_cpu=True, fast_path=FastPath(compile=True))
    compiled = _load(dirs, manager)
    ctx = make_ctx(dirs, manager)
    out = _sample(ctx, compiled)
    assert is_compiled(compiled[0].slot.module)
    assert close(out, _sample(eager_ctx, sd1))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    again = _sample(ctx, compiled, text="another prompt, same shape")
    assert counters["stats"]["unique_graphs"] == graphs, "a second prompt of the same shape compiles nothing"
    assert close(again, _sample(eager_ctx, sd1, text="another prompt, same shape"))

    unpatched = _unet_out(compiled[0])
    (lora,) = call(LoraLoaderModelOnly, ctx, model=compiled[0], lora_name="tiny-lora.safetensors", strength_model=1.0)
    (eager_lora,) = call(LoraLoaderModelOnly, eager_ctx, model=sd1[0], lora_name="tiny-lora.safetensors",
                         strength_model=1.0)
    patched = _unet_out(lora)
    assert close(patched, _unet_out(eager_lora))
    assert not close(patched, unpatched), "the compiled blocks read the patched weights"
    assert close(_unet_out(compiled[0]), unpatched), "and the restored ones"
    assert counters["stats"]["unique_graphs"] == graphs, "weight patches are graph inputs: no recompile"

    (net,) = call(ControlNetLoader, ctx, control_net_name="tiny-controlnet")
    hinted = _sample(ctx, compiled, control=net)
    assert close(hinted, _sample(eager_ctx, sd1, control=net))
    assert not close(hinted, out)


def _unet_out(model: Any) -> torch.Tensor:
    """One UNet call at the shapes KSampler's calls have here (batch 1 with CFG: 2 rows), so nothing recompiles."""
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # inference tensors, as the sampler's (other tensors would recompile)
        x = torch.randn(2, 4, 8, 8, generator=g)
        context = torch.randn(2, 77, model.slot.module.config.cross_attention_dim, generator=g)
        return model.unet()(x, torch.full((1,), 500.0), encoder_hidden_states=context, return_dict=False)[0].clone()


def _load(dirs: Any, manager: ModelManager) -> Any:
    return load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), manager)


def _sample(ctx: Any, parts: Any, text: str = "a red circle", control: Any = None) -> torch.Tensor:
    model, clip, _ = parts
    positive = call(TextEncode, ctx, text=text, clip=clip)[0]
    negative = call(TextEncode, ctx, text="", clip=clip)[0]
    if control is not None:
        positive, negative = call(ControlNet, ctx, positive=positive, negative=negative, control_net=control,
                                  image=torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3)),
                                  strength=1.0, start_percent=0.0, end_percent=1.0)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = call(KSampler, ctx, model=model, seed=1, steps=3, cfg=6.0, sampler_name="euler_ancestral",
                  scheduler="karras", positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    return out["samples"]


@pytest.mark.slow
def test_sdgraph_run_saves_the_same_picture_with_and_without_compile(tmp_path: Path) -> None:
    """The shipped txt2img workflow on the default model, as a user runs it: `sdgraph run` in a fresh process,
    eagerly and with --compile (a cold inductor cache of its own); the two pictures agree to a level of 8 bits."""
    import numpy as np
    from PIL import Image

    def picture(*flags: str) -> tuple[np.ndarray, str]:
        base = tmp_path / ("compiled" if flags else "eager")
        env = dict(os.environ, PYTHONPATH=str(ROOT), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
        done = subprocess.run([sys.executable, "-m", "sdgraph", "run", str(ROOT / "workflows" / "txt2img.json"),
                               "--cpu", "--quiet", "--base-dir", str(base), "--set", "sampler.steps=6", *flags],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        (saved,) = (base / "output").glob("txt2img_*.png")
        return np.asarray(Image.open(saved).convert("RGB"), dtype=np.int16), done.stderr

    eager, eager_log = picture()
    compiled, compiled_log = picture("--compile")
    assert "torch.compile" not in eager_log
    assert re.search(r"torch\.compile \(default\) wraps [1-9]\d* UNet modules on cpu", compiled_log), compiled_log
    assert "on a CPU it may not pay" in compiled_log, "the CPU run says compile may not pay"
    assert np.abs(compiled - eager).max() <= 1 and eager.std() > 5, "the same picture, and not a blank one"
