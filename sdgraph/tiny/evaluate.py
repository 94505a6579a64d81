"""Judge the tiny models: prompt adherence, FID on classifier features, ControlNet IoU and the LoRA's effect.

    python -m sdgraph.tiny.evaluate [--models DIR] [--count N] [--steps 20] [--cfg 7] [--scheduler ddim_uniform]
                                    [--grid-dir DIR]

Everything runs on a fixed held-out set (prompts and seeds drawn from ``EVAL_SEED``, never used in training),
sampled through sdgraph's own nodes, as a user's workflow is: one API-format prompt per picture
(CheckpointLoaderSimple "sdgraph-tiny", CLIPTextEncode for the prompt and for the empty negative,
EmptyLatentImage 64x64, KSampler with euler, 20 steps, cfg 7 and the picture's seed, VAEDecode), run by an
in-process ``Executor`` whose cache keeps the models loaded from picture to picture. The scheduler defaults to
ComfyUI's ddim_uniform, whose sigmas are those of the checkpoint's own scheduler config. ControlNet pictures add
LoadImage (the outline, written as a PNG into a temporary input folder), ControlNetLoader and
ControlNetApplyAdvanced; LoRA pictures add LoraLoader at strength 0 and 1. ``EvalCapture`` hands each picture back
as the 8-bit pixels SaveImage would write.

- adherence: the classifier's reading of each picture against the prompt's shape, colour, background, position;
- FID: Fréchet distance between classifier features of generated and of real pictures of the same prompts;
- ControlNet IoU: the generated shape's mask (pixels nearer the prompt's colour than the background's) against
  the filled region of the control outline, on prompts that leave the position out;
- LoRA: the share of shape-coloured pixels at strength 0 and 1 (outlines cover far fewer pixels than fills).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdgraph.context import Services
from sdgraph.execute import Executor, RunResult
from sdgraph.models import ModelManager
from sdgraph.node import Input, Node, NodeOutput
from sdgraph.nodes.sd.image_files import to_uint8
from sdgraph.nodes.sd.schedules import SCHEDULER_NAMES
from sdgraph.paths import Dirs
from sdgraph.plugins import build_registry
from sdgraph.tiny import architecture as arch
from sdgraph.tiny.classifier import TinyClassifier, images_to_tensor, load_classifier
from sdgraph.tiny.shapes import COLOURS, ShapeDataset, generate_dataset, image_grid, make_caption
from sdgraph.types import IMAGE

EVAL_SEED = 1234
EVAL_START = 20_000_000  # sample indices reserved for evaluation
# The ComfyUI schedule whose sigmas equal those of the checkpoint's own scheduler config ("leading" spacing with
# steps_offset 1: timesteps 951, 901, ..., 1 at 20 steps), which the tiny model was evaluated with from the start.
DEFAULT_SCHEDULER = "ddim_uniform"
CAPTURE_PACK = "sdgraph-tiny-evaluate"


class EvalCapture(Node):
    """Hands the decoded pictures back to the evaluation, as the 8-bit pixels SaveImage would write."""

    category = "testing"
    output_node = True
    inputs = [Input("images", IMAGE)]
    outputs = []

    def run(self, images: Any) -> NodeOutput:
        return NodeOutput(ui={"pixels": [to_uint8(images)]})


@dataclass(frozen=True)
class Settings:
    """What every picture's KSampler is given besides its prompt and seed."""

    steps: int = 20
    cfg: float = 7.0
    scheduler: str = DEFAULT_SCHEDULER
    sampler: str = "euler"


def make_executor(models: Path, base: Path, device: str = "cpu") -> Executor:
    """An in-process executor on the models folder, reading control images from ``base/input``."""
    registry = build_registry(plugins=False)
    registry.add_native([EvalCapture], CAPTURE_PACK)
    (base / "input").mkdir(parents=True, exist_ok=True)
    dirs = Dirs(base=base, extra_model_roots=[models])
    return Executor(registry, Services(dirs=dirs, models=ModelManager(device=device)))


