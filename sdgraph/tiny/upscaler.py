"""The tiny 2x upscale model: a Real-ESRGAN Compact network trained here on the synthetic shapes.

Pairs are the 64x64 pictures of ``shapes`` and the same pictures box-averaged to 32x32; the network learns to
undo that (L1 loss), so on the tiny model's 64x64 pictures it gives 128x128 ones. Trained as committed (400
steps) it restores a halved picture to within about 1.5 of 255 on average, no better than bicubic or nearest
resizing on these flat shapes (tests/workflows/test_gallery.py measures it): it stands for a real upscaler in the
gallery, it does not beat one. It is saved in the Compact key layout (``body.N``) that ComfyUI and sdgraph load, fp16 like the other
committed models, to ``data/models/upscale_models/sdgraph-tiny-2x.safetensors``:

    python -m sdgraph.tiny.upscaler            # a few minutes on a 2-core CPU
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sdgraph.nodes.sd.upscale_arch import Compact
from sdgraph.tiny.architecture import MODELS_DIR
from sdgraph.tiny.shapes import generate_dataset

UPSCALER_FILE = Path("upscale_models") / "sdgraph-tiny-2x.safetensors"
FEATURES, CONVS, SCALE = 16, 4, 2


def training_pairs(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(low [N,3,32,32], high [N,3,64,64]) in 0..1: the shapes pictures and their 2x2 box averages."""
    high = torch.from_numpy(generate_dataset(count, seed=seed).images).movedim(-1, 1).float() / 255.0
    return F.avg_pool2d(high, SCALE), high


def train(steps: int, batch: int, images: int, seed: int) -> tuple[Compact, float]:
    torch.manual_seed(seed)
    low, high = training_pairs(images, seed)
    net = Compact(3, 3, FEATURES, CONVS, SCALE)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-4)
    generator = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(low), (batch,), generator=generator)
        loss = F.l1_loss(net(low[index]), high[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            print(f"step {step}/{steps}: L1 {loss.item():.4f}", flush=True)
    return net.eval(), float(loss.item())


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the tiny 2x upscale model.")
    parser.add_argument("--out", type=Path, default=MODELS_DIR / UPSCALER_FILE)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.time()
    net, last_loss = train(args.steps, args.batch, args.images, args.seed)
    state = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    info = {"steps": args.steps, "batch": args.batch, "images": args.images, "seed": args.seed,
            "final_l1": round(last_loss, 5), "seconds": round(time.time() - started, 1),
            "command": "python -m sdgraph.tiny.upscaler"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out), metadata={"sdgraph_train_info": json.dumps(info)})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB): {info}")


if __name__ == "__main__":
    main()
