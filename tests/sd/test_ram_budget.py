"""The CPU-RAM budget for models: least recently used files' weights dropped, reloaded from disk when used again,
never those of the running prompt; what a separate compute device holds is not RAM; the flag reaches the manager."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import torch

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.limits import configure, current_limits
from sdgraph.models import ModelManager, ModelReloadError
from sdgraph.models.memory import available_ram_bytes, victims
from sdgraph.nodes.sd.loading import load_checkpoint, load_vae
from sdgraph.paths import Dirs

from test_workflow_residency import registry, run, txt2img
from tiny_models import save_many_checkpoints

CHECKPOINTS = 6


@pytest.fixture(scope="module")
def soak_dirs(tmp_path_factory: pytest.TempPathFactory) -> Dirs:
    root = tmp_path_factory.mktemp("ram_budget")
    save_many_checkpoints(root / "models" / "checkpoints", CHECKPOINTS)
    for sub in ("input", "output", "temp"):
        (root / sub).mkdir()
    return Dirs(base=root, extra_model_roots=[])


def checkpoint(dirs: Dirs, i: int) -> Path:
    return dirs.find_model("checkpoints", f"soak-{i:03d}.safetensors")


def ckpt_bytes(dirs: Dirs) -> int:
    """What one soak checkpoint holds in RAM once loaded (fp32 on the CPU)."""
    probe = ModelManager("cpu")
    load_checkpoint(checkpoint(dirs, 0), probe)
    return probe.ram_bytes()


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def image_of(dirs: Dirs, result: Any) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    record = result.outputs["7"]["images"][0]
    return torch.from_numpy(np.asarray(Image.open(dirs.output / record["subfolder"] / record["filename"])).copy())


# ---- the budget's parts -------------------------------------------------------------------------------------


def test_victims_are_the_least_recently_used_until_the_rest_fits() -> None:
    assert victims([("a", 5), ("b", 0), ("c", 5), ("d", 5)], used=20, budget=10) == ["a", "c"]
    assert victims([("a", 5)], used=10, budget=10) == []
    assert victims([("a", 5)], used=30, budget=10) == ["a"]  # all it can, even if still over


def test_default_budget_reads_available_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemAvailable:     400 kB\n")
    assert available_ram_bytes(meminfo) == 400 * 1024
    assert available_ram_bytes(tmp_path / "missing") > 0  # falls back to the machine's memory
    assert ModelManager("cpu").ram_budget_bytes > 0


def test_the_flag_reaches_the_manager(tmp_path: Path) -> None:
    from sdgraph.cli import _runtime_flags, runtime_options
    from sdgraph.runtime import create_executor

    parser = argparse.ArgumentParser()
    _runtime_flags(parser)
    args = parser.parse_args(["--ram-budget-gb", "0.5", "--base-dir", str(tmp_path), "--no-plugins", "--cpu"])
    before = current_limits()
    try:
        assert create_executor(runtime_options(args)).services.models.ram_budget_bytes == 512 * 1024**2
    finally:
        configure(before)  # create_executor installs the flags' limits process-wide
    with pytest.raises(SystemExit):
        parser.parse_args(["--ram-budget-gb", "-1"])


def test_the_server_flag_reaches_the_runtime_options(monkeypatch, tmp_path: Path) -> None:
    import sdgraph.runtime
    from sdgraph.cli_serve import add_serve_arguments, serve

    class Built(Exception):
        pass

    def create_executor(options: Any) -> None:
        raise Built(options)

    monkeypatch.setattr(sdgraph.runtime, "create_executor", create_executor)
    args = add_serve_arguments(argparse.ArgumentParser()).parse_args(["--ram-budget-gb", "2", "--base-dir",
                                                                        str(tmp_path)])
    with pytest.raises(Built) as built:
        serve(args)
    assert built.value.args[0].ram_budget_gb == 2.0


# ---- a simulated separate compute device -------------------------------------------------------------------


def test_a_simulated_device_really_moves_and_its_memory_is_not_ram(dirs: Dirs) -> None:
    mgr = ModelManager("cpu", simulated_device=True)
    model, clip, vae = load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), mgr)
    total = model.slot.nbytes + clip.encoders[0].nbytes + vae.slot.nbytes
    assert mgr.ram_bytes() == total
    before = next(model.slot.module.parameters()).data_ptr()
    mgr.acquire(model.slot)
    assert next(model.slot.module.parameters()).data_ptr() != before, "moving copied the weights"
    assert mgr.ram_bytes() == total - model.slot.nbytes
    mgr.unload_all()
    assert mgr.ram_bytes() == total and mgr.stats.moves_to_offload == 1
    mgr.placement.simulated = False  # the same manager on a plain CPU: everything it holds is RAM
    mgr.acquire(model.slot)
    assert mgr.ram_bytes() == total


def test_streaming_on_a_simulated_device_swaps_each_layer_in_and_back(dirs: Dirs) -> None:
    from conftest import unet_out

    reference = unet_out(load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"),
                                         ModelManager("cpu"))[0])
    mgr = ModelManager("cpu", simulated_device=True, budget_bytes=0)
    model, _, _ = load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), mgr)
    conv = model.slot.module.conv_in
    resting = conv.weight.data_ptr()
    seen: list[int] = []
    handle = conv.register_forward_hook(lambda m, a, o: seen.append(m.weight.data_ptr()))
    assert torch.equal(unet_out(model), reference)
    handle.remove()
    assert model.slot.streamed and seen and seen[0] != resting, "the forward ran on a copy of the weights"
    assert conv.weight.data_ptr() == resting, "the resting weights were put back, not copied back"
    assert mgr.stats.layer_visits > 0 and mgr.placement.ram_bytes(model.slot) == model.slot.nbytes  # rests in RAM


# ---- dropping and reloading --------------------------------------------------------------------------------


def test_least_recently_used_file_is_dropped_and_reloads_as_the_same_object(soak_dirs: Dirs) -> None:
    one = ckpt_bytes(soak_dirs)
    mgr = ModelManager("cpu", ram_budget_bytes=int(1.5 * one))
    first = load_checkpoint(checkpoint(soak_dirs, 0), mgr)
    original = params(first[0].slot.module)
    held = first[0].slot.module  # held elsewhere (say a cache): its tensors must be freed all the same
    load_checkpoint(checkpoint(soak_dirs, 1), mgr)
    assert not first[0].slot.loaded and next(held.parameters()).is_meta
    assert mgr.ram_bytes() <= mgr.ram_budget_bytes and mgr.stats.ram_drops == 1
    unet = mgr.acquire(first[0].slot)  # the handle reloads its file
    assert mgr.stats.disk_loads == 3 and first[0].slot.loaded
    assert all(torch.equal(v, original[k]) for k, v in unet.state_dict().items())
    assert load_checkpoint(checkpoint(soak_dirs, 0), mgr) is first
    assert mgr.ram_bytes() <= mgr.ram_budget_bytes, "the other file made room"
    assert mgr.stats.disk_loads == 3


def test_a_running_prompt_keeps_its_models_until_it_ends(soak_dirs: Dirs) -> None:
    one = ckpt_bytes(soak_dirs)
    mgr = ModelManager("cpu", ram_budget_bytes=int(1.5 * one))
    with mgr.prompt_scope():
        first = load_checkpoint(checkpoint(soak_dirs, 0), mgr)
        second = load_checkpoint(checkpoint(soak_dirs, 1), mgr)
        assert first[0].slot.loaded and second[0].slot.loaded and mgr.ram_bytes() > mgr.ram_budget_bytes
    assert not first[0].slot.loaded and second[0].slot.loaded and mgr.ram_bytes() <= mgr.ram_budget_bytes


def test_lora_like_entries_are_forgotten_and_vae_files_count(soak_dirs: Dirs, dirs: Dirs) -> None:
    from sdgraph.nodes.sd.lora import read_lora

    mgr = ModelManager("cpu", ram_budget_bytes=0)  # nothing stays once it is not in use
    _, raw = read_lora(dirs.find_model("loras", "tiny-lora.safetensors"), mgr)
    assert mgr.ram_bytes() == sum(t.nbytes for up, down, _ in raw.values() for t in (up, down))
    vae = load_vae(dirs.find_model("vae", "tiny-vae.safetensors"), mgr)  # the LoRA leaves to make room
    assert mgr.ram_bytes() == vae.slot.nbytes and mgr.stats.ram_drops == 1
    read_lora(dirs.find_model("loras", "tiny-lora.safetensors"), mgr)
    assert mgr.stats.disk_loads == 3 and not vae.slot.loaded


def test_dropped_files_are_forgotten_past_a_count_and_held_handles_still_reload(soak_dirs: Dirs, monkeypatch) -> None:
    import sdgraph.models

    monkeypatch.setattr(sdgraph.models, "KEEP_DROPPED", 1)
    mgr = ModelManager("cpu", ram_budget_bytes=0)
    held = load_checkpoint(checkpoint(soak_dirs, 0), mgr)[0]
    for i in (1, 2):
        load_checkpoint(checkpoint(soak_dirs, i), mgr)
    assert len(mgr.files.entries) == 2 and held.slot.entry not in mgr.files.entries
    mgr.acquire(held.slot)
    assert held.slot.loaded and held.slot.entry in mgr.files.entries
    assert mgr.ram_bytes() == sum(s.nbytes for s in held.slot.entry.slots), "counted again once refilled"


def test_a_dropped_model_whose_file_changed_is_refused_clearly(soak_dirs: Dirs, tmp_path: Path) -> None:
    import os
    import shutil

    path = tmp_path / "changing.safetensors"
    shutil.copy(checkpoint(soak_dirs, 0), path)
    mgr = ModelManager("cpu", ram_budget_bytes=0)
    model, _, _ = load_checkpoint(path, mgr)
    load_checkpoint(checkpoint(soak_dirs, 1), mgr)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(ModelReloadError, match="changing.safetensors: its weights were dropped .* file has changed"):
        mgr.acquire(model.slot)


# ---- through the executor, its output cache holding the handles --------------------------------------------


def test_cached_handles_do_not_keep_dropped_weights_and_reload_to_the_same_picture(soak_dirs: Dirs) -> None:
    one = ckpt_bytes(soak_dirs)
    first, second = (f"soak-{i:03d}.safetensors" for i in (0, 1))
    expected = image_of(soak_dirs, run(Executor(registry(), Services(dirs=soak_dirs, models=ModelManager("cpu"))),
                                       txt2img(5, first)))
    mgr = ModelManager("cpu", ram_budget_bytes=int(1.5 * one))  # compute on the CPU: every weight is in RAM
    executor = Executor(registry(), Services(dirs=soak_dirs, models=mgr))
    run(executor, txt2img(4, first))
    model = load_checkpoint(checkpoint(soak_dirs, 0), mgr)[0]
    run(executor, txt2img(4, second))
    assert not model.slot.loaded and mgr.ram_bytes() <= mgr.ram_budget_bytes
    loads = mgr.stats.disk_loads
    again = run(executor, txt2img(5, first))  # the loader's output comes from the cache; its weights from disk
    assert "1" in again.cached and mgr.stats.disk_loads == loads + 1
    assert torch.equal(image_of(soak_dirs, again), expected)


def test_soak_many_checkpoints_stay_within_the_budget_and_give_the_same_pictures(soak_dirs: Dirs) -> None:
    one = ckpt_bytes(soak_dirs)
    mgr = ModelManager("cpu", simulated_device=True, budget_bytes=one // 2, ram_budget_bytes=int(2.5 * one))
    executor = Executor(registry(), Services(dirs=soak_dirs, models=mgr), OutputCache(0))  # every run loads
    pictures: dict[int, torch.Tensor] = {}
    for visit in range(2 * CHECKPOINTS):
        i = visit % CHECKPOINTS
        picture = image_of(soak_dirs, run(executor, txt2img(3, f"soak-{i:03d}.safetensors")))
        assert mgr.ram_bytes() <= mgr.ram_budget_bytes, f"visit {visit}: {mgr.ram_bytes()} bytes in RAM"
        assert torch.equal(pictures.setdefault(i, picture), picture), f"checkpoint {i} after a reload"
    assert mgr.stats.disk_loads == 2 * CHECKPOINTS and mgr.stats.ram_drops >= 2 * CHECKPOINTS - 2
