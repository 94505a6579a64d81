"""Reference numbers for upscale models and tiled VAE coding, made by ComfyUI itself (dev tooling).

- Upscale: the tiny weight files of `tests/sd/upscale_files.py` (ESRGAN in both layouts, Real-ESRGAN x2plus's
  pixel-unshuffle, Compact), each loaded by ComfyUI's `UpscaleModelLoader` (spandrel 0.4.2 builds the network)
  and run by its `ImageUpscaleWithModel` on a seeded image; one image is 520 pixels high, so ComfyUI tiles it.
- Tiled VAE: ComfyUI's `VAE.decode_tiled_` / `encode_tiled_` (its three passes over `comfy.utils.tiled_scale`)
  called on a stand-in VAE object holding the toy module of `tests/sd/toy_vae.py`, on seeded latents / pixels.

spandrel needs torchvision, which cannot run here; install it apart, without dependencies, and pass its folder:

    pip install --no-deps --target /tmp/spandrel-ref spandrel==0.4.2
    python tools/comfy_reference/upscale_and_tiles.py --comfyui /tmp/comfyui --spandrel /tmp/spandrel-ref \
        --out tests/sd/data/upscale_and_tiles.npz

The torchvision stand-in of `make_references.py` satisfies spandrel's imports (only its LaMa and RestoreFormer
architectures call into torchvision; these files are neither).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sd"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_references import write_torchvision_stand_in  # noqa: E402
from toy_vae import ToyVae  # noqa: E402
from upscale_files import DECODE_CASES, ENCODE_CASES, UPSCALE_CASES  # noqa: E402

# name -> (state dict builder, image shape [B, H, W, C], image seed); shared with tests/sd/test_upscale_reference.py
def seeded(shape: tuple[int, ...], seed: int, scale: float = 1.0):
    import torch

    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * scale


def import_comfyui(comfyui: Path, spandrel: Path, models: Path):
    scratch = Path(tempfile.mkdtemp(prefix="comfy-upscale-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(spandrel), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import folder_paths
    folder_paths.add_model_folder_path("upscale_models", str(models), is_default=True)
    import comfy.sd
    from comfy_extras import nodes_upscale_model
    return nodes_upscale_model, comfy.sd


def upscale_references(nodes_upscale_model, models: Path) -> dict[str, np.ndarray]:
    from safetensors.torch import save_file

    out: dict[str, np.ndarray] = {}
    for name, (make, shape, seed) in UPSCALE_CASES.items():
        save_file(make(), str(models / f"{name}.safetensors"))
        model = nodes_upscale_model.UpscaleModelLoader.execute(f"{name}.safetensors").result[0]
        image = seeded(shape, seed)
        result = nodes_upscale_model.ImageUpscaleWithModel.execute(model, image).result[0]
        out[f"upscale/{name}/image"] = image.numpy()
        out[f"upscale/{name}/output"] = result.float().numpy()
        print(f"{name}: {type(model.model).__name__} x{model.scale} {tuple(image.shape)} -> {tuple(result.shape)}")
    return out


def _stand_in_vae(comfy_sd, kernel: int):
    """The attributes ComfyUI's VAE.decode_tiled_ / encode_tiled_ read, around the toy module."""
    import torch

    toy = ToyVae(kernel).eval()
    stage = SimpleNamespace(decode=toy.decode_raw, encode=toy.encode_raw)
    return SimpleNamespace(first_stage_model=stage, vae_dtype=torch.float32, device=torch.device("cpu"),
                           output_device=torch.device("cpu"), upscale_ratio=8, downscale_ratio=8,
                           latent_channels=4, process_input=lambda image: image * 2.0 - 1.0,
                           process_output=lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0))


def vae_references(comfy_sd) -> dict[str, np.ndarray]:
    import torch

    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for name, (kernel, shape, tile_x, tile_y, overlap) in DECODE_CASES.items():
            latent = (seeded(shape, kernel + 20) - 0.5) * 4
            image = comfy_sd.VAE.decode_tiled_(_stand_in_vae(comfy_sd, kernel), latent, tile_x, tile_y, overlap)
            out[f"vae/{name}/latent"], out[f"vae/{name}/image"] = latent.numpy(), image.movedim(1, -1).numpy()
        for name, (kernel, shape, tile, overlap) in ENCODE_CASES.items():
            pixels = seeded(shape, kernel + 30)
            latent = comfy_sd.VAE.encode_tiled_(_stand_in_vae(comfy_sd, kernel), pixels.movedim(-1, 1), tile, tile,
                                                overlap)
            out[f"vae/{name}/pixels"], out[f"vae/{name}/latent"] = pixels.numpy(), latent.numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--spandrel", type=Path, required=True, help="a folder holding spandrel 0.4.2")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "upscale_and_tiles.npz")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    models = Path(tempfile.mkdtemp(prefix="comfy-upscale-models-"))
    nodes_upscale_model, comfy_sd = import_comfyui(args.comfyui, args.spandrel, models)
    arrays = {**upscale_references(nodes_upscale_model, models), **vae_references(comfy_sd)}
    arrays["meta/comfyui_commit"] = np.array((args.comfyui / "COMMIT").read_text().strip()
                                             if (args.comfyui / "COMMIT").exists() else "unknown")
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {len(arrays)} arrays to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
