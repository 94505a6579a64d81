"""Fixtures for the SD node tests: tiny random models saved in real file layouts, contexts, a node caller."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from sdgraph.context import InterruptFlag, NodeContext, Services  # noqa: E402
from sdgraph.models import ModelManager  # noqa: E402
from sdgraph.node import NodeOutput  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402

logging.getLogger("diffusers").setLevel(logging.ERROR)
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every tiny model written under `<root>/models`; returns {"root": Path, "sd1": TinyParts, ...}."""
    from tiny_models import build_model_tree

    root = tmp_path_factory.mktemp("sdgraph_home")
    originals = build_model_tree(root)
    for sub in ("input", "output", "temp"):
        (root / sub).mkdir()
    return {"root": root, **originals}


@pytest.fixture(scope="session")
def dirs(tiny_tree: dict[str, Any]) -> Dirs:
    return Dirs(base=tiny_tree["root"], extra_model_roots=[])


@pytest.fixture(scope="session")
def manager() -> ModelManager:
    """One CPU manager shared by the tests that do not count disk loads or moves."""
    return ModelManager(force_cpu=True)


def make_ctx(dirs: Dirs, manager: ModelManager | None, **extra: Any) -> NodeContext:
    return NodeContext(node_id="1", prompt_id="test", services=Services(dirs=dirs, models=manager),
                       interrupt=InterruptFlag(), **extra)


@pytest.fixture
def ctx(dirs: Dirs, manager: ModelManager) -> NodeContext:
    return make_ctx(dirs, manager)


def call(node_cls: type, ctx: NodeContext, **inputs: Any) -> Any:
    """Run a native node directly: its outputs tuple, or the NodeOutput for output nodes."""
    node = node_cls()
    node.ctx = ctx
    out = node.run(**inputs)
    return out if isinstance(out, NodeOutput) else tuple(out)


@pytest.fixture(scope="session")
def sd1(dirs: Dirs, manager: ModelManager) -> tuple[Any, Any, Any]:
    from sdgraph.nodes.sd.loading import load_checkpoint

    return load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), manager)


@pytest.fixture(scope="session")
def sdxl(dirs: Dirs, manager: ModelManager) -> tuple[Any, Any, Any]:
    from sdgraph.nodes.sd.loading import load_checkpoint

    return load_checkpoint(dirs.find_model("checkpoints", "sdxl-tiny.safetensors"), manager)


def unet_out(model: Any, seed: int = 0, cond: Any = None) -> Any:
    """One UNet evaluation of a fixed input (float32), for comparing patched / unpatched models."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx_dim = model.slot.module.config.cross_attention_dim
    cond = torch.randn(1, 77, ctx_dim, generator=g) if cond is None else cond
    with torch.inference_mode():
        return model.unet()(x, torch.tensor([500]), encoder_hidden_states=cond).sample.clone()
