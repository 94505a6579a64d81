"""GLIGEN: the loader reads ComfyUI's key layout, GLIGENTextBoxApply builds ComfyUI's conditioning extra, and
sampling with boxes equals ComfyUI's on the same tiny UNet and file (tests/sd/data/gligen_refs.npz, made by
tools/comfy_reference/gligen_refs.py with ComfyUI's own classes; tiny shapes: see gligen_files.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import call, make_ctx  # noqa: E402
from gligen_files import (CASES, LATENT_SHAPE, SEED, StubClip, gligen_unet, pooled_text,  # noqa: E402
                          save_gligen)
from sampling_support import text  # noqa: E402

from sdgraph.nodes.sd import gligen as gligen_module  # noqa: E402
from sdgraph.nodes.sd.cfg_patches import RescaleCFG  # noqa: E402
from sdgraph.nodes.sd.conditioning import ConditioningCombine, ConditioningSetArea  # noqa: E402
from sdgraph.nodes.sd.gligen import GLIGENLoader, GLIGENTextBoxApply  # noqa: E402
from sdgraph.nodes.sd.gligen_cond import boxes_of, share_with_other_side  # noqa: E402
from sdgraph.nodes.sd.model_objects import DiffusionModel  # noqa: E402
from sdgraph.nodes.sd.sampling import KSampler  # noqa: E402
from sdgraph.nodes.sd.text_encoding import encode_prompt  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402

DATA = Path(__file__).parent / "data" / "gligen_refs.npz"


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return gligen_unet()


@pytest.fixture(scope="module")
def home(tmp_path_factory: Any, unet: torch.nn.Module) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gligen-home")
    folder = root / "models" / "gligen"
    files = {"tiny": save_gligen(folder / "tiny_gligen.safetensors", unet),
             "wide": save_gligen(folder / "tiny_gligen_64.safetensors", unet, text_dim=64, token_dim=64)}
    torch.save({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, folder / "not_gligen.pt")
    broken = dict(files["tiny"])
    del broken["middle_block.1.transformer_blocks.0.fuser.attn.to_v.weight"]
    from safetensors.torch import save_file
    save_file(broken, str(folder / "broken.safetensors"))
    return {"root": root, **files}


@pytest.fixture(scope="module")
def gctx(home: dict[str, Any], manager: Any) -> Any:
    return make_ctx(Dirs(base=home["root"], extra_model_roots=[]), manager)


@pytest.fixture(scope="module")
def model(unet: torch.nn.Module, manager: Any) -> DiffusionModel:
    return DiffusionModel(slot=manager.manage(unet, "gligen-test:unet", "unet"), name="gligen-tiny")


@pytest.fixture(scope="module")
def tiny(gctx: Any) -> Any:
    return call(GLIGENLoader, gctx, gligen_name="tiny_gligen.safetensors")[0]


@pytest.fixture
def stub_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """GLIGENTextBoxApply's text encoding replaced by StubClip's seeded pooled outputs (as the reference ran)."""
    def encode(clip: Any, words: str, *_: Any, **kwargs: Any) -> tuple[None, torch.Tensor]:
        return clip.encode_from_tokens(clip.tokenize(words), return_pooled="unprojected" if kwargs.get(
            "unprojected") else False)
    monkeypatch.setattr(gligen_module, "encode_prompt", encode)


# ---- loading -------------------------------------------------------------------------------------------------


def test_loader_reads_every_key_of_comfyuis_layout(tiny: Any, home: dict[str, Any]) -> None:
    net = tiny.model
    blocks = ["input_blocks.1.1", "middle_block.1", "output_blocks.2.1", "output_blocks.3.1"]
    assert net.prefixes == [f"{block}.transformer_blocks.0.fuser." for block in blocks]
    assert [f.width for f in net.fusers] == [64, 128, 64, 64]
    assert [f.attn.heads for f in net.fusers] == [1, 2, 1, 1]  # 64-wide heads: the tokens are not 768 wide
    state = net.file_state()
    assert set(state) == set(home["tiny"])
    for key, value in home["tiny"].items():
        assert torch.equal(state[key].float(), value), key


def test_loader_refuses_other_files_naming_the_input(gctx: Any) -> None:
    with pytest.raises(ValueError, match=r"GLIGENLoader\.gligen_name: not_gligen\.pt: not a GLIGEN file"):
        call(GLIGENLoader, gctx, gligen_name="not_gligen.pt")
    with pytest.raises(ValueError, match=r"GLIGENLoader\.gligen_name: broken.*middle_block\.1\..*attn\.to_v"):
        call(GLIGENLoader, gctx, gligen_name="broken.safetensors")


# ---- GLIGENTextBoxApply ----------------------------------------------------------------------------------------


def test_text_box_apply_appends_comfyuis_position_entry(gctx: Any, sd1: Any) -> None:
    _, clip, _ = sd1
    wide = call(GLIGENLoader, gctx, gligen_name="tiny_gligen_64.safetensors")[0]
    start = [[text(1, dim=64), {"strength": 0.5}], [text(2, dim=64), {}]]
    first = call(GLIGENTextBoxApply, gctx, conditioning_to=start, clip=clip, gligen_textbox_model=wide,
                 text="a cat", width=100, height=64, x=15, y=8)[0]
    both = call(GLIGENTextBoxApply, gctx, conditioning_to=first, clip=clip, gligen_textbox_model=wide,
                text="a dog", width=8, height=16, x=0, y=40)[0]
    cat_pooled = encode_prompt(clip, "a cat", unprojected=True)[1]
    dog_pooled = encode_prompt(clip, "a dog", unprojected=True)[1]
    assert [len(entry[1]["gligen"][2]) for entry in first] == [1, 1] and "gligen" not in start[0][1]
    for entry, original in zip(both, start):
        assert entry[0] is original[0]
        kind, gligen, boxes = entry[1]["gligen"]
        assert kind == "position" and gligen is wide
        assert [b[1:] for b in boxes] == [(8, 12, 1, 1), (2, 1, 5, 0)]  # (h, w, y, x) in latent pixels: // 8
        assert torch.equal(boxes[0][0], cat_pooled) and torch.equal(boxes[1][0], dog_pooled)
    assert both[0][1]["strength"] == 0.5 and "gligen" not in start[0][1]
    assert not torch.equal(cat_pooled, dog_pooled) and cat_pooled.shape == (1, 64)


def test_text_box_apply_refuses_a_clip_of_another_width(gctx: Any, sd1: Any, tiny: Any) -> None:
    _, clip, _ = sd1  # 64-wide pooled output; the tiny file reads 32
    with pytest.raises(ValueError, match=r"GLIGENTextBoxApply\.gligen_textbox_model: .*32-wide.*64 wide"):
        call(GLIGENTextBoxApply, gctx, conditioning_to=[[text(1), {}]], clip=clip, gligen_textbox_model=tiny,
             text="a cat", width=64, height=64, x=0, y=0)


def test_at_most_thirty_boxes(gctx: Any, tiny: Any, stub_text: None) -> None:
    cond = [[text(1), {}]]
    for _ in range(30):
        cond = call(GLIGENTextBoxApply, gctx, conditioning_to=cond, clip=StubClip(), gligen_textbox_model=tiny,
                    text="sky", width=64, height=64, x=0, y=0)[0]
    with pytest.raises(ValueError, match=r"GLIGENTextBoxApply\.conditioning_to: .*30"):
        call(GLIGENTextBoxApply, gctx, conditioning_to=cond, clip=StubClip(), gligen_textbox_model=tiny,
             text="sky", width=64, height=64, x=0, y=0)


def test_boxes_are_fractions_of_the_latent_unclamped() -> None:
    pooled = pooled_text(1)
    assert boxes_of([(pooled, 3, 4, 2, 6)], 8, 8) == [(0.75, 0.25, 1.25, 0.625)]
    assert boxes_of([(pooled, 8, 0, 0, 0)], 8, 16) == [(0.0, 0.0, 0.0, 1.0)]  # zero wide, kept


def test_the_negative_gets_the_positives_boxes() -> None:
    g1, g2 = ("position", None, [1]), ("position", None, [2])
    positive = [["p", {"gligen": g1}], ["q", {"gligen": g2, "area": (1, 1, 0, 0)}], ["r", {"gligen": g2}]]
    negative = [["n", {}], ["m", {"area": (4, 4, 0, 0)}]]
    share_with_other_side(positive, negative)
    assert negative[0][1]["gligen"] is g2 and "gligen" not in negative[1][1]  # the last one wins on entry 0
    kept = [["n", {"gligen": g1}], ["o", {}]]
    share_with_other_side([["p", {"gligen": g2}]], kept)
    assert kept == [["n", {"gligen": g1}], ["o", {}]]  # a side that has boxes of its own keeps them


# ---- sampling ----------------------------------------------------------------------------------------------------


def sample(case: dict[str, Any], model: DiffusionModel, gligen: Any, ctx: Any, boxes: bool = True) -> torch.Tensor:
    positive = [[text(1), {}]]
    for words, width, height, x, y in case["boxes"] if boxes else ():
        positive = call(GLIGENTextBoxApply, ctx, conditioning_to=positive, clip=StubClip(),
                        gligen_textbox_model=gligen, text=words, width=width, height=height, x=x, y=y)[0]
    if case.get("area"):
        width, height, x, y = case["area"]
        positive = call(ConditioningSetArea, ctx, conditioning=positive, width=width, height=height, x=x, y=y,
                        strength=1.0)[0]
        positive = call(ConditioningCombine, ctx, conditioning_1=positive, conditioning_2=[[text(3), {}]])[0]
    if case.get("rescale") is not None:
        model = call(RescaleCFG, ctx, model=model, multiplier=case["rescale"])[0]
    out = call(KSampler, ctx, model=model, seed=SEED, steps=case["steps"], cfg=case["cfg"],
               sampler_name=case["sampler"], scheduler=case["scheduler"], positive=positive,
               negative=[[text(2), {}]], latent_image={"samples": torch.zeros(LATENT_SHAPE)}, denoise=1.0)[0]
    return out["samples"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampling_with_boxes_equals_comfyuis(name: str, model: DiffusionModel, tiny: Any, gctx: Any,
                                             stub_text: None) -> None:
    expected = torch.from_numpy(np.load(DATA)[name])
    ours = sample(CASES[name], model, tiny, gctx)
    without = sample(CASES[name], model, tiny, gctx, boxes=False)
    scale = max(1.0, float(expected.abs().max()))
    assert float((ours - expected).abs().max()) <= 1e-5 * scale, name  # measured: 2.5e-6 * scale at most
    assert float((without - expected).abs().max()) > 100e-4 * scale  # the boxes matter


def test_out_of_range_box_inputs_are_refused_as_comfyui_refuses_them() -> None:
    from sdgraph.validate import check_literal

    specs = {spec.name: spec for spec in GLIGENTextBoxApply.inputs}
    assert check_literal(specs["width"], 8, False)[1] is None and check_literal(specs["x"], 0, False)[1] is None
    for name, value, message in (("width", 0, "Value 0 smaller than min of 8"),
                                 ("x", -8, "Value -8 smaller than min of 0"),
                                 ("y", 16392, "Value 16392 bigger than max of 16384")):
        problem = check_literal(specs[name], value, False)[1]
        assert problem is not None and problem["message"] == message


def test_the_pooled_output_is_taken_before_the_text_projection(sdxl: Any) -> None:
    _, clip, _ = sdxl
    projected = encode_prompt(clip, "a cat")[1]
    unprojected = encode_prompt(clip, "a cat", unprojected=True)[1]
    encoder = clip.encoder(1)  # OpenCLIP-G, the encoder SDXL's pooled output comes from
    assert unprojected.shape[-1] == encoder.config.hidden_size
    with torch.inference_mode():
        assert torch.allclose(encoder.text_projection(unprojected), projected, atol=1e-6)


def test_the_boxes_run_after_the_models_own_middle_patches(model: DiffusionModel, tiny: Any, gctx: Any,
                                                           stub_text: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdgraph.nodes.sd import gligen_cond

    events: list[tuple[str, int, int]] = []
    boxes = gligen_cond.GligenPatch.__call__

    def logged(self: Any, x: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        events.append(("boxes", extra["transformer_index"], extra["cond_or_uncond"][0]))
        return boxes(self, x, extra)

    def spy(x: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        events.append(("model", extra["transformer_index"], extra["cond_or_uncond"][0]))
        return x
    monkeypatch.setattr(gligen_cond.GligenPatch, "__call__", logged)
    patched = model.clone()
    patched.set_model_patch(spy, "middle_patch")
    case = dict(CASES["one_box"], steps=1)
    with_spy = sample(case, patched, tiny, gctx)
    assert "middle_patch" not in model.model_options["transformer_options"].get("patches", {})
    assert torch.allclose(with_spy, sample(case, model, tiny, gctx))  # the spy changes nothing; the boxes still act
    spied = events[:16]  # one step: 2 conds x 4 transformers x (model's patch, then the boxes)
    assert spied == [(kind, i, side) for side in (0, 1) for i in range(4) for kind in ("model", "boxes")] or \
        spied == [(kind, i, side) for side in (1, 0) for i in range(4) for kind in ("model", "boxes")]
