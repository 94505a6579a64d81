"""comfy.utils, comfy.model_management, comfy.samplers/sample, node_helpers: ComfyUI's behaviour, sdgraph's engine."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdgraph.comfy_layer import activate
from sdgraph.context import InterruptFlag, Interrupted, NodeContext, Services, node_context_bound

activate(None)
import comfy.model_management as mm  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.utils  # noqa: E402
import node_helpers  # noqa: E402


def test_common_upscale_crops_then_resizes_like_comfyui():
    x = torch.rand(2, 3, 7, 10, dtype=torch.float64)
    out = comfy.utils.common_upscale(x, 4, 4, "bilinear", "center")
    expected = F.interpolate(x[..., :, 2:8], size=(4, 4), mode="bilinear")  # 2 columns cut each side
    assert out.dtype == torch.float64 and torch.allclose(out, expected)
    video = torch.rand(1, 4, 3, 6, 6)  # [B, C, T, H, W]: frame by frame
    moved = comfy.utils.common_upscale(video, 3, 3, "nearest-exact", "disabled")
    assert moved.shape == (1, 4, 3, 3, 3)
    assert torch.equal(moved[:, :, 1], F.interpolate(video[:, :, 1], size=(3, 3), mode="nearest-exact"))
    with pytest.raises(ValueError, match="upscale_method"):
        comfy.utils.common_upscale(x, 4, 4, "nope", "disabled")


def test_progress_bar_reports_through_the_node_call_and_checks_interrupt():
    seen = []
    flag = InterruptFlag()
    ctx = NodeContext("5", "p", Services(), flag, on_progress=lambda v, t, p: seen.append((v, t, p)))
    with node_context_bound(ctx):
        bar = comfy.utils.ProgressBar(4)
        bar.update(1)
        bar.update_absolute(9)  # capped at the total
        assert mm.processing_interrupted() is False
        mm.interrupt_current_processing()
        assert flag.is_set() and mm.processing_interrupted()
        with pytest.raises(mm.InterruptProcessingException) as caught:
            bar.update(1)
    assert isinstance(caught.value, Interrupted)  # the executor's own interruption
    assert seen == [(1, 4, None), (4, 4, None)]
    flag.clear()  # as the executor does when the run ends
    comfy.utils.ProgressBar(3).update(1)  # outside any run: nothing to report, no error
    assert len(seen) == 2


def test_global_hook_replaces_events():
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: calls.append((v, t, node_id)))
    try:
        comfy.utils.ProgressBar(2, node_id="9").update(2)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert calls == [(2, 2, "9")]


def test_devices_and_lists():
    assert mm.get_torch_device().type in ("cpu", "cuda", "mps")
    assert mm.intermediate_device() == torch.device("cpu")
    assert mm.vae_dtype() in (torch.float32, torch.bfloat16, torch.float16)
    assert "euler" in comfy.samplers.KSampler.SAMPLERS and "karras" in comfy.samplers.KSampler.SCHEDULERS
    assert "ddim" in comfy.samplers.SAMPLER_NAMES and "ddim" not in comfy.samplers.KSAMPLER_NAMES
    with pytest.raises(NotImplementedError, match="common_ksampler"):
        comfy.samplers.KSampler(None, 20, "cpu")


def test_prepare_noise_is_comfyuis_seeded_noise():
    latent = torch.zeros(3, 4, 2, 2)
    expected = torch.randn(latent.size(), generator=torch.manual_seed(42))
    assert torch.equal(comfy.sample.prepare_noise(latent, 42), expected)
    one = comfy.sample.prepare_noise(latent[:1], 42, [2])
    assert torch.equal(one[0], expected[2])


def test_resize_to_batch_size_and_conditioning_helpers():
    t = torch.arange(3.0)[:, None]
    assert comfy.utils.resize_to_batch_size(t, 5).flatten().tolist() == [0, 0, 1, 2, 2]
    assert comfy.utils.resize_to_batch_size(torch.arange(5.0)[:, None], 3).flatten().tolist() == [0, 2, 4]
    cond = [[torch.zeros(1), {"a": [1]}]]
    out = node_helpers.conditioning_set_values(cond, {"a": [2], "b": 3}, append=True)
    assert out[0][1] == {"a": [1, 2], "b": 3} and cond[0][1] == {"a": [1]}


def test_load_torch_file_reads_safetensors_and_ckpt(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "m.safetensors"), metadata={"k": "v"})
    sd, meta = comfy.utils.load_torch_file(str(tmp_path / "m.safetensors"), return_metadata=True)
    assert torch.equal(sd["w"], torch.ones(2)) and meta == {"k": "v"}
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "m.ckpt")
    assert list(comfy.utils.load_torch_file(str(tmp_path / "m.ckpt"))) == ["w"]
