"""Train the tiny text-to-image model, its ControlNet, its LoRA and the evaluation classifier from scratch.

    python -m sdgraph.tiny.train [--out DIR] [--seed N] [--device cuda|cpu] [--minutes M]

One command, reproducible from the seed: the step counts are a fixed function of ``--minutes`` and the device
kind (``PROFILES`` holds each kind's measured seconds per step), never of the wall clock, so the same command on
the same kind of device trains the same models.  The phases:

1. Render the captioned shapes dataset (``sdgraph.tiny.shapes``).
2. VAE (AutoencoderKL, 4x8x8 latents) on the pictures and their outline-style variants; then every picture is
   encoded once, its posterior kept and sampled from in later phases (cheaper than encoding each batch again).
   The scaling factor is 1/std of the latents, as in SD.
3. Text encoder (a small CLIPTextModel) and UNet jointly: epsilon prediction, SD's scaled_linear schedule,
   10% empty captions for classifier-free guidance, captions with random parts left out (so "a red square" is
   understood), min-SNR loss weights, a little offset noise, EMA weights.  While the text encoder trains, small
   caption heads read every attribute back from it (``CaptionHeads``), so position words stay distinct.
4. ControlNet on the outline image, with the UNet and text encoder frozen; most captions leave the position
   out, so the place comes from the outline.
5. LoRA (rank 8, every attention projection of the UNet) on the outline-style pictures with the ordinary
   captions, base frozen: at strength 1 shapes are drawn as outlines.
6. The attribute classifier (``sdgraph.tiny.classifier``) on the rendered pictures.

Output under ``--out`` (default ``sdgraph/data/models``), the layout the loaders expect:
``checkpoints/sdgraph-tiny/`` (diffusers folder), ``controlnet/sdgraph-tiny-outline/``,
``loras/sdgraph-tiny-outline-style.safetensors`` and ``eval/tiny-classifier.safetensors``; weights in fp16.

On a CPU the training runs as two one-thread worker processes that split every batch and average their
gradients (``sdgraph.tiny.parallel``).  Measured per optimizer step on two cores, against one process: VAE 1.9x,
UNet 1.45x, ControlNet 1.5x, LoRA 1.3x, classifier 1.7x faster (two threads in one process gained 1.1-1.3x).

The committed weights were trained with ``python -m sdgraph.tiny.train --device cpu --minutes 57 --seed 0`` on a
2-core CPU (see TRAINED_WITH below and ``train_info.json`` in the checkpoint folder for the step counts).  On a
GPU, ``--device cuda --minutes 7`` trains in one process with larger batches.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sdgraph.tiny import architecture as arch
from sdgraph.tiny.classifier import accuracy, held_out_dataset, save_classifier, train_classifier
from sdgraph.tiny.lora import inject_lora, save_lora
from sdgraph.tiny.parallel import Team, run_team
from sdgraph.tiny.shapes import ATTRIBUTES, ShapeDataset, generate_dataset, make_caption, parse_caption

TRAINED_WITH = "python -m sdgraph.tiny.train --device cpu --minutes 57 --seed 0 (a 2-core CPU, 2 workers)"

CFG_DROPOUT = 0.1
CONTROLNET_CAPTION_DROPOUT = 0.3
# Captions that name the position tell the (position-aware) UNet where the shape goes, and the ControlNet then
# learns little from the outline's place: most of its captions leave the position out.
CONTROLNET_STRIP_POSITION = 0.75
OFFSET_NOISE = 0.1
MIN_SNR_GAMMA = 5.0
VAE_KL_WEIGHT = 1e-6
VAE_FOREGROUND_WEIGHT = 4.0
STYLE_FRACTION_IN_VAE = 0.25  # share of outline-style pictures in VAE batches
FULL_CAPTION_PROBABILITY = 0.5
TEXT_ENCODER_TRAIN_FRACTION = 0.5
CAPTION_HEAD_WEIGHT = 0.1
VAE_LR = 2e-3
UNET_LR = 1e-3
CONTROLNET_LR = 1e-3
LORA_LR = 2e-3
LOG_EVERY_OVERRIDE: int | None = None  # set while calibrating, to keep the log quiet


# ----------------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Profile:
    """Batch sizes and measured seconds per optimizer step of each phase on one kind of device."""

    images: int
    vae_batch: int
    unet_batch: int
    controlnet_batch: int
    lora_batch: int
    classifier_batch: int
    vae_step_s: float
    unet_step_s: float
    controlnet_step_s: float
    lora_step_s: float
    classifier_step_s: float
    fixed_s: float  # rendering, encoding, saving
    workers: int = 1  # data-parallel training processes (sdgraph.tiny.parallel)


PROFILES: dict[str, Profile] = {
    # This machine's 2 CPU cores, torch 2.13, fp32, two one-thread workers: seconds per step over a whole run on a
    # slow day (a 55-minute plan that took 60.6 minutes; the UNet's is the mean over its text-encoder and
    # frozen-encoder halves). A busier or slower machine runs the same plan, the same step counts, more slowly.
    "cpu": Profile(
        images=6000, vae_batch=16, unet_batch=64, controlnet_batch=64, lora_batch=64, classifier_batch=64,
        vae_step_s=0.305, unet_step_s=0.457, controlnet_step_s=0.503, lora_step_s=0.224, classifier_step_s=0.112,
        fixed_s=150.0, workers=2,
    ),
    # One NVIDIA H200 (launch-bound at these sizes: big batches cost little more than small ones).
    "cuda": Profile(
        images=20000, vae_batch=128, unet_batch=512, controlnet_batch=256, lora_batch=256, classifier_batch=256,
        vae_step_s=0.02, unet_step_s=0.03, controlnet_step_s=0.035, lora_step_s=0.03, classifier_step_s=0.005,
        fixed_s=45.0,
    ),
}

# Share of the training time (after fixed costs) each phase gets.
TIME_SHARES = {"vae": 0.14, "unet": 0.59, "controlnet": 0.20, "lora": 0.04, "classifier": 0.03}


@dataclass(frozen=True)
class Plan:
    device: str
    seed: int
    minutes: float
    images: int
    vae_steps: int
    unet_steps: int
    controlnet_steps: int
    lora_steps: int
    classifier_steps: int
    vae_batch: int
    unet_batch: int
    controlnet_batch: int
    lora_batch: int
    classifier_batch: int
    workers: int = 1


DEFAULT_MINUTES = {"cpu": 57.0, "cuda": 7.0}  # the CPU run must finish within the hour on a 2-core machine


def device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def make_plan(
    minutes: float, device: str, seed: int, images: int | None = None, profile: Profile | None = None
) -> Plan:
    """Step counts from the time budget and the device kind's measured costs (deterministic)."""
    p = profile or PROFILES[device_kind(device)]
    budget = max(minutes * 60 - p.fixed_s, 1.0)

    def steps(phase: str, cost: float) -> int:
        return max(2, int(budget * TIME_SHARES[phase] / cost))

    return Plan(
        device=device, seed=seed, minutes=minutes, images=images or p.images,
        vae_steps=steps("vae", p.vae_step_s), unet_steps=steps("unet", p.unet_step_s),
        controlnet_steps=steps("controlnet", p.controlnet_step_s), lora_steps=steps("lora", p.lora_step_s),
        classifier_steps=steps("classifier", p.classifier_step_s),
        vae_batch=p.vae_batch, unet_batch=p.unet_batch, controlnet_batch=p.controlnet_batch,
        lora_batch=p.lora_batch, classifier_batch=p.classifier_batch, workers=p.workers,
    )