def picture_prompt(caption: str, seed: int, settings: Settings, control_image: str | None = None,
                   lora_strength: float | None = None) -> dict[str, Any]:
    """The API-format prompt of one picture: txt2img, with a ControlNet hint or a LoRA when asked."""
    prompt: dict[str, Any] = {
        "checkpoint": node("CheckpointLoaderSimple", ckpt_name=arch.CHECKPOINT_NAME),
        "latent": node("EmptyLatentImage", width=arch.IMAGE_SIZE, height=arch.IMAGE_SIZE, batch_size=1),
    }
    model, clip = ["checkpoint", 0], ["checkpoint", 1]
    if lora_strength is not None:
        prompt["lora"] = node("LoraLoader", model=model, clip=clip, lora_name=arch.LORA_FILE.name,
                              strength_model=lora_strength, strength_clip=lora_strength)
        model, clip = ["lora", 0], ["lora", 1]
    prompt["positive"] = node("CLIPTextEncode", text=caption, clip=clip)
    prompt["negative"] = node("CLIPTextEncode", text="", clip=clip)
    positive, negative = ["positive", 0], ["negative", 0]
    if control_image is not None:
        prompt["hint"] = node("LoadImage", image=control_image)
        prompt["controlnet"] = node("ControlNetLoader", control_net_name=arch.CONTROLNET_NAME)
        prompt["control"] = node("ControlNetApplyAdvanced", positive=positive, negative=negative,
                                 control_net=["controlnet", 0], image=["hint", 0], strength=1.0,
                                 start_percent=0.0, end_percent=1.0)
        positive, negative = ["control", 0], ["control", 1]
    prompt["sampler"] = node("KSampler", model=model, seed=seed, steps=settings.steps, cfg=settings.cfg,
                             sampler_name=settings.sampler, scheduler=settings.scheduler, positive=positive,
                             negative=negative, latent_image=["latent", 0], denoise=1.0)
    prompt["decode"] = node("VAEDecode", samples=["sampler", 0], vae=["checkpoint", 2])
    prompt["capture"] = node(EvalCapture.__name__, images=["decode", 0])
    return prompt


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def run_picture(executor: Executor, prompt: dict[str, Any]) -> tuple[np.ndarray, RunResult]:
    """One prompt's picture, uint8 [64, 64, 3], and the run's result (which nodes ran, which were cached)."""
    result = executor.run(prompt)
    if not result.ok:
        raise RuntimeError(f"evaluation prompt failed: {result.error or result.node_errors}")
    return result.outputs["capture"]["pixels"][0][0], result


def sample(executor: Executor, captions: list[str], seeds: list[int], settings: Settings,
           controls: np.ndarray | None = None, lora_strength: float | None = None) -> np.ndarray:
    """Pictures uint8 [N, 64, 64, 3], one prompt each; ``controls`` are uint8 [N, 64, 64, 3] outline images."""
    pictures = []
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        hint = None if controls is None else write_control(executor, controls[i], f"eval_outline_{i}.png")
        prompt = picture_prompt(caption, seed, settings, hint, lora_strength)
        pictures.append(run_picture(executor, prompt)[0])
    return np.stack(pictures)


def write_control(executor: Executor, image: np.ndarray, name: str) -> str:
    """Put a control image in the executor's input folder (PNG: lossless for 8-bit pixels); returns its name."""
    Image.fromarray(image).save(executor.services.dirs.input / name)
    return name


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


def evaluate(models: Path, count: int, settings: Settings, device: str, grid_dir: Path | None) -> dict:
    started = time.time()
    classifier = load_classifier(models / arch.CLASSIFIER_FILE)
    data = eval_set(count)
    seeds = list(range(count))
    with tempfile.TemporaryDirectory(prefix="sdgraph-evaluate-") as base:
        executor = make_executor(models, Path(base), device)
        t0 = time.time()
        generated = sample(executor, data.captions, seeds, settings)
        per_image = (time.time() - t0) / count
        controlled = sample(executor, controlnet_prompts(data), seeds, settings, controls=data.outlines)
        lora_count = min(count, 32)
        plain = sample(executor, data.captions[:lora_count], seeds[:lora_count], settings, lora_strength=0.0)
        styled = sample(executor, data.captions[:lora_count], seeds[:lora_count], settings, lora_strength=1.0)
    result: dict = {"settings": asdict(settings),
                    "adherence": adherence(classifier, generated, data),
                    "fid": frechet_distance(classifier, generated, data.images),
                    "seconds_per_image": per_image}
    result["fid_real_vs_real"] = frechet_distance(classifier, eval_set(2 * count).images[count:], data.images)

    colours = [lab.colour for lab in data.labels]
    result["controlnet_iou"] = float(iou(shape_masks(controlled, colours), data.masks > 127).mean())
    result["controlnet_adherence"] = adherence(classifier, controlled, data)

    plain_fill = shape_masks(plain, colours[:lora_count]).mean()
    styled_fill = shape_masks(styled, colours[:lora_count]).mean()
    result["lora"] = {"shape_pixels_strength_0": float(plain_fill), "shape_pixels_strength_1": float(styled_fill),
                      "mean_abs_change": float(np.abs(styled.astype(np.float32)
                                                      - plain.astype(np.float32)).mean() / 255)}
    result["seconds"] = round(time.time() - started, 1)
    if grid_dir is not None:
        grid_dir.mkdir(parents=True, exist_ok=True)
        n = min(32, count)
        image_grid(np.concatenate([data.images[:n], generated[:n]]), 8).save(grid_dir / "txt2img.png")
        image_grid(np.concatenate([data.outlines[:n], controlled[:n]]), 8).save(grid_dir / "controlnet.png")
        image_grid(np.concatenate([plain, styled]), 8).save(grid_dir / "lora.png")
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
    parser.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=SCHEDULER_NAMES,
                        help="KSampler's scheduler (ddim_uniform: the checkpoint's own timestep spacing)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (one picture at a time is too small a job to share, and several "
                             "threads that wait on each other are much slower on a busy machine)")
    parser.add_argument("--grid-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    settings = Settings(steps=args.steps, cfg=args.cfg, scheduler=args.scheduler)
    result = evaluate(args.models, args.count, settings, args.device, args.grid_dir)
    print(format_table(result))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
