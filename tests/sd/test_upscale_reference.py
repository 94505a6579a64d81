"""sdgraph against numbers ComfyUI made (tests/sd/data/upscale_and_tiles.npz, by
tools/comfy_reference/upscale_and_tiles.py): ImageUpscaleWithModel on the same tiny weight files (spandrel built
them there, sdgraph's own architectures here), and the three-pass tiled VAE decode / encode on the same toy VAE."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import call, make_ctx
from toy_vae import ToyVae
from upscale_files import DECODE_CASES, ENCODE_CASES, UPSCALE_CASES
from sdgraph.models import ModelManager
from sdgraph.nodes.sd.model_objects import VaeModel
from sdgraph.nodes.sd.upscale_model import ImageUpscaleWithModel, UpscaleModelLoader
from sdgraph.paths import Dirs

DATA = np.load(Path(__file__).parent / "data" / "upscale_and_tiles.npz")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    home = tmp_path_factory.mktemp("upscale_reference")
    folder = home / "models" / "upscale_models"
    folder.mkdir(parents=True)
    for name, (make, _, _) in UPSCALE_CASES.items():
        save_file(make(), str(folder / f"{name}.safetensors"))
    return make_ctx(Dirs(base=home, extra_model_roots=[]), ModelManager(force_cpu=True))


@pytest.mark.parametrize("name", sorted(UPSCALE_CASES))
def test_upscale_matches_comfyui(ctx, name) -> None:
    image = torch.from_numpy(DATA[f"upscale/{name}/image"])
    expected = DATA[f"upscale/{name}/output"]
    (model,) = call(UpscaleModelLoader, ctx, model_name=f"{name}.safetensors")
    (out,) = call(ImageUpscaleWithModel, ctx, upscale_model=model, image=image)
    assert out.shape == expected.shape
    inside = (expected > 0) & (expected < 1)
    assert inside.mean() > 0.3, "the reference is mostly clamped: the case would check little"
    assert np.abs(out.numpy() - expected).max() < TOLERANCE


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(force_cpu=True)


def toy(manager: ModelManager, kernel: int) -> VaeModel:
    return VaeModel(slot=manager.manage(ToyVae(kernel), f"toy-{kernel}", "vae"))


@pytest.mark.parametrize("name", sorted(DECODE_CASES))
def test_tiled_decode_matches_comfyui(manager, name) -> None:
    kernel, _, tile_x, tile_y, overlap = DECODE_CASES[name]
    latent = torch.from_numpy(DATA[f"vae/{name}/latent"])
    image = toy(manager, kernel).decode_tiled(latent, tile_x, tile_y, overlap)
    assert np.abs(image.numpy() - DATA[f"vae/{name}/image"]).max() < TOLERANCE


@pytest.mark.parametrize("name", sorted(ENCODE_CASES))
def test_tiled_encode_matches_comfyui(manager, name) -> None:
    kernel, _, tile, overlap = ENCODE_CASES[name]
    pixels = torch.from_numpy(DATA[f"vae/{name}/pixels"])
    latent = toy(manager, kernel).encode_tiled(pixels, tile, tile, overlap)
    assert np.abs(latent.numpy() - DATA[f"vae/{name}/latent"]).max() < TOLERANCE