# ------------------------------------------------------------------------------------------------------ helpers


def warmup_cosine(total_steps: int, warmup: int, floor: float = 0.1) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class EMA:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, parameters: Iterable[nn.Parameter], decay: float) -> None:
        self.params = list(parameters)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for param, shadow in zip(self.params, self.shadow):
            param.copy_(shadow)


class LossLog:
    """Prints the mean loss of the last ``every`` steps."""

    def __init__(self, phase: str, total: int, every: int | None = None, quiet: bool = False) -> None:
        self.phase, self.total, self.quiet = phase, total, quiet
        self.every = LOG_EVERY_OVERRIDE or every or max(1, total // 20)
        self.sum, self.count, self.start = 0.0, 0, time.time()
        self.history: list[tuple[int, float]] = []

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.sum += float(loss.detach())
        self.count += 1
        if step % self.every == 0 or (step == self.total and LOG_EVERY_OVERRIDE is None):
            mean = self.sum / self.count
            self.history.append((step, mean))
            if not self.quiet:
                print(f"[{self.phase}] step {step}/{self.total} loss {mean:.4f} ({time.time() - self.start:.0f}s)",
                      flush=True)
            self.sum, self.count = 0.0, 0


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in 0..1."""
    return images_uint8.permute(0, 3, 1, 2).float() / 255


def noise_schedule(device: str) -> torch.Tensor:
    """alphas_cumprod of SD's schedule, on the device."""
    return arch.build_scheduler().alphas_cumprod.to(device)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def diffusion_loss(pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Epsilon MSE with min-SNR-gamma weights (min(snr, gamma) / snr), which speeds up training."""
    snr = alphas[t] / (1 - alphas[t])
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    per_sample = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


def sample_noise(shape: torch.Size, generator: torch.Generator, device: str) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator, device=device)
    offset = torch.randn(shape[0], shape[1], 1, 1, generator=generator, device=device)
    return noise + OFFSET_NOISE * offset


# ----------------------------------------------------------------------------------------------------- captions

VARIANTS = [(size, position, background) for size in (False, True) for position in (False, True)
            for background in (False, True)]  # the last is the full caption
FULL_VARIANT = len(VARIANTS) - 1
WITHOUT_POSITION = [VARIANTS.index((size, False, background)) for (size, _, background) in VARIANTS]


@dataclass
class Captions:
    """Every distinct caption once (token ids [U, 77]), and for each sample the rows of its 8 variants [N, 8].

    ``named`` [U, len(ATTRIBUTES)]: the value index of each attribute a caption names, or the attribute's value
    count where the caption leaves it out.
    """

    ids: torch.Tensor
    rows: torch.Tensor
    empty_row: int
    named: torch.Tensor

    def pick(self, index: torch.Tensor, drop: float, generator: torch.Generator,
             strip_position: float = 0.0) -> torch.Tensor:
        """Caption rows for samples: the full caption or a random shorter variant; the empty one with prob drop.

        With probability ``strip_position`` a variant that names the position loses it.
        """
        device = self.rows.device
        batch = index.shape[0]
        full = torch.rand(batch, generator=generator, device=device) < FULL_CAPTION_PROBABILITY
        other = torch.randint(0, FULL_VARIANT, (batch,), generator=generator, device=device)
        variant = torch.where(full, torch.full_like(other, FULL_VARIANT), other)
        if strip_position > 0:
            strip = torch.rand(batch, generator=generator, device=device) < strip_position
            variant = torch.where(strip, torch.tensor(WITHOUT_POSITION, device=device)[variant], variant)
        rows = self.rows[index, variant]
        dropped = torch.rand(batch, generator=generator, device=device) < drop
        return torch.where(dropped, torch.full_like(rows, self.empty_row), rows)


def tokenize_captions(dataset: ShapeDataset, tokenizer, device: str) -> Captions:
    captions = [[make_caption(lab, size=s, position=p, background=b) for (s, p, b) in VARIANTS]
                for lab in dataset.labels]
    unique = sorted({c for row in captions for c in row} | {""})
    ids = tokenizer(unique, padding="max_length", max_length=arch.MAX_TOKENS, truncation=True,
                    return_tensors="pt").input_ids
    row_of = {caption: i for i, caption in enumerate(unique)}
    rows = torch.tensor([[row_of[c] for c in row] for row in captions])
    named = torch.tensor([named_attributes(c) for c in unique])
    return Captions(ids=ids.to(device), rows=rows.to(device), empty_row=row_of[""], named=named.to(device))


def named_attributes(caption: str) -> list[int]:
    """Per attribute (ATTRIBUTES order): the index of the value the caption names, or the value count if none."""
    found = parse_caption(caption)
    return [values.index(found[name]) if name in found else len(values) for name, values in ATTRIBUTES.items()]


class CaptionHeads(nn.Module):
    """Linear read-outs of every caption attribute (or "not named") from the text encoder's mean hidden state.

    Trained alongside the UNet, they keep each attribute distinct in the text encoder's output from the first
    step.  Without them, position words were stuck: the UNet only learns to use a word the text encoder keeps
    distinct, and the text encoder only keeps a word distinct once the UNet uses it.  After a full run the hidden
    states of "on the left" and "on the right" captions differed by 2% (colour words: 28%), and generated shapes
    sat wherever the noise put them.
    """

    def __init__(self, width: int = arch.TEXT_HIDDEN) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, len(values) + 1) for values in ATTRIBUTES.values())

    def loss(self, hidden: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
        pooled = hidden.mean(dim=1)
        return sum(F.cross_entropy(head(pooled), named[:, i]) for i, head in enumerate(self.heads)) / len(self.heads)


@torch.no_grad()
def encode_all_captions(text_encoder: nn.Module, captions: Captions, batch: int = 1024) -> torch.Tensor:
    """Hidden states [U, 77, 64] of every distinct caption, for phases where the text encoder is frozen."""
    parts = [text_encoder(captions.ids[i : i + batch]).last_hidden_state for i in range(0, len(captions.ids), batch)]
    return torch.cat(parts)


class CompactTokenEmbedding(nn.Module):
    """Stands in for the text encoder's 49,408-row token embedding while training.

    Only the rows of tokens that occur in the captions are parameters, so a step updates a few dozen rows instead
    of 3.2 M numbers; ``write_back`` puts them into the full table (all other rows keep their initial values).
    """

    def __init__(self, full: nn.Embedding, used: torch.Tensor) -> None:
        super().__init__()
        lookup = torch.zeros(full.num_embeddings, dtype=torch.long, device=full.weight.device)
        lookup[used] = torch.arange(len(used), device=full.weight.device)
        self.register_buffer("lookup", lookup, persistent=False)
        self.used = used
        self.full_table = (full,)  # a tuple, so the full table's 3.2 M weights are not parameters of this module
        self.weight = nn.Parameter(full.weight.detach()[used].clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.lookup[ids], self.weight)

    @torch.no_grad()
    def write_back(self) -> nn.Embedding:
        full = self.full_table[0]
        full.weight[self.used] = self.weight.detach()
        return full


# -------------------------------------------------------------------------------------------------------- phases


def train_vae(team: Team, images: torch.Tensor, styles: torch.Tensor, plan: Plan) -> nn.Module:
    """AutoencoderKL on pictures (and some outline-style pictures): L1 + MSE reconstruction + a tiny KL."""
    device = plan.device
    torch.manual_seed(plan.seed * 100 + 1)
    generator = torch.Generator(device=device).manual_seed(team.seed(plan.seed * 100 + 1))
    vae = arch.build_vae().to(device).train()
    start_with_small_posterior_std(vae)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=VAE_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(plan.vae_steps, 50))
    log = LossLog("vae", plan.vae_steps, quiet=not team.leader)
    batch = team.share(plan.vae_batch)
    n_style = int(batch * STYLE_FRACTION_IN_VAE)
    for step in range(1, plan.vae_steps + 1):
        a = torch.randint(0, len(images), (batch - n_style,), generator=generator, device=device)
        b = torch.randint(0, len(styles), (n_style,), generator=generator, device=device)
        x = torch.cat([to_unit_range(images[a]), to_unit_range(styles[b])]) * 2 - 1
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator, device=device)
        recon = vae.decode(z).sample
        loss = reconstruction_loss(recon, x) + VAE_KL_WEIGHT * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        team.average_gradients(vae.parameters())
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        log.add(step, loss)
    return vae.eval()


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE, with the shape's pixels weighted up.

    A shape covers a tenth of the picture or less, so an unweighted loss is mostly about the background: the
    decoder learns flat backgrounds first and the shapes' colours late, which a short run cannot afford.  The
    background colour is read from the top-left pixel, which no shape reaches.
    """
    background = x[:, :, :1, :1]
    foreground = ((x - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
    weight = 1 + VAE_FOREGROUND_WEIGHT * foreground
    error = (recon - x).abs() + (recon - x).square()
    return (error * weight).mean() / weight.mean()


@torch.no_grad()
def start_with_small_posterior_std(vae: nn.Module, log_var: float = -7.0) -> None:
    """Start the encoder's posterior std near 0.03 instead of 1.

    With the tiny KL weight the std would shrink anyway, but only slowly: until it does, the decoder sees latents
    drowned in sampling noise and learns blur.  Starting small removes that phase, which a short run cannot spare.
    """
    out = vae.quant_conv
    out.weight[LATENT_LOG_VAR].mul_(0.01)
    out.bias[LATENT_LOG_VAR].fill_(log_var)


LATENT_LOG_VAR = slice(arch.LATENT_CHANNELS, 2 * arch.LATENT_CHANNELS)  # quant_conv's channels: mean, then log var


@torch.no_grad()
def encode_all(vae: nn.Module, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every picture [N, 4, 8, 8] (unscaled)."""
    means, stds = [], []
    for begin in range(0, len(images), batch):
        posterior = vae.encode(to_unit_range(images[begin : begin + batch]) * 2 - 1).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def sample_latents(
    means: torch.Tensor, stds: torch.Tensor, index: torch.Tensor, scale: float, generator: torch.Generator
) -> torch.Tensor:
    m, s = means[index], stds[index]
    return (m + s * torch.randn(m.shape, generator=generator, device=m.device)) * scale


@dataclass
class Latents:
    means: torch.Tensor
    stds: torch.Tensor
    style_means: torch.Tensor
    style_stds: torch.Tensor
    scale: float


def train_text_to_image(team: Team, latents: Latents, captions: Captions, plan: Plan):
    """UNet and text encoder jointly; returns the UNet (EMA weights) and the text encoder.

    The text encoder trains for the first TEXT_ENCODER_TRAIN_FRACTION of the steps; then it is frozen and the
    hidden states of every distinct caption are computed once, which makes the remaining steps cheaper.
    """
    device = plan.device
    torch.manual_seed(plan.seed * 100 + 2)
    generator = torch.Generator(device=device).manual_seed(team.seed(plan.seed * 100 + 2))
    unet = arch.build_unet().to(device).train()
    text_encoder = arch.build_text_encoder().to(device).train()
    compact = CompactTokenEmbedding(text_encoder.get_input_embeddings(), torch.unique(captions.ids))
    text_encoder.set_input_embeddings(compact)
    heads = CaptionHeads().to(device)
    alphas = noise_schedule(device)
    params = list(unet.parameters()) + list(text_encoder.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=UNET_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(plan.unet_steps, 100))
    ema = EMA(unet.parameters(), decay=0.999 if plan.unet_steps > 5000 else 0.995)
    log = LossLog("unet+text", plan.unet_steps, quiet=not team.leader)
    freeze_at = max(1, int(plan.unet_steps * TEXT_ENCODER_TRAIN_FRACTION))
    cache: torch.Tensor | None = None
    count = len(latents.means)
    for step in range(1, plan.unet_steps + 1):
        if step == freeze_at + 1:
            text_encoder.set_input_embeddings(compact.write_back())
            freeze(text_encoder, heads)
            cache = encode_all_captions(text_encoder, captions)
            if team.leader:
                print(f"[unet+text] text encoder frozen after {freeze_at} steps", flush=True)
        index = torch.randint(0, count, (team.share(plan.unet_batch),), generator=generator, device=device)
        x0 = sample_latents(latents.means, latents.stds, index, latents.scale, generator)
        rows = captions.pick(index, CFG_DROPOUT, generator)
        noise = sample_noise(x0.shape, generator, device)
        t = torch.randint(0, len(alphas), (x0.shape[0],), generator=generator, device=device)
        hidden = cache[rows] if cache is not None else text_encoder(captions.ids[rows]).last_hidden_state
        pred = unet(add_noise(x0, noise, t, alphas), t, hidden).sample
        loss = diffusion_loss(pred, noise, t, alphas)
        if cache is None:
            loss = loss + CAPTION_HEAD_WEIGHT * heads.loss(hidden, captions.named[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        team.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        ema.update()
        log.add(step, loss)
    if cache is None:
        text_encoder.set_input_embeddings(compact.write_back())
    ema.copy_to_model()
    freeze(unet, text_encoder)
    return unet, text_encoder


def freeze(*modules: nn.Module) -> None:
    for module in modules:
        module.eval()
        module.requires_grad_(False)


def train_controlnet(team: Team, unet, text_hidden: torch.Tensor, latents: Latents, outlines: torch.Tensor,
                     captions: Captions, plan: Plan):
    """ControlNet on the outline pictures; the UNet and text encoder stay frozen (``text_hidden``: cached)."""
    device = plan.device
    torch.manual_seed(plan.seed * 100 + 3)
    generator = torch.Generator(device=device).manual_seed(team.seed(plan.seed * 100 + 3))
    freeze(unet)
    controlnet = arch.build_controlnet(unet).to(device).train()
    alphas = noise_schedule(device)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=CONTROLNET_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(plan.controlnet_steps, 100))
    log = LossLog("controlnet", plan.controlnet_steps, quiet=not team.leader)
    for step in range(1, plan.controlnet_steps + 1):
        index = torch.randint(0, len(latents.means), (team.share(plan.controlnet_batch),), generator=generator, device=device)
        x0 = sample_latents(latents.means, latents.stds, index, latents.scale, generator)
        rows = captions.pick(index, CONTROLNET_CAPTION_DROPOUT, generator, CONTROLNET_STRIP_POSITION)
        hidden = text_hidden[rows]
        noise = sample_noise(x0.shape, generator, device)
        t = torch.randint(0, len(alphas), (x0.shape[0],), generator=generator, device=device)
        noisy = add_noise(x0, noise, t, alphas)
        down, mid = controlnet(noisy, t, hidden, controlnet_cond=to_unit_range(outlines[index]), return_dict=False)
        pred = unet(noisy, t, hidden, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        loss = diffusion_loss(pred, noise, t, alphas)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        team.average_gradients(controlnet.parameters())
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        log.add(step, loss)
    return controlnet.eval()


def train_lora(team: Team, unet, text_hidden: torch.Tensor, latents: Latents, captions: Captions, plan: Plan):
    """LoRA adapters on the UNet's attention, trained on outline-style latents with the ordinary captions."""
    device = plan.device
    torch.manual_seed(plan.seed * 100 + 4)
    generator = torch.Generator(device=device).manual_seed(team.seed(plan.seed * 100 + 4))
    freeze(unet)
    adapters = inject_lora(unet)
    params = [p for a in adapters.values() for p in (a.down.weight, a.up.weight)]
    for p in params:
        p.requires_grad_(True)
    alphas = noise_schedule(device)
    optimizer = torch.optim.AdamW(params, lr=LORA_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(plan.lora_steps, 50))
    log = LossLog("lora", plan.lora_steps, quiet=not team.leader)
    for step in range(1, plan.lora_steps + 1):
        index = torch.randint(0, len(latents.style_means), (team.share(plan.lora_batch),), generator=generator, device=device)
        x0 = sample_latents(latents.style_means, latents.style_stds, index, latents.scale, generator)
        hidden = text_hidden[captions.pick(index, CFG_DROPOUT, generator)]
        noise = sample_noise(x0.shape, generator, device)
        t = torch.randint(0, len(alphas), (x0.shape[0],), generator=generator, device=device)
        pred = unet(add_noise(x0, noise, t, alphas), t, hidden).sample
        loss = diffusion_loss(pred, noise, t, alphas)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        team.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        log.add(step, loss)
    return adapters


# -------------------------------------------------------------------------------------------------------- saving


def save_pipeline_folder(folder: Path, vae, unet, text_encoder, info: dict) -> None:
    """The diffusers folder: model_index.json, unet/, vae/, text_encoder/, scheduler/, tokenizer/ (fp16 weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(arch.model_index(), indent=2) + "\n")
    unet.to("cpu", torch.float16).save_pretrained(folder / "unet", safe_serialization=True)
    vae.to("cpu", torch.float16).save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.to("cpu", torch.float16).save_pretrained(folder / "text_encoder", safe_serialization=True)
    # Weights are stored in fp16 to keep the repo small; a config dtype of float32 makes transformers' default
    # ("auto") loading upcast them, as diffusers does for the other parts.
    prefix_text_encoder_keys(folder / "text_encoder" / "model.safetensors")
    config_path = folder / "text_encoder" / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    arch.build_scheduler().save_pretrained(folder / "scheduler")
    shutil.copytree(arch.TOKENIZER_DIR, folder / "tokenizer", dirs_exist_ok=True)
    (folder / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")


def prefix_text_encoder_keys(path: Path) -> None:
    """Store the text encoder under the key names of real SD checkpoints ("text_model.embeddings..."), which
    every transformers version loads; transformers 5 saves them without the "text_model." prefix."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    renamed = {(k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in tensors.items()}
    save_file(renamed, str(path), metadata={"format": "pt"})


def replace_dir(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))


def save_all(out: Path, vae, unet, text_encoder, controlnet, adapters, classifier, info: dict) -> None:
    """Write everything to a temporary folder first, then move each part into place."""
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp_name:
        tmp = Path(tmp_name)
        save_pipeline_folder(tmp / arch.CHECKPOINT_SUBDIR, vae, unet, text_encoder, info)
        controlnet.to("cpu", torch.float16).save_pretrained(tmp / arch.CONTROLNET_SUBDIR, safe_serialization=True)
        save_lora(adapters, tmp / arch.LORA_FILE, {"ss_base_model": arch.CHECKPOINT_NAME, "seed": str(info["seed"])})
        save_classifier(classifier, tmp / arch.CLASSIFIER_FILE, {"seed": str(info["seed"])})
        for part in (arch.CHECKPOINT_SUBDIR, arch.CONTROLNET_SUBDIR, arch.LORA_FILE, arch.CLASSIFIER_FILE):
            replace_dir(tmp / part, out / part)


# ---------------------------------------------------------------------------------------------------- calibration


def _timed(fn: Callable[[], object], device: str) -> float:
    start = time.time()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.time() - start


def _three_digits(x: float) -> float:
    return float(f"{x:.3g}")


def calibrate(team: Team, device: str, base: Profile) -> Profile:
    """Measure each phase's seconds per step on this device, with ``base``'s batch sizes (for PROFILES).

    Each phase runs twice, with few and with more steps; the difference removes set-up costs.  The costs are
    rounded to three digits so that pasting the printed profile into PROFILES reproduces the same plan.
    """
    global LOG_EVERY_OVERRIDE
    LOG_EVERY_OVERRIDE = 10**9
    few, many = 5, 25
    dataset = generate_dataset(512, seed=0)
    images = torch.from_numpy(dataset.images).to(device)
    captions = tokenize_captions(dataset, arch.load_tokenizer(), device)
    plan = make_plan(1.0, device, 0)
    plan = Plan(**{**asdict(plan), "vae_batch": base.vae_batch, "unet_batch": base.unet_batch,
                   "controlnet_batch": base.controlnet_batch, "lora_batch": base.lora_batch,
                   "classifier_batch": base.classifier_batch})

    def cost(run_with: Callable[[Plan], object], field: str) -> float:
        short = _timed(lambda: run_with(Plan(**{**asdict(plan), field: few})), device)
        long = _timed(lambda: run_with(Plan(**{**asdict(plan), field: many})), device)
        return _three_digits(max(long - short, 1e-3) / (many - few))

    vae_cost = cost(lambda p: train_vae(team, images, images, p), "vae_steps")
    vae = arch.build_vae().to(device).eval()
    means, stds = encode_all(vae, images)
    latents = Latents(means, stds, means, stds, 1.0)
    unet_cost = cost(lambda p: train_text_to_image(team, latents, captions, p), "unet_steps")
    unet, text_encoder = arch.build_unet().to(device), arch.build_text_encoder().to(device)
    hidden = encode_all_captions(text_encoder, captions)
    controlnet_cost = cost(lambda p: train_controlnet(team, unet, hidden, latents, images, captions, p),
                           "controlnet_steps")

    def lora_run(p: Plan) -> None:
        from sdgraph.tiny.lora import remove_lora

        remove_lora(unet, train_lora(team, unet, hidden, latents, captions, p))

    lora_cost = cost(lora_run, "lora_steps")
    classifier_cost = cost(lambda p: train_classifier(dataset, p.classifier_steps, p.classifier_batch, device,
                                                      log_every=10**9, team=team), "classifier_steps")
    LOG_EVERY_OVERRIDE = None
    profile = Profile(**{**asdict(base), "vae_step_s": vae_cost, "unet_step_s": unet_cost,
                         "controlnet_step_s": controlnet_cost, "lora_step_s": lora_cost,
                         "classifier_step_s": classifier_cost})
    if team.leader:
        print(f"calibrated profile: {profile}", flush=True)
    return profile


# ---------------------------------------------------------------------------------------------------------- main


def run(plan: Plan, out: Path) -> dict:
    """Train everything on ``plan.workers`` processes; returns the training info that is saved with the model."""
    return run_team(plan.workers, train_all, plan, out)


def train_all(team: Team, plan: Plan, out: Path) -> dict:
    started = time.time()
    device = plan.device

    def say(message: str) -> None:
        if team.leader:
            print(f"{message} ({time.time() - started:.0f}s)", flush=True)

    say(f"plan: {json.dumps(asdict(plan))}")
    dataset = generate_dataset(plan.images, seed=plan.seed)
    say(f"rendered {len(dataset)} samples")
    images = torch.from_numpy(dataset.images).to(device)
    styles = torch.from_numpy(dataset.outline_styles).to(device)
    outlines = torch.from_numpy(dataset.outlines).to(device)
    captions = tokenize_captions(dataset, arch.load_tokenizer(), device)
    say(f"{len(captions.ids)} distinct captions")

    vae = train_vae(team, images, styles, plan)
    means, stds = encode_all(vae, images)
    style_means, style_stds = encode_all(vae, styles)
    scale = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scale)
    latents = Latents(means, stds, style_means, style_stds, scale)
    say(f"latents {tuple(means.shape)}, scaling factor {scale:.4f}")

    unet, text_encoder = train_text_to_image(team, latents, captions, plan)
    text_hidden = encode_all_captions(text_encoder, captions)
    controlnet = train_controlnet(team, unet, text_hidden, latents, outlines, captions, plan)
    adapters = train_lora(team, unet, text_hidden, latents, captions, plan)
    classifier = train_classifier(dataset, plan.classifier_steps, plan.classifier_batch, device, plan.seed, team=team)
    held_out = accuracy(classifier, held_out_dataset(seed=plan.seed), device)
    say(f"classifier held-out accuracy: {held_out}")

    from sdgraph.tiny.lora import remove_lora

    remove_lora(unet, adapters)
    info = {**asdict(plan), "scaling_factor": scale, "classifier_held_out_accuracy": held_out,
            "train_seconds": round(time.time() - started, 1), "command": TRAINED_WITH}
    if team.leader:
        save_all(out, vae, unet, text_encoder, controlnet, adapters, classifier, info)
        say(f"saved to {out}")
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the tiny sdgraph models from scratch.")
    parser.add_argument("--out", type=Path, default=arch.MODELS_DIR, help="models root (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=None,
                        help="time budget that sets the step counts (default: 57 on CPU, 7 on a GPU)")
    parser.add_argument("--images", type=int, default=None, help="dataset size (default: per device kind)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: results do not depend on the core count, and on a shared "
                             "machine one thread is much faster than two competing ones)")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure this device's seconds per step first and plan with them (not reproducible "
                             "across machines: paste the printed profile into PROFILES to make it the default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES[device_kind(args.device)]
    base = PROFILES[device_kind(args.device)]
    profile = run_team(base.workers, calibrate, args.device, base) if args.calibrate else None
    run(make_plan(minutes, args.device, args.seed, args.images, profile), args.out)


if __name__ == "__main__":
    main()
