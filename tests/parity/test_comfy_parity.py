"""sdgraph against ComfyUI's reference images (tests/parity/data, made by tools/comfy_reference).

Each case runs through sdgraph's executor on the same random-weight SD1.5-architecture file the references
were made with; the decoded float image must match within 1e-4. Cases with a known cause of difference are
strict xfails, so a fix that makes one match shows up as a failure until its marker goes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tests.parity import cases as parity_cases  # noqa: E402 - after the skips: they need torch
from tests.parity import checkpoints  # noqa: E402

from sdgraph.context import Services  # noqa: E402
from sdgraph.execute import Executor  # noqa: E402
from sdgraph.models import ModelManager  # noqa: E402
from sdgraph.node import Input, Node, NodeOutput  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402
from sdgraph.plugins import build_registry  # noqa: E402
from sdgraph.types import IMAGE, LATENT  # noqa: E402

DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-4
META = json.loads((DATA / "references.json").read_text())

# Measured at sdgraph ba36a92 (after the sampler-numerics commit d760f73): every case is off by 1.7e-4..3.2e-4,
# the same order for all samplers, so it is one shared cause upstream or downstream of the sampler.
_RESIDUAL = ("a residual difference of ~2e-4 shared by every case (not the sampler: euler, ancestral, dpmpp_2m, "
             "batch and img2img alike); cause not yet isolated among text encoder, UNet and VAE numerics")
KNOWN: dict[str, str] = {name: _RESIDUAL for name in (
    "euler_normal", "euler_ancestral_normal", "dpmpp_2m_karras", "batch2_euler_normal", "img2img_euler_normal_d06")}

pytestmark = pytest.mark.slow


class ParityCapture(Node):
    """Keeps the images it is given, for the test to read."""

    category = "testing"
    output_node = True
    inputs = [Input("images", IMAGE)]
    outputs = []
    seen: dict[str, Any] = {}

    def run(self, images: Any) -> NodeOutput:
        ParityCapture.seen[self.ctx.prompt_id] = images.detach().float().cpu().numpy()
        return NodeOutput(ui={})


class ParityCaptureLatent(Node):
    """Keeps the latent it is given (its `samples`), for the test to read."""

    category = "testing"
    output_node = True
    inputs = [Input("samples", LATENT)]
    outputs = []
    seen: dict[str, Any] = {}

    def run(self, samples: Any) -> NodeOutput:
        ParityCaptureLatent.seen[self.ctx.prompt_id] = samples["samples"].detach().float().cpu().numpy()
        return NodeOutput(ui={})


@pytest.fixture(scope="module")
def sdgraph_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Every case's decoded image from sdgraph, run in one executor so the checkpoint loads once."""
    from PIL import Image

    torch.set_num_threads(2)
    ckpt = checkpoints.sd15_checkpoint(META["checkpoint_seed"])
    assert ckpt.name == META["checkpoint"], "references were made from another checkpoint version"
    base = tmp_path_factory.mktemp("parity_home")
    (base / "models" / "checkpoints").mkdir(parents=True)
    link = base / "models" / "checkpoints" / ckpt.name
    try:  # a hard link: sdgraph refuses symlinks that lead outside checkpoints/
        os.link(ckpt, link)
    except OSError:
        shutil.copyfile(ckpt, link)
    for sub in ("input", "output", "temp"):
        (base / sub).mkdir()
    Image.fromarray(parity_cases.input_image()).save(base / "input" / parity_cases.INPUT_IMAGE)

    registry = build_registry(plugins=False)
    registry.add_native([ParityCapture, ParityCaptureLatent], "parity-tests")
    executor = Executor(registry, Services(dirs=Dirs(base=base, extra_model_roots=[]),
                                           models=ModelManager(force_cpu=True)))
    images = {}
    for name in parity_cases.CASES:
        prompt = parity_cases.prompt(name, ckpt.name)
        prompt["99"] = {"class_type": "ParityCapture", "inputs": {"images": [parity_cases.DECODE_NODE, 0]}}
        prompt["98"] = {"class_type": "ParityCaptureLatent", "inputs": {"samples": [parity_cases.SAMPLER_NODE, 0]}}
        result = executor.run(prompt, prompt_id=name)
        assert result.ok, (name, result.error)
        images[name] = ParityCapture.seen.pop(name)
        images[name + ":latent"] = ParityCaptureLatent.seen.pop(name)
    yield images
    executor.cache.clear()


def _params() -> list:
    return [pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=KNOWN[name])] if name in KNOWN else [])
            for name in parity_cases.CASES if name in META["cases"]]


@pytest.mark.parametrize("name", _params())
def test_decoded_image_matches_comfyui(name: str, sdgraph_images: dict[str, np.ndarray]) -> None:
    stored = np.load(DATA / f"{name}.npz")
    reference, ours = stored["image"], sdgraph_images[name]
    assert ours.shape == reference.shape
    diff = float(np.abs(ours.astype(np.float64) - reference).max())
    print(f"{name}: max |sdgraph - ComfyUI| = {diff:.3g}")
    # Where a difference starts: reported, not asserted. The raw figure also reflects the LATENT convention
    # (ComfyUI's samples are unscaled; sdgraph's were pre-scaled by the VAE factor at ba36a92).
    if "latent" in stored.files:
        print(f"{name}: sampled latent, max |sdgraph - ComfyUI| = "
              f"{float(np.abs(sdgraph_images[name + ':latent'] - stored['latent']).max()):.3g}")
    assert diff <= TOLERANCE, f"{name}: max abs difference {diff:.3g} > {TOLERANCE}"


def test_every_case_has_a_reference() -> None:
    assert set(META["cases"]) == set(parity_cases.CASES)
