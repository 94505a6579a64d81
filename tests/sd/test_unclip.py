"""unCLIP (checkpoint with its own CLIP vision tower, unCLIPConditioning, the UNet's class-embedding input) and
ImageOnlyCheckpointLoader, on tiny checkpoints in the real key layouts; the ADM vectors are ComfyUI's own
(tests/sd/data/clip_vision.npz, tools/comfy_reference/clip_vision_refs.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clip_vision_files import seeded_image, to_open_clip, vision_state
from conftest import call, make_ctx
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint
from sdgraph.nodes.sd.clip_vision import ClipVision, ClipVisionOutput
from sdgraph.nodes.sd.clip_vision_nodes import (CLIPVisionEncode, ImageOnlyCheckpointLoader,
                                                unCLIPCheckpointLoader)
from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.latent import EmptyLatent
from sdgraph.nodes.sd.model_objects import DiffusionModel
from sdgraph.nodes.sd.sampling import KSampler
from sdgraph.nodes.sd.unclip import unclip_adm, unCLIPConditioning
from sdgraph.paths import Dirs
from tiny_models import SD2_UNET, TinyParts, _randomize, build_parts, single_file_state

REFS = np.load(Path(__file__).parent / "data" / "clip_vision.npz")
ADM = 32  # the tiny towers' 16-wide image embeddings + a 16-wide noise-level embedding
UNCLIP_CASES = {"plain": ([(1.0, 0.0)], 1), "noised": ([(0.8, 0.3)], 1), "two_items": ([(0.8, 0.1), (1.2, 0.5)], 1),
                "two_images": ([(1.0, 0.2)], 2)}  # as in clip_vision_refs.py
SEED = 42  # the sampling seed the references were made for


def vision_output(images: int = 1) -> ClipVisionOutput:
    out = ClipVisionOutput()
    out["image_embeds"] = torch.from_numpy(REFS["unclip/image_embeds"][:images])
    return out


def unclip_state(parts: TinyParts, seed: int = 21) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(SD2_UNET, class_embed_type="projection",
                                       projection_class_embeddings_input_dim=ADM))
    _randomize(unet)
    with torch.no_grad():
        unet.class_embedding.linear_1.weight.mul_(20)  # so the image embedding moves the result visibly
    sd = single_file_state("sd2", TinyParts(unet.eval(), parts.vae, parts.encoders))
    sd.update(to_open_clip(vision_state("vit_h", seed=3), "embedder.model.visual."))
    return sd


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Dirs:
    root = tmp_path_factory.mktemp("unclip_home")
    folder = root / "models" / "checkpoints"
    folder.mkdir(parents=True)
    parts = build_parts("sd2", seed=4)
    sd = unclip_state(parts)
    save_file(sd, str(folder / "unclip-tiny.safetensors"))
    plain = single_file_state("sd2", parts)
    save_file(plain, str(folder / "sd2-plain.safetensors"))
    image_only = {k: v for k, v in plain.items() if k.startswith(("model.diffusion_model.", "first_stage_model."))}
    image_only.update(to_open_clip(vision_state("vit_h", seed=3), "conditioner.embedders.0.open_clip.model.visual."))
    save_file(image_only, str(folder / "image-only-sd.safetensors"))
    video = dict(image_only)
    video["model.diffusion_model.input_blocks.1.0.time_stack.in_layers.0.weight"] = torch.zeros(4)
    video["first_stage_model.decoder.up.0.block.0.time_stack.in_layers.0.weight"] = torch.zeros(4)
    save_file(video, str(folder / "svd-like.safetensors"))
    return Dirs(base=root, extra_model_roots=[])


@pytest.fixture
def hctx(home: Dirs, manager: Any) -> Any:
    return make_ctx(home, manager)


@pytest.fixture
def unclip(hctx: Any) -> tuple:
    return call(unCLIPCheckpointLoader, hctx, ckpt_name="unclip-tiny.safetensors")


@pytest.mark.parametrize("case", sorted(UNCLIP_CASES))
def test_adm_vector_equals_comfyuis(case):
    items, images = UNCLIP_CASES[case]
    output = vision_output(images)
    conds = [{"clip_vision_output": output, "strength": s, "noise_augmentation": n} for s, n in items]
    y = unclip_adm(conds, SEED, 0.05)
    np.testing.assert_allclose(y.numpy(), REFS[f"unclip/{case}/y"], atol=1e-6, rtol=1e-6)


def test_loader_returns_the_embedded_vision_tower_and_a_class_embedding_unet(unclip, hctx):
    model, clip, vae, vision = unclip
    unet = model.unet()
    assert unet.config.class_embed_type == "projection" and unet.class_embedding.linear_1.in_features == ADM
    assert isinstance(vision, ClipVision) and vision.slot.module.config.num_hidden_layers == 32
    out = call(CLIPVisionEncode, hctx, clip_vision=vision, image=seeded_image((1, 32, 32, 3), 0), crop="center")[0]
    assert out.image_embeds.shape == (1, 16)
    assert clip.embedding_dirs  # as CheckpointLoaderSimple gives it: prompts may name embeddings


def _sample(hctx: Any, model: Any, positive: list, negative: list, seed: int = SEED) -> tuple[torch.Tensor, list]:
    seen: list[torch.Tensor] = []
    hook = model.unet().class_embedding.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        latent = call(EmptyLatent, hctx, width=64, height=64, batch_size=1)[0]
        out = call(KSampler, hctx, model=model, seed=seed, steps=2, cfg=5.0, sampler_name="euler",
                   scheduler="normal", positive=positive, negative=negative, latent_image=latent, denoise=1.0)[0]
    finally:
        hook.remove()
    return out["samples"], seen


@pytest.mark.parametrize("case", ["plain", "noised"])
def test_sampling_feeds_comfyuis_adm_vector_to_the_class_embedding(hctx, unclip, case):
    model, clip, _, _ = unclip
    (strength, noise), = UNCLIP_CASES[case][0]
    text = call(TextEncode, hctx, text="a cat", clip=clip)[0]
    positive = call(unCLIPConditioning, hctx, conditioning=text, clip_vision_output=vision_output(),
                    strength=strength, noise_augmentation=noise)[0]
    _, seen = _sample(hctx, model, positive, text)
    assert len(seen) == 2  # one batched [uncond; cond] call per step
    for labels in seen:
        assert torch.equal(labels[0], torch.zeros(ADM))  # the negative has no unCLIP items
        np.testing.assert_allclose(labels[1:].numpy(), REFS[f"unclip/{case}/y"], atol=1e-6, rtol=1e-6)


def test_strength_zero_equals_no_unclip_and_strength_one_changes_the_picture(hctx, unclip):
    model, clip, _, _ = unclip
    text = call(TextEncode, hctx, text="a cat", clip=clip)[0]
    with_image = {s: call(unCLIPConditioning, hctx, conditioning=text, clip_vision_output=vision_output(),
                          strength=s, noise_augmentation=0.0)[0] for s in (0.0, 1.0)}
    base, _ = _sample(hctx, model, text, text)
    zero, _ = _sample(hctx, model, with_image[0.0], text)
    one, _ = _sample(hctx, model, with_image[1.0], text)
    assert torch.equal(base, zero)
    assert (one - base).abs().max() > 1e-3


def test_a_too_narrow_embedding_is_refused_by_name(hctx, unclip):
    model, clip, _, _ = unclip
    text = call(TextEncode, hctx, text="a cat", clip=clip)[0]
    narrow = ClipVisionOutput()
    narrow["image_embeds"] = torch.zeros(1, 8)
    positive = call(unCLIPConditioning, hctx, conditioning=text, clip_vision_output=narrow, strength=1.0,
                    noise_augmentation=0.0)[0]
    with pytest.raises(ValueError, match="unCLIPConditioning.clip_vision_output: image embeddings 8 wide"):
        _sample(hctx, model, positive, text)


def test_a_checkpoint_without_a_vision_tower_gives_a_clear_clip_vision_error(hctx):
    model, _, _, vision = call(unCLIPCheckpointLoader, hctx, ckpt_name="sd2-plain.safetensors")
    assert isinstance(model, DiffusionModel)
    with pytest.raises(UnsupportedCheckpoint, match="unCLIPCheckpointLoader.ckpt_name: .*no CLIP vision model"):
        vision.encode_image(torch.zeros(1, 32, 32, 3))


def test_image_only_loader_gives_vision_and_vae_and_names_the_unsupported_video_parts(hctx):
    model, vision, vae = call(ImageOnlyCheckpointLoader, hctx, ckpt_name="svd-like.safetensors")
    assert call(CLIPVisionEncode, hctx, clip_vision=vision, image=torch.rand(1, 32, 32, 3), crop="none")[0] \
        .last_hidden_state.shape == (1, 17, 32)
    with pytest.raises(UnsupportedCheckpoint, match="ImageOnlyCheckpointLoader.ckpt_name: .*SVD video models are "
                                                    "not supported"):
        model.unet()
    with pytest.raises(UnsupportedCheckpoint, match="temporal decoder"):
        vae.decode(torch.zeros(1, 4, 4, 4))


def test_image_only_loader_loads_an_sd_family_unet_and_an_image_vae(hctx):
    model, vision, vae = call(ImageOnlyCheckpointLoader, hctx, ckpt_name="image-only-sd.safetensors")
    assert isinstance(model, DiffusionModel) and isinstance(vision, ClipVision)
    assert vae.decode(torch.zeros(1, 4, 4, 4)).shape == (1, 32, 32, 3)


def test_hooked_and_patched_unet_paths_feed_the_same_adm_vector(hctx, unclip):
    """A post-CFG hook (ComfyUI's pipeline: `c["y"]`) and an attention patch (the patched UNet walk) keep y."""
    model, clip, _, _ = unclip
    text = call(TextEncode, hctx, text="a cat", clip=clip)[0]
    positive = call(unCLIPConditioning, hctx, conditioning=text, clip_vision_output=vision_output(), strength=1.0,
                    noise_augmentation=0.0)[0]
    plain, _ = _sample(hctx, model, positive, text)
    hooked = model.clone()
    hooked.set_model_sampler_post_cfg_function(lambda args: args["denoised"])
    patched = model.clone()
    patched.set_model_attn2_output_patch(lambda out, extra: out)
    for variant in (hooked, patched):
        out, seen = _sample(hctx, variant, positive, text)
        assert seen and all(torch.allclose(s[-1], torch.from_numpy(REFS["unclip/plain/y"][0]), atol=1e-6)
                            for s in seen)
        assert (out - plain).abs().max() < 1e-5 * plain.abs().max()  # the hooked path guides x0: rounding apart


def test_sdxl_revision_replaces_the_pooled_text_embedding_with_the_noised_image_embedding(ctx, sdxl):
    model, clip, _ = sdxl
    text = call(TextEncode, ctx, text="a cat", clip=clip)[0]
    width = text[0][1]["pooled_output"].shape[-1]
    image = ClipVisionOutput()
    image["image_embeds"] = torch.randn(1, width, generator=torch.Generator().manual_seed(1))
    positive = call(unCLIPConditioning, ctx, conditioning=text, clip_vision_output=image, strength=1.0,
                    noise_augmentation=0.2)[0]
    seen: list[torch.Tensor] = []
    hook = model.unet().add_embedding.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        latent = call(EmptyLatent, ctx, width=64, height=64, batch_size=1)[0]
        call(KSampler, ctx, model=model, seed=SEED, steps=1, cfg=5.0, sampler_name="euler", scheduler="normal",
             positive=positive, negative=text, latent_image=latent, denoise=1.0)
    finally:
        hook.remove()
    items = positive[0][1]["unclip_conditioning"]
    expected = unclip_adm(items, SEED, 0.0)[:, :width]  # ComfyUI's sdxl_pooled: no merge noise, seed - 10
    pooled = seen[0][:, :width]
    assert torch.allclose(pooled[1], expected[0], atol=1e-6)  # the positive: the image
    assert torch.allclose(pooled[0], text[0][1]["pooled_output"][0], atol=1e-6)  # the negative: its prompt
