"""ComfyUI's model modules (comfy.sd, lora, clip_vision, model_patcher, model_base, k_diffusion, guiders) for
packs, on the tiny models: what they return is what sdgraph's own nodes take and give."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from clip_vision_files import seeded_image, vision_state
from conftest import call, make_ctx, unet_out
from sdgraph.comfy_layer import activate
from sdgraph.context import node_context_bound
from sdgraph.nodes.sd.clip_vision_nodes import CLIPVisionEncode, CLIPVisionLoader
from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.custom_sampling import CFGGuider as CFGGuiderNode
from sdgraph.nodes.sd.custom_sampling import KSamplerSelect, RandomNoise, SamplerCustomAdvanced
from sdgraph.nodes.sd.custom_sigmas import BasicScheduler
from sdgraph.nodes.sd.k_samplers import sample_euler_ancestral
from sdgraph.nodes.sd.latent import EmptyLatent, VAEDecode
from sdgraph.nodes.sd.loaders import CheckpointLoaderSimple, LoraLoader, VAELoader
from sdgraph.nodes.sd.sampling import KSampler
from sdgraph.paths import Dirs

activate(None)
import comfy.clip_vision  # noqa: E402
import comfy.k_diffusion.sampling as kds  # noqa: E402
import comfy.lora  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise  # noqa: E402


@pytest.fixture
def bound(ctx: Any) -> Any:
    """The ComfyUI modules answer for the node call in progress (its dirs and model manager), as in a run."""
    activate(ctx.dirs)
    with node_context_bound(ctx):
        yield ctx


def _path(ctx: Any, folder: str, name: str) -> str:
    return str(ctx.dirs.find_model(folder, name))


def _ksample(ctx: Any, model: Any, clip: Any) -> torch.Tensor:
    pos = call(TextEncode, ctx, text="a red circle", clip=clip)[0]
    neg = call(TextEncode, ctx, text="", clip=clip)[0]
    (latent,) = call(EmptyLatent, ctx, width=64, height=64, batch_size=1)
    return call(KSampler, ctx, model=model, seed=7, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
                positive=pos, negative=neg, latent_image=latent, denoise=1.0)[0]["samples"]


def test_load_checkpoint_guess_config_gives_what_ksampler_and_vaedecode_take(bound):
    model, clip, vae, vision = comfy.sd.load_checkpoint_guess_config(_path(bound, "checkpoints",
                                                                           "sd1-tiny.safetensors"))
    ref_model, ref_clip, ref_vae = call(CheckpointLoaderSimple, bound, ckpt_name="sd1-tiny.safetensors")
    assert vision is None
    assert isinstance(model, comfy.model_patcher.ModelPatcher) and isinstance(vae, comfy.sd.VAE)
    assert isinstance(clip, comfy.sd.CLIP) and not isinstance(vae, comfy.sd.CLIP)
    assert isinstance(model.model, comfy.model_base.BaseModel) and not isinstance(model.model, comfy.model_base.SDXL)
    samples = _ksample(bound, model, clip)
    assert torch.equal(samples, _ksample(bound, ref_model, ref_clip))
    image = call(VAEDecode, bound, samples={"samples": samples}, vae=vae)[0]
    assert torch.equal(image, call(VAEDecode, bound, samples={"samples": samples}, vae=ref_vae)[0])
    only_vae = comfy.sd.load_checkpoint_guess_config(_path(bound, "checkpoints", "sd1-tiny.safetensors"),
                                                     output_clip=False, output_model=False)
    assert only_vae[0] is None and only_vae[1] is None and only_vae[2] is not None


def test_sdxl_checkpoint_is_an_sdxl_model_base(bound):
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(_path(bound, "checkpoints", "sdxl-tiny.safetensors"))
    assert isinstance(model.model, comfy.model_base.SDXL) and not isinstance(model, comfy.model_base.SDXLRefiner)
    assert not isinstance(model, comfy.model_base.Flux)
    assert len(clip.encoders) == 2


def test_load_lora_for_models_equals_lora_loader(bound):
    model, clip, _ = call(CheckpointLoaderSimple, bound, ckpt_name="sd1-tiny.safetensors")
    lora_file = _path(bound, "loras", "tiny-lora.safetensors")
    sd = comfy.utils.load_torch_file(lora_file)
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, comfy.lora.model_lora_keys_unet(model.model))
    patches = comfy.lora.load_lora(sd, key_map)
    assert len(patches) == sum(k.endswith("lora_down.weight") for k in sd), "every LoRA module found a weight"
    assert all(key.startswith(("diffusion_model.", "clip_l.transformer.")) for key in patches)
    ours_model, ours_clip = comfy.sd.load_lora_for_models(model, clip, sd, 0.8, 0.6)
    ref_model, ref_clip = call(LoraLoader, bound, model=model, clip=clip, lora_name="tiny-lora.safetensors",
                               strength_model=0.8, strength_clip=0.6)
    base, ours, ref = unet_out(model), unet_out(ours_model), unet_out(ref_model)
    assert (ref - base).abs().max() > 1e-3
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    texts = [call(TextEncode, bound, text="a red circle", clip=c)[0][0][0] for c in (clip, ours_clip, ref_clip)]
    assert (texts[2] - texts[0]).abs().max() > 1e-3
    torch.testing.assert_close(texts[1], texts[2], atol=1e-5, rtol=1e-4)
    assert torch.equal(unet_out(model), base), "the MODEL given is unchanged"


def test_vae_from_a_state_dict_decodes_as_vae_loader(bound):
    sd = comfy.utils.load_torch_file(_path(bound, "vae", "tiny-vae.safetensors"))
    vae = comfy.sd.VAE(sd=sd)
    (ref,) = call(VAELoader, bound, vae_name="tiny-vae.safetensors")
    latent = torch.randn(1, 4, 8, 8, generator=torch.manual_seed(3))
    assert isinstance(vae, comfy.sd.VAE)
    assert torch.equal(vae.decode(latent), ref.decode(latent))
    with pytest.raises(NotImplementedError, match="state dict"):
        comfy.sd.VAE(config={"a": 1})


def test_load_diffusion_model_reads_a_unet_file(bound, tmp_path):
    from sdgraph.nodes.sd.loading import read_state_dict

    full = read_state_dict(bound.dirs.find_model("checkpoints", "sd1-tiny.safetensors"))
    unet_only = {k: v for k, v in full.items() if k.startswith("model.diffusion_model.")}
    save_file(unet_only, str(tmp_path / "unet.safetensors"))
    model = comfy.sd.load_diffusion_model(str(tmp_path / "unet.safetensors"))
    ref_model, _, _ = call(CheckpointLoaderSimple, bound, ckpt_name="sd1-tiny.safetensors")
    torch.testing.assert_close(unet_out(model), unet_out(ref_model))
    with pytest.raises(NotImplementedError, match="FLUX"):
        comfy.sd.load_clip(["x.safetensors"], clip_type=comfy.sd.CLIPType.FLUX)


def test_clip_vision_load_and_encode_equal_the_nodes(tmp_path, manager):
    vision = tmp_path / "models" / "clip_vision"
    vision.mkdir(parents=True)
    save_file(vision_state("vit_l"), str(vision / "tower.safetensors"))
    ctx = make_ctx(Dirs(base=tmp_path, extra_model_roots=[]), manager)
    activate(ctx.dirs)
    image = seeded_image((1, 40, 56, 3), 1)
    with node_context_bound(ctx):
        tower = comfy.clip_vision.load(str(vision / "tower.safetensors"))
        (ref_tower,) = call(CLIPVisionLoader, ctx, clip_name="tower.safetensors")
        out = tower.encode_image(image)
    (ref,) = call(CLIPVisionEncode, ctx, clip_vision=ref_tower, image=image, crop="center")
    assert isinstance(tower, comfy.clip_vision.ClipVisionModel) and isinstance(out, comfy.clip_vision.Output)
    for key in ("image_embeds", "last_hidden_state", "penultimate_hidden_states"):
        assert torch.equal(out[key], ref[key])
    pixels = comfy.clip_vision.clip_preprocess(image, size=32)
    assert pixels.shape == (1, 3, 32, 32)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    restored = pixels * std + mean  # 8-bit levels in 0..1 before normalisation
    assert torch.allclose(restored * 255, (restored * 255).round(), atol=1e-3)


def test_k_diffusion_sampler_in_comfyuis_calling_convention_equals_sdgraphs(sd1):
    x0 = torch.randn(1, 4, 4, 4, generator=torch.manual_seed(0))
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    seen = []

    def comfy_model(x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        assert sigma.shape == (1,) and extra == {"note": 1}
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    out = kds.sample_euler_ancestral(comfy_model, x0 * 10, sigmas, extra_args={"seed": 5, "note": 1},
                                     callback=lambda d: seen.append((d["i"], float(d["sigma"]))), eta=0.5)
    ref = sample_euler_ancestral(lambda x, s: x / (1 + s ** 2), x0 * 10, sigmas,
                                 noise_sampler=kds.default_noise_sampler(x0, 5), eta=0.5)
    assert torch.equal(out, ref) and seen == [(0, 10.0), (1, 5.0), (2, 1.0)]
    with pytest.raises(TypeError, match="s_churn"):
        kds.sample_euler(comfy_model, x0, sigmas, extra_args={"note": 1}, s_churn=1.0)
    d = kds.to_d(x0, torch.tensor([2.0]), torch.zeros_like(x0))
    assert torch.equal(d, x0 / 2)


def test_a_packs_cfg_guider_and_noise_sample_as_sdgraphs_nodes(bound):
    model, clip, _ = call(CheckpointLoaderSimple, bound, ckpt_name="sd1-tiny.safetensors")
    pos = call(TextEncode, bound, text="a red circle", clip=clip)[0]
    neg = call(TextEncode, bound, text="", clip=clip)[0]
    (latent,) = call(EmptyLatent, bound, width=64, height=64, batch_size=1)
    (sigmas,) = call(BasicScheduler, bound, model=model, scheduler="normal", steps=2, denoise=1.0)
    (sampler,) = call(KSamplerSelect, bound, sampler_name="euler")
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(4.0)
    ours = call(SamplerCustomAdvanced, bound, noise=Noise_RandomNoise(3), guider=guider, sampler=sampler,
                sigmas=sigmas, latent_image=latent)[0]["samples"]
    (ref_guider,) = call(CFGGuiderNode, bound, model=model, positive=pos, negative=neg, cfg=4.0)
    (noise,) = call(RandomNoise, bound, noise_seed=3)
    ref = call(SamplerCustomAdvanced, bound, noise=noise, guider=ref_guider, sampler=sampler, sigmas=sigmas,
               latent_image=latent)[0]["samples"]
    assert torch.equal(ours, ref)
    assert torch.equal(Noise_RandomNoise(3).generate_noise(latent),
                       torch.randn(latent["samples"].shape, generator=torch.manual_seed(3)))

    class Scheduled(comfy.samplers.CFGGuider):
        def predict_noise(self, x: Any, timestep: Any, model_options: Any = None, seed: Any = None) -> Any:
            return x

    custom = Scheduled(model)
    custom.set_conds(pos, neg)
    with pytest.raises(NotImplementedError, match="Scheduled.predict_noise"):
        call(SamplerCustomAdvanced, bound, noise=noise, guider=custom, sampler=sampler, sigmas=sigmas,
             latent_image=latent)


def test_diffusers_folder_and_upscale_state_dict_load_as_sdgraphs_loaders(bound, tmp_path):
    import comfy.diffusers_load
    from comfy_extras.chainner_models import model_loading
    from sdgraph.nodes.sd.upscale_model import ImageUpscaleWithModel, load_upscale_model
    from upscale_files import esrgan_state

    model, clip, vae = comfy.diffusers_load.load_diffusers(_path(bound, "checkpoints", "sd1-tiny-diffusers"))
    ref_model, _, _ = call(CheckpointLoaderSimple, bound, ckpt_name="sd1-tiny-diffusers")
    assert torch.equal(unet_out(model), unet_out(ref_model)) and isinstance(vae, comfy.sd.VAE)
    with pytest.raises(ValueError, match="not a diffusers folder"):
        comfy.diffusers_load.load_diffusers(_path(bound, "checkpoints", "sd1-tiny.safetensors"))
    upscaler = model_loading.load_state_dict(esrgan_state(seed=1)).eval()
    image = torch.rand(1, 9, 13, 3, generator=torch.manual_seed(0))
    (out,) = call(ImageUpscaleWithModel, bound, upscale_model=upscaler, image=image)
    save_file(esrgan_state(seed=1), str(tmp_path / "esrgan.safetensors"))
    (ref,) = call(ImageUpscaleWithModel, bound, image=image,
                  upscale_model=load_upscale_model(tmp_path / "esrgan.safetensors", bound.models))
    assert out.shape == (1, 36, 52, 3) and upscaler.scale == 4 and torch.equal(out, ref)
    assert comfy.samplers.sampler_object("euler").name == "euler"
