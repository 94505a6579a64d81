"""Judge the tiny models: prompt adherence, FID on classifier features, ControlNet IoU and the LoRA's effect.

    python -m sdgraph.tiny.evaluate [--models DIR] [--count N] [--steps 20] [--cfg 7] [--grid-dir DIR]

Everything runs on a fixed held-out set (prompts and seeds drawn from ``EVAL_SEED``, never used in training),
sampled with a plain Euler loop built from the checkpoint's own scheduler config (diffusers'
EulerDiscreteScheduler, 20 steps, cfg 7 by default), with each picture's initial noise drawn from a CPU
generator seeded by its seed.

- adherence: the classifier's reading of each picture against the prompt's shape, colour, background, position;
- FID: Fréchet distance between classifier features of generated and of real pictures of the same prompts;
- ControlNet IoU: the generated shape's mask (pixels nearer the prompt's colour than the background's) against
  the filled region of the control outline, on prompts that leave the position out;
- LoRA: the share of shape-coloured pixels at strength 0 and 1 (outlines cover far fewer pixels than fills).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sdgraph.tiny import architecture as arch
from sdgraph.tiny.classifier import TinyClassifier, images_to_tensor, load_classifier
from sdgraph.tiny.shapes import COLOURS, ShapeDataset, generate_dataset, image_grid, make_caption

EVAL_SEED = 1234
EVAL_START = 20_000_000  # sample indices reserved for evaluation


@dataclass
class TinyPipeline:
    """The loaded parts of the checkpoint folder (fp32)."""

    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    device: str


def load_pipeline(models: Path = arch.MODELS_DIR, device: str = "cpu") -> TinyPipeline:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = models / arch.CHECKPOINT_SUBDIR
    fp32 = torch.float32
    return TinyPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=fp32).to(device).eval(),
        unet=UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=fp32).to(device).eval(),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=fp32).to(device).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        scheduler_config=json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
        device=device,
    )


def load_controlnet(models: Path = arch.MODELS_DIR, device: str = "cpu"):
    from diffusers import ControlNetModel

    folder = models / arch.CONTROLNET_SUBDIR
    return ControlNetModel.from_pretrained(folder, torch_dtype=torch.float32).to(device).eval()


@torch.no_grad()
def encode_prompts(pipe: TinyPipeline, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=arch.MAX_TOKENS, truncation=True,
                         return_tensors="pt").input_ids.to(pipe.device)
    return pipe.text_encoder(ids).last_hidden_state


def initial_noise(seeds: list[int]) -> torch.Tensor:
    """One CPU generator per seed, so a seed gives the same picture on any device and in any batch."""
    shape = (arch.LATENT_CHANNELS, arch.LATENT_SIZE, arch.LATENT_SIZE)
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])


@torch.no_grad()
def sample(
    pipe: TinyPipeline,
    prompts: list[str],
    seeds: list[int],
    steps: int = 20,
    cfg: float = 7.0,
    controlnet=None,
    control: torch.Tensor | None = None,
    control_scale: float = 1.0,
    batch_size: int = 128,
) -> np.ndarray:
    """Pictures uint8 [N, 64, 64, 3] for prompts and seeds; ``control`` is [N, 3, 64, 64] in 0..1."""
    out = []
    for begin in range(0, len(prompts), batch_size):
        end = begin + batch_size
        part_control = None if control is None else control[begin:end]
        out.append(_sample_batch(pipe, prompts[begin:end], seeds[begin:end], steps, cfg, controlnet,
                                 part_control, control_scale))
    return np.concatenate(out)


def _sample_batch(pipe, prompts, seeds, steps, cfg, controlnet, control, control_scale) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler_config)
    scheduler.set_timesteps(steps, device=pipe.device)
    batch = len(prompts)
    hidden = encode_prompts(pipe, [""] * batch + list(prompts))
    latents = initial_noise(seeds).to(pipe.device) * scheduler.init_noise_sigma
    if control is not None:
        control = torch.cat([control, control]).to(pipe.device)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        extra = {}
        if controlnet is not None:
            down, mid = controlnet(model_input, t, hidden, controlnet_cond=control, conditioning_scale=control_scale,
                                   return_dict=False)
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        eps_uncond, eps_text = pipe.unet(model_input, t, hidden, **extra).sample.chunk(2)
        eps = eps_uncond + cfg * (eps_text - eps_uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


# ------------------------------------------------------------------------------------------------------ metrics


def eval_set(count: int) -> ShapeDataset:
    return generate_dataset(count, seed=EVAL_SEED, start=EVAL_START)


def adherence(classifier: TinyClassifier, images: np.ndarray, dataset: ShapeDataset) -> dict[str, float]:
    """Share of pictures whose classified attribute equals the prompt's, per attribute."""
    predicted = classifier.predict(images_to_tensor(images))
    result = {}
    for name in ("shape", "colour", "background", "position", "size"):
        truth = [getattr(lab, name) for lab in dataset.labels]
        result[name] = float(np.mean([p == t for p, t in zip(predicted[name], truth)]))
    return result


