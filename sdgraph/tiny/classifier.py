"""A small CNN that reads a 64x64 picture's shape, colour, background, position and size.

It is trained on real (rendered) samples of ``sdgraph.tiny.shapes`` and judges generated pictures: prompt
adherence is its accuracy against the prompt's attributes, and an FID is computed on its penultimate-layer
features (``TinyClassifier.features``).  Training adds blur, noise and small shifts so that the soft pictures a
diffusion model makes are read the way a person would read them.

``python -m sdgraph.tiny.classifier [--out FILE] [--steps N] [--device cpu|cuda]`` trains it alone;
``python -m sdgraph.tiny.train`` trains it along with the models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sdgraph.tiny.architecture import CLASSIFIER_FILE, MODELS_DIR
from sdgraph.tiny.parallel import Team
from sdgraph.tiny.shapes import ATTRIBUTES, ShapeDataset, generate_dataset

FEATURE_DIM = 128
HELD_OUT_START = 10_000_000  # sample indices from here on are never used for training


class TinyClassifier(nn.Module):
    """Four stride-2 conv stages (64 -> 4 pixels), FEATURE_DIM hidden features, one head per attribute.

    The features are flattened from a 4x4 map rather than pooled, so position stays readable.
    """

    def __init__(self, attributes: dict[str, tuple[str, ...]] = ATTRIBUTES) -> None:
        super().__init__()
        self.attributes = {name: tuple(values) for name, values in attributes.items()}
        widths = (3, 32, 64, 64, 64)
        stages: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stages += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
        self.stages = nn.Sequential(*stages)
        self.hidden = nn.Linear(widths[-1] * 4 * 4, FEATURE_DIM)
        self.heads = nn.ModuleDict({name: nn.Linear(FEATURE_DIM, len(v)) for name, v in self.attributes.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, FEATURE_DIM] of pictures [B, 3, 64, 64] in 0..1."""
        x = self.stages(images * 2 - 1)
        return F.silu(self.hidden(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(images)
        return {name: head(feats) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, list[str]]:
        """Attribute names for pictures [B, 3, 64, 64] in 0..1."""
        logits = self(images)
        return {name: [self.attributes[name][i] for i in out.argmax(1).tolist()] for name, out in logits.items()}


def images_to_tensor(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in 0..1."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random blur, shift and noise, so the classifier also reads the soft pictures a small model makes."""
    batch = images.shape[0]
    device = images.device
    # Blur: mix each picture with a 3x3 box-blurred copy by a random amount (twice for a stronger blur).
    blurred = images
    for _ in range(2):
        amount = torch.rand(batch, 1, 1, 1, generator=generator, device=device)
        soft = F.avg_pool2d(F.pad(blurred, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        blurred = blurred + (soft - blurred) * amount
    shift = torch.randint(-2, 3, (2,), generator=generator, device=device).tolist()
    shifted = torch.roll(blurred, shifts=(shift[0], shift[1]), dims=(2, 3))
    noise_level = torch.rand(batch, 1, 1, 1, generator=generator, device=device) * 0.06
    noise = torch.randn(shifted.shape, generator=generator, device=device) * noise_level
    return (shifted + noise).clamp(0, 1)


def label_tensors(dataset: ShapeDataset, device: str | torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(v).to(device) for name, v in dataset.label_indices.items()}


def train_classifier(
    dataset: ShapeDataset,
    steps: int,
    batch_size: int = 128,
    device: str = "cpu",
    seed: int = 0,
    log_every: int = 200,
    team: Team = Team(),
) -> TinyClassifier:
    """Train on ``team.size`` workers (each takes its share of every batch), or alone."""
    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(team.seed(seed))
    batch_size = team.share(batch_size)
    model = TinyClassifier().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=max(steps, 1), pct_start=0.1)
    images = images_to_tensor(dataset.images, device)
    labels = label_tensors(dataset, device)
    start = time.time()
    running = 0.0
    for step in range(1, steps + 1):
        index = torch.randint(0, len(dataset), (batch_size,), generator=generator, device=device)
        logits = model(augment(images[index], generator))
        loss = sum(F.cross_entropy(logits[name], labels[name][index]) for name in logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        team.average_gradients(model.parameters())
        optimizer.step()
        schedule.step()
        running += float(loss.detach())
        if team.leader and (step % log_every == 0 or step == steps):
            count = log_every if step % log_every == 0 else step % log_every
            print(f"[classifier] step {step}/{steps} loss {running / count:.4f} ({time.time() - start:.0f}s)")
            running = 0.0
    return model.eval()


@torch.no_grad()
def accuracy(model: TinyClassifier, dataset: ShapeDataset, device: str = "cpu") -> dict[str, float]:
    """Per-attribute accuracy on a dataset's clean pictures."""
    model = model.to(device).eval()
    images = images_to_tensor(dataset.images, device)
    labels = label_tensors(dataset, device)
    correct = {name: 0 for name in model.attributes}
    for begin in range(0, len(dataset), 512):
        logits = model(images[begin : begin + 512])
        for name, out in logits.items():
            correct[name] += int((out.argmax(1) == labels[name][begin : begin + 512]).sum())
    return {name: count / len(dataset) for name, count in correct.items()}


def save_classifier(model: TinyClassifier, path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    info = {"attributes": json.dumps({k: list(v) for k, v in model.attributes.items()}), **(metadata or {})}
    save_file(tensors, str(path), metadata=info)


def load_classifier(path: Path | None = None, device: str = "cpu") -> TinyClassifier:
    """Load the committed classifier (fp32); the attribute names come from the file's metadata."""
    from safetensors import safe_open

    path = path or MODELS_DIR / CLASSIFIER_FILE
    with safe_open(str(path), framework="pt") as handle:
        attributes = json.loads(handle.metadata()["attributes"])
    model = TinyClassifier({k: tuple(v) for k, v in attributes.items()})
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.to(device).eval()


def held_out_dataset(count: int = 1000, seed: int = 0) -> ShapeDataset:
    return generate_dataset(count, seed=seed, start=HELD_OUT_START)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the tiny attribute classifier alone.")
    parser.add_argument("--out", type=Path, default=MODELS_DIR / CLASSIFIER_FILE)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model = train_classifier(generate_dataset(args.images, args.seed), args.steps, device=args.device, seed=args.seed)
    print("held-out accuracy:", accuracy(model, held_out_dataset(seed=args.seed), args.device))
    save_classifier(model, args.out, {"steps": str(args.steps), "seed": str(args.seed)})
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
