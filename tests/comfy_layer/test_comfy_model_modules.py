"""comfy.comfy_types, comfy_extras, comfy.ops / attention / latent_formats / patcher_extension / sampler_helpers and
the named stand-ins: a pack written against them loads, and they compute what ComfyUI's do (no models here)."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from tests.comfy_layer.conftest import load_pack
from sdgraph.comfy_layer import activate

activate(None)
import comfy  # noqa: E402
import comfy.latent_formats  # noqa: E402
import comfy.ldm.modules.attention as attention  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.patcher_extension as pe  # noqa: E402
import comfy.sampler_helpers  # noqa: E402
from comfy.comfy_types import IO  # noqa: E402
from comfy_extras.nodes_mask import composite  # noqa: E402

PACK = '''
import comfy
import nodes
from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict
from comfy.comfy_types.node_typing import CheckLazyMixin
from comfy_extras.nodes_mask import MaskComposite
from comfy_extras.nodes_latent import LatentBatch
from comfy.ldm.wan.model import WanT2VCrossAttention
from comfy.samplers import CFGGuider
from comfy.k_diffusion.sampling import to_d


class WanPatch(WanT2VCrossAttention):  # packs derive from family classes at import time
    pass


class MaskCombine(ComfyNodeABC, CheckLazyMixin):
    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {"required": {"a": (IO.MASK,), "b": (IO.MASK,)}}
    RETURN_TYPES = (IO.MASK,)
    FUNCTION = "go"
    CATEGORY = "test"

    def go(self, a, b):
        return MaskComposite().combine(a, b, 0, 0, "add")


class PreviewTwice(nodes.PreviewImage):
    pass


NODE_CLASS_MAPPINGS = {"MaskCombine": MaskCombine, "PreviewTwice": PreviewTwice,
                       "SamplersSeen": type("SamplersSeen", (), {
                           "INPUT_TYPES": classmethod(lambda c: {"required": {
                               "sampler": (comfy.samplers.KSampler.SAMPLERS,)}}),
                           "RETURN_TYPES": ("STRING",), "FUNCTION": "f",
                           "f": lambda self, sampler: (sampler,)})}
'''


@pytest.fixture
def pack_executor(tmp_path):
    registry, dirs = load_pack(tmp_path / "home", "model_modules_pack", PACK)
    return Executor(registry, Services(dirs=dirs), OutputCache())


def test_a_pack_importing_the_model_modules_loads_and_its_nodes_run(pack_executor):
    assert {"MaskCombine", "PreviewTwice", "SamplersSeen"} <= set(pack_executor.registry.nodes)
    a, b = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    a[0, :2] = 0.75
    b[0, :, :2] = 0.5
    import sys

    module = sys.modules["sdgraph_custom_nodes.model_modules_pack"]
    (out,) = module.MaskCombine().go(a, b)
    assert torch.equal(out, (a + b).clamp(0, 1))  # sdgraph's MaskComposite "add", as ComfyUI's
    assert module.PreviewTwice.FUNCTION == "save_images" and hasattr(module.PreviewTwice, "save_images")
    with pytest.raises(NotImplementedError, match="WanT2VCrossAttention.*Wan video"):
        module.WanPatch()


def test_io_types_match_as_comfyui_matches_them():
    assert IO.IMAGE == "IMAGE" and str(IO.ANY) == "*" and {IO.MASK: 1}["MASK"] == 1
    assert not (IO.ANY != "LATENT") and not (IO.NUMBER != "INT") and IO.NUMBER != "STRING"
    assert not (IO.PRIMITIVE != "FLOAT,INT") and IO.IMAGE != 3


def test_comfy_submodules_are_attributes_and_missing_ones_are_named():
    assert comfy.sd.load_checkpoint_guess_config and comfy.lora.load_lora
    with pytest.raises(AttributeError, match="comfy.nothing_here"):
        comfy.nothing_here  # noqa: B018


def test_optimized_attention_is_scaled_dot_product_attention_in_comfyuis_layout():
    g = torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 12, generator=g) for _ in range(3))
    heads, dim = 3, 4
    split = [t.reshape(2, 5, heads, dim).transpose(1, 2) for t in (q, k, v)]
    weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / dim ** 0.5, dim=-1)
    expected = (weights @ split[2]).transpose(1, 2).reshape(2, 5, 12)
    torch.testing.assert_close(attention.optimized_attention(q, k, v, heads), expected)
    mask = torch.zeros(5, 5)
    mask[:, 0] = float("-inf")
    masked = attention.optimized_attention_masked(q, k, v, heads, mask=mask)
    weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / dim ** 0.5 + mask, dim=-1)
    torch.testing.assert_close(masked, (weights @ split[2]).transpose(1, 2).reshape(2, 5, 12))
    kept = attention.attention_pytorch(*split, heads, skip_reshape=True, skip_output_reshape=True)
    assert kept.shape == (2, heads, 5, dim)
    calls = []

    def override(func, *args, **kwargs):
        calls.append(func.__name__)
        return func(*args, **kwargs) * 0

    zero = attention.optimized_attention(q, k, v, heads, transformer_options={"optimized_attention_override": override})
    assert calls == ["attention_pytorch"] and not zero.any()


def test_manual_cast_layers_compute_in_the_inputs_precision():
    torch.manual_seed(0)
    layer = comfy.ops.manual_cast.Linear(4, 3)
    conv = comfy.ops.manual_cast.Conv2d(2, 2, 3, padding=1)
    for module in (layer, conv):  # the ops skip weight initialisation, as ComfyUI's do: the memory is whatever it was
        with torch.no_grad():
            for param in module.parameters():
                param.normal_()
    layer = layer.to(torch.float16)
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight.float(), layer.bias.float()))
    assert layer(x).dtype == torch.float32
    conv = conv.to(torch.bfloat16)
    image = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(conv(image), F.conv2d(image, conv.weight.float(), conv.bias.float(), padding=1))
    assert issubclass(comfy.ops.disable_weight_init.Linear, torch.nn.Linear)


def test_latent_formats_match_sdgraphs_by_their_scale():
    from sdgraph.nodes.sd.model_objects import LatentFormat

    sd1, sdxl = LatentFormat(0.18215), LatentFormat(0.13025)
    assert isinstance(sd1, comfy.latent_formats.SD15) and not isinstance(sd1, comfy.latent_formats.SDXL)
    assert isinstance(sdxl, comfy.latent_formats.SDXL) and not isinstance(sdxl, comfy.latent_formats.Wan21)
    x = torch.ones(1, 4, 2, 2)
    assert torch.equal(comfy.latent_formats.SDXL().process_in(x), x * 0.13025)
    with pytest.raises(NotImplementedError, match="Flux"):
        comfy.latent_formats.Flux()
    assert comfy.model_base.ModelType.V_PREDICTION.value == 2
    with pytest.raises(NotImplementedError):
        comfy.model_base.SDXL()


def test_composite_pastes_with_a_mask_at_latent_offsets():
    dest = torch.zeros(1, 1, 4, 4)
    src = torch.ones(1, 1, 2, 2)
    mask = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])
    out = composite(dest, src, 16, 8, mask, multiplier=8)
    assert out is dest
    assert torch.equal(out[0, 0], torch.tensor([[0, 0, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1], [0, 0, 0, 0.0]]))
    edge = composite(torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 2, 2), 2, 2, multiplier=1)
    assert edge[0, 0].sum() == 1 and edge[0, 0, 2, 2] == 1  # clipped to the destination


def test_patcher_wrappers_are_refused_not_silently_dropped():
    assert pe.WrappersMP.APPLY_MODEL == "apply_model" and pe.get_all_wrappers("apply_model", {}) == []
    with pytest.raises(NotImplementedError, match="wrappers"):
        pe.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "k", lambda *a: None, {})
    merged = pe.merge_nested_dicts({"a": {"x": [1]}, "b": 1}, {"a": {"x": [2]}, "c": 3})
    assert merged == {"a": {"x": [2, 1]}, "b": 1, "c": 3}


def test_sampler_helpers_prepare_masks_and_convert_conds():
    mask = comfy.sampler_helpers.prepare_mask(torch.ones(1, 16, 16), (2, 4, 8, 8), "cpu")
    assert mask.shape == (2, 4, 8, 8) and torch.equal(mask, torch.ones(2, 4, 8, 8))
    cond = torch.zeros(1, 77, 8)
    (entry,) = comfy.sampler_helpers.convert_cond([[cond, {"strength": 0.5}]])
    assert entry["cross_attn"] is cond and entry["strength"] == 0.5 and entry["model_conds"] == {}


def test_latent_previewer_base_class_and_sdgraphs_rgb_preview():
    import latent_preview
    from sdgraph.nodes.sd.preview import latent_to_rgb

    assert latent_preview.get_previewer("cpu", comfy.latent_formats.SD15()) is None  # previews are off
    x0 = torch.randn(2, 4, 6, 5, generator=torch.manual_seed(1))
    image = latent_preview.Latent2RGBPreviewer(sdxl=True).decode_latent_to_preview(x0)
    pixels = torch.tensor(bytearray(image.tobytes()), dtype=torch.uint8).reshape(6, 5, 3)
    assert torch.equal(pixels, latent_to_rgb(x0, True))

    class Mine(latent_preview.LatentPreviewer):
        def decode_latent_to_preview(self, x0):
            return "picture"

    assert Mine().decode_latent_to_preview_image("JPEG", x0) == ("JPEG", "picture", 512)