@torch.no_grad()
def frechet_distance(classifier: TinyClassifier, generated: np.ndarray, real: np.ndarray) -> float:
    """FID on the classifier's penultimate features (float64 statistics, matrix square root by eigenvalues)."""
    a = classifier.features(images_to_tensor(generated)).double()
    b = classifier.features(images_to_tensor(real)).double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * middle)


def shape_masks(images: np.ndarray, colours: list[str]) -> np.ndarray:
    """Pixels nearer the named shape colour than the picture's background (median of its border)."""
    pictures = images.astype(np.float32)
    border = np.concatenate([pictures[:, 0], pictures[:, -1], pictures[:, :, 0], pictures[:, :, -1]], axis=1)
    background = np.median(border, axis=1)  # [N, 3]
    foreground = np.array([COLOURS[c] for c in colours], dtype=np.float32)
    to_bg = np.linalg.norm(pictures - background[:, None, None], axis=-1)
    to_fg = np.linalg.norm(pictures - foreground[:, None, None], axis=-1)
    return to_fg < to_bg


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = np.logical_and(a, b).sum(axis=(1, 2))
    union = np.logical_or(a, b).sum(axis=(1, 2))
    return inter / np.maximum(union, 1)


def controlnet_prompts(dataset: ShapeDataset) -> list[str]:
    """Prompts without the position: where the shape goes must come from the outline."""
    return [make_caption(lab, position=False) for lab in dataset.labels]


# ---------------------------------------------------------------------------------------------------------- main


def evaluate(models: Path, count: int, steps: int, cfg: float, device: str, grid_dir: Path | None) -> dict:
    from sdgraph.tiny.lora import merge_lora_file

    started = time.time()
    pipe = load_pipeline(models, device)
    classifier = load_classifier(models / arch.CLASSIFIER_FILE)
    data = eval_set(count)
    seeds = list(range(count))
    t0 = time.time()
    generated = sample(pipe, data.captions, seeds, steps, cfg)
    per_image = (time.time() - t0) / count
    result: dict = {"adherence": adherence(classifier, generated, data),
                    "fid": frechet_distance(classifier, generated, data.images),
                    "seconds_per_image_batched": per_image}
    result["fid_real_vs_real"] = frechet_distance(classifier, eval_set(2 * count).images[count:], data.images)

    controlnet = load_controlnet(models, device)
    colours = [lab.colour for lab in data.labels]
    controlled = sample(pipe, controlnet_prompts(data), seeds, steps, cfg, controlnet,
                        images_to_tensor(data.outlines))
    result["controlnet_iou"] = float(iou(shape_masks(controlled, colours), data.masks > 127).mean())
    result["controlnet_adherence"] = adherence(classifier, controlled, data)

    lora_count = min(count, 32)
    merge_lora_file(pipe.unet, models / arch.LORA_FILE, 1.0)
    styled = sample(pipe, data.captions[:lora_count], seeds[:lora_count], steps, cfg)
    merge_lora_file(pipe.unet, models / arch.LORA_FILE, -1.0)
    plain_fill = shape_masks(generated[:lora_count], colours[:lora_count]).mean()
    styled_fill = shape_masks(styled, colours[:lora_count]).mean()
    result["lora"] = {"shape_pixels_strength_0": float(plain_fill), "shape_pixels_strength_1": float(styled_fill),
                      "mean_abs_change": float(np.abs(styled.astype(np.float32)
                                                      - generated[:lora_count].astype(np.float32)).mean() / 255)}
    result["seconds"] = round(time.time() - started, 1)
    if grid_dir is not None:
        grid_dir.mkdir(parents=True, exist_ok=True)
        n = min(32, count)
        image_grid(np.concatenate([data.images[:n], generated[:n]]), 8).save(grid_dir / "txt2img.png")
        image_grid(np.concatenate([data.outlines[:n], controlled[:n]]), 8).save(grid_dir / "controlnet.png")
        image_grid(np.concatenate([generated[:lora_count], styled]), 8).save(grid_dir / "lora.png")
        (grid_dir / "prompts.txt").write_text("\n".join(data.captions[:n]) + "\n")
    return result


def format_table(result: dict) -> str:
    a, c = result["adherence"], result["controlnet_adherence"]
    rows = [
        "| metric | value |",
        "|---|---|",
        *[f"| {name} accuracy | {a[name]:.1%} |" for name in ("shape", "colour", "background", "position", "size")],
        f"| FID (classifier features; real vs real: {result['fid_real_vs_real']:.2f}) | {result['fid']:.2f} |",
        f"| ControlNet IoU | {result['controlnet_iou']:.3f} |",
        f"| ControlNet shape / colour accuracy | {c['shape']:.1%} / {c['colour']:.1%} |",
        f"| LoRA shape-pixel share, strength 0 -> 1 | {result['lora']['shape_pixels_strength_0']:.3f} -> "
        f"{result['lora']['shape_pixels_strength_1']:.3f} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Evaluate the tiny models on the held-out prompt set.")
    parser.add_argument("--models", type=Path, default=arch.MODELS_DIR)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = evaluate(args.models, args.count, args.steps, args.cfg, args.device, args.grid_dir)
    print(format_table(result))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
