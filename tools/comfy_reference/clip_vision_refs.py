"""Reference numbers for CLIP vision, unCLIP and style models, made by ComfyUI's own code (dev tooling).

- CLIPVisionEncode: the tiny towers of `tests/sd/clip_vision_files.py` (Hugging Face and OpenCLIP layouts) loaded
  into ComfyUI's `comfy.clip_vision.ClipVisionModel` (built from a JSON config of the tiny sizes, since its own
  configs are the full-size ones; OpenCLIP keys go through its `convert_to_transformers`) and encoded with its
  `encode_image`, crop on and off;
- unCLIP: ComfyUI's `comfy.model_base.unclip_adm` with a `CLIPEmbeddingNoiseAugmentation` of the SD 2.1 unCLIP
  settings (squared-cosine schedule, timestep_dim = the embedding width), called as `SD21UNCLIP.encode_adm` calls
  it (merge 0.05, seed = sampling seed - 10), on the ViT-L case's image embeddings;
- StyleModelApply: ComfyUI's `StyleAdapter` (tiny sizes) with the style weights, applied by its node to a seeded
  conditioning, "multiply" and "attn_bias".

    python tools/comfy_reference/clip_vision_refs.py --comfyui /tmp/comfyui --out tests/sd/data/clip_vision.npz
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sd"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_vision_files import (ENCODE_CASES, STYLE, seeded_image, style_state, to_open_clip,  # noqa: E402
                               vision_config, vision_state)
from make_references import write_torchvision_stand_in  # noqa: E402

SAMPLING_SEED = 42
# name -> (unCLIP items on one entry as (strength, noise_augmentation), images in each item's output)
UNCLIP_CASES = {"plain": ([(1.0, 0.0)], 1), "noised": ([(0.8, 0.3)], 1), "two_items": ([(0.8, 0.1), (1.2, 0.5)], 1),
                "two_images": ([(1.0, 0.2)], 2)}
STYLE_CASES = {"multiply": (0.7, "multiply"), "attn_bias": (0.5, "attn_bias")}


def import_comfyui(comfyui: Path):
    scratch = Path(tempfile.mkdtemp(prefix="comfy-clip-vision-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.clip_vision
    import comfy.model_base
    import comfy.sd
    import comfy.t2i_adapter.adapter
    import nodes
    from comfy.ldm.modules.encoders.noise_aug_modules import CLIPEmbeddingNoiseAugmentation
    return comfy, nodes, CLIPEmbeddingNoiseAugmentation


def comfy_tower(comfy, family: str, layout: str):
    config = {**vision_config(family), "model_type": "clip_vision_model"}
    path = Path(tempfile.mkdtemp()) / "tiny.json"
    path.write_text(json.dumps(config))
    tower = comfy.clip_vision.ClipVisionModel(str(path))
    sd = vision_state(family)
    if layout == "open_clip":
        sd = comfy.clip_vision.convert_to_transformers(to_open_clip(sd, "visual."), "visual.")
    missing, _ = tower.load_sd(sd)
    assert not missing, missing
    return tower


def encode_references(comfy) -> tuple[dict[str, np.ndarray], object]:
    out: dict[str, np.ndarray] = {}
    plain = None
    for name, (family, layout, shape, seed) in ENCODE_CASES.items():
        tower = comfy_tower(comfy, family, layout)
        image = seeded_image(shape, seed)
        for crop in (True, False):
            result = tower.encode_image(image, crop=crop)
            key = f"encode/{name}/{'center' if crop else 'none'}"
            for field in ("last_hidden_state", "image_embeds", "penultimate_hidden_states"):
                out[f"{key}/{field}"] = result[field].float().numpy()
            if name == "vit_l_hf" and crop:
                plain = result
        print(f"{name}: {tuple(image.shape)} -> {tuple(out[key + '/last_hidden_state'].shape)}")
    return out, plain


def unclip_references(comfy, augmentation_cls, vision) -> dict[str, np.ndarray]:
    import torch

    width = vision.image_embeds.shape[-1]
    augmentor = augmentation_cls(noise_schedule_config={"timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
                                 timestep_dim=width)
    out = {"unclip/image_embeds": vision.image_embeds.numpy()}
    for name, (items, images) in UNCLIP_CASES.items():
        output = comfy.clip_vision.Output()
        output["image_embeds"] = vision.image_embeds[:images]
        conds = [{"clip_vision_output": output, "strength": s, "noise_augmentation": n} for s, n in items]
        y = comfy.model_base.unclip_adm(conds, torch.device("cpu"), augmentor, 0.05, SAMPLING_SEED - 10)
        out[f"unclip/{name}/y"] = y.float().numpy()
        print(f"unclip {name}: y {tuple(y.shape)}")
    return out


def style_references(comfy, nodes, vision) -> dict[str, np.ndarray]:
    import torch

    net = comfy.t2i_adapter.adapter.StyleAdapter(width=STYLE["width"], context_dim=STYLE["context_dim"], num_head=8,
                                                 n_layes=STYLE["layers"], num_token=STYLE["tokens"])
    net.load_state_dict(style_state())
    model = comfy.sd.StyleModel(net)
    text = torch.randn(1, 77, STYLE["context_dim"], generator=torch.Generator().manual_seed(9))
    out = {"style/text": text.numpy()}
    for name, (strength, kind) in STYLE_CASES.items():
        (cond, extras), = nodes.StyleModelApply().apply_stylemodel([[text, {}]], model, vision, strength, kind)[0]
        out[f"style/{name}/cond"] = cond.float().numpy()
        if "attention_mask" in extras:
            out[f"style/{name}/mask"] = extras["attention_mask"].float().numpy()
        print(f"style {name}: {tuple(cond.shape)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, default=Path("/tmp/comfyui"))
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "clip_vision.npz")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    comfy, nodes, augmentation_cls = import_comfyui(args.comfyui)
    with torch.inference_mode():
        refs, vision = encode_references(comfy)
        refs.update(unclip_references(comfy, augmentation_cls, vision))
        refs.update(style_references(comfy, nodes, vision))
    np.savez_compressed(args.out, **refs)
    print(f"wrote {len(refs)} arrays to {args.out}")


if __name__ == "__main__":
    main()
