"""CLIPVisionLoader / CLIPVisionEncode and the style model nodes, against ComfyUI's own code on the same tiny files
(tests/sd/data/clip_vision.npz, made by tools/comfy_reference/clip_vision_refs.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clip_vision_files import ENCODE_CASES, STYLE, seeded_image, style_state, to_open_clip, vision_state
from conftest import call, make_ctx
from sdgraph.nodes.sd.clip_vision import ClipVisionOutput, hf_weights, preprocess
from sdgraph.nodes.sd.clip_vision_nodes import CLIPVisionEncode, CLIPVisionLoader
from sdgraph.nodes.sd.style_model import StyleModelApply, StyleModelLoader
from sdgraph.paths import Dirs

REFS = np.load(Path(__file__).parent / "data" / "clip_vision.npz")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Dirs:
    root = tmp_path_factory.mktemp("clip_vision_home")
    vision, styles = root / "models" / "clip_vision", root / "models" / "style_models"
    vision.mkdir(parents=True)
    styles.mkdir(parents=True)
    for family in ("vit_l", "vit_h", "vit_g"):
        hf = vision_state(family)
        save_file(hf, str(vision / f"{family}_hf.safetensors"))
        save_file(to_open_clip(hf, "visual."), str(vision / f"{family}_open_clip.safetensors"))
    save_file(style_state(), str(styles / "style.safetensors"))
    save_file({"redux_down.weight": torch.zeros(2, 2)}, str(styles / "redux.safetensors"))
    save_file({"foo": torch.zeros(2)}, str(vision / "not_vision.safetensors"))
    return Dirs(base=root, extra_model_roots=[])


@pytest.fixture
def hctx(home: Dirs, manager: Any) -> Any:
    return make_ctx(home, manager)


def tower(hctx: Any, family: str, layout: str) -> Any:
    return call(CLIPVisionLoader, hctx, clip_name=f"{family}_{layout}.safetensors")[0]


@pytest.mark.parametrize("family, act, depth", [("vit_l", "quick_gelu", 24), ("vit_h", "gelu", 32),
                                                ("vit_g", "gelu", 48)])
@pytest.mark.parametrize("layout", ["hf", "open_clip"])
def test_families_are_told_apart_by_depth_and_both_layouts_load_the_same_weights(hctx, family, act, depth, layout):
    loaded = tower(hctx, family, layout)
    config = loaded.slot.module.config
    assert (config.hidden_act, config.num_hidden_layers, config.num_attention_heads) == (act, depth, 16)
    assert (config.hidden_size, config.image_size, config.patch_size, config.projection_dim) == (32, 32, 8, 16)
    state = loaded.slot.module.state_dict()
    for key, tensor in vision_state(family).items():  # embeddings and layers held as fp16 values, as ComfyUI's
        half = key.startswith(("vision_model.embeddings.", "vision_model.encoder."))
        assert torch.equal(state[key], tensor.half().float() if half else tensor), key


def test_open_clip_conversion_splits_attention_and_transposes_the_projection():
    hf = vision_state("vit_l")
    back = hf_weights(to_open_clip(hf, "embedder.model.visual."), "embedder.model.visual.")
    assert set(back) == set(hf)
    assert all(torch.equal(back[k], hf[k]) for k in hf)


@pytest.mark.parametrize("name", sorted(ENCODE_CASES))
@pytest.mark.parametrize("crop", ["center", "none"])
def test_encode_equals_comfyuis(hctx, name, crop):
    family, layout, shape, seed = ENCODE_CASES[name]
    out = call(CLIPVisionEncode, hctx, clip_vision=tower(hctx, family, layout), image=seeded_image(shape, seed),
               crop=crop)[0]
    for field in ("last_hidden_state", "image_embeds", "penultimate_hidden_states"):
        expected = REFS[f"encode/{name}/{crop}/{field}"]
        np.testing.assert_allclose(out[field].numpy(), expected, atol=2e-5, rtol=1e-5, err_msg=field)
    assert out.image_embeds is out["image_embeds"] and "last_hidden_state" in out


def test_crop_modes_differ_and_an_exact_size_image_is_only_normalised():
    image = seeded_image((1, 40, 56, 3), 1)
    assert not torch.allclose(preprocess(image, 32, (0.5,) * 3, (0.5,) * 3, True),
                              preprocess(image, 32, (0.5,) * 3, (0.5,) * 3, False))
    exact = seeded_image((1, 32, 32, 3), 3)
    levels = (exact * 255).round() / 255
    assert torch.allclose(preprocess(exact, 32, (0.5,) * 3, (0.25,) * 3, True), (levels.movedim(-1, 1) - 0.5) / 0.25)


def test_output_is_settable_by_key_and_attribute():
    out = ClipVisionOutput()
    out["image_embeds"] = torch.ones(1, 4)
    out.extra = 3
    assert out.image_embeds.shape == (1, 4) and out["extra"] == 3 and set(out.keys()) == {"image_embeds", "extra"}


def test_bad_files_get_clear_errors(hctx):
    with pytest.raises(ValueError, match="CLIPVisionLoader.clip_name: .*no CLIP vision model"):
        call(CLIPVisionLoader, hctx, clip_name="not_vision.safetensors")
    with pytest.raises(ValueError, match="StyleModelLoader.style_model_name: .*Flux Redux"):
        call(StyleModelLoader, hctx, style_model_name="redux.safetensors")


@pytest.mark.parametrize("case, strength, kind", [("multiply", 0.7, "multiply"), ("attn_bias", 0.5, "attn_bias")])
def test_style_tokens_equal_comfyuis(hctx, case, strength, kind):
    vision = call(CLIPVisionEncode, hctx, clip_vision=tower(hctx, "vit_l", "hf"),
                  image=seeded_image(ENCODE_CASES["vit_l_hf"][2], 1), crop="center")[0]
    style = call(StyleModelLoader, hctx, style_model_name="style.safetensors")[0]
    text = torch.from_numpy(REFS["style/text"])
    (cond, extras), = call(StyleModelApply, hctx, conditioning=[[text, {"pooled_output": None}]], style_model=style,
                           clip_vision_output=vision, strength=strength, strength_type=kind)[0]
    np.testing.assert_allclose(cond.numpy(), REFS[f"style/{case}/cond"], atol=2e-5, rtol=1e-5)
    assert torch.equal(cond[:, :77], text)  # the prompt's tokens stay first, untouched
    assert cond.shape[1] == 77 + 2 * STYLE["tokens"]  # both images' tokens
    if kind == "attn_bias":
        np.testing.assert_array_equal(extras["attention_mask"].float().numpy(), REFS[f"style/{case}/mask"])
    else:
        assert "attention_mask" not in extras


def test_attn_bias_at_strength_one_adds_the_tokens_without_a_mask(hctx):
    vision = ClipVisionOutput()
    vision["last_hidden_state"] = torch.randn(1, 17, 32, generator=torch.Generator().manual_seed(0))
    style = call(StyleModelLoader, hctx, style_model_name="style.safetensors")[0]
    text = torch.zeros(1, 77, STYLE["context_dim"])
    outs = [call(StyleModelApply, hctx, conditioning=[[text, {}]], style_model=style, clip_vision_output=vision,
                 strength=1.0, strength_type=kind)[0][0] for kind in ("multiply", "attn_bias")]
    assert torch.equal(outs[0][0], outs[1][0]) and "attention_mask" not in outs[1][1]
