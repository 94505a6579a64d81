"""A checkout runs its own code: with several checkouts on one machine (one of them installed in editable mode,
as this one usually is), `python -c`, `python -m sdgraph` and the built-in packs loaded through the entry points
all use the checkout they run in. And any combination of test directories collects."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARK = "Denoise a latent (checkout copy)."


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another checkout of the project: its sdgraph and nodes, with KSampler's description changed."""
    checkout = tmp_path_factory.mktemp("other") / "checkout"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("sdgraph", "nodes"):
        shutil.copytree(ROOT / name, checkout / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy2(ROOT / name, checkout / name)
    sampling = checkout / "nodes" / "sd" / "sampling.py"
    text = sampling.read_text()
    assert text.count('"""Denoise a latent:') == 1
    sampling.write_text(text.replace('"""Denoise a latent:', f'"""{MARK} Denoise a latent:'))
    return checkout


def python(cwd: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


PROBE = """
import json, sys
import sdgraph, sdgraph.nodes
from sdgraph.plugins import build_registry
build_registry(plugins=False)  # the built-in packs, through the entry points of the installed distribution
packs = sorted({m.__file__ for n, m in sys.modules.items() if n.startswith("sdgraph.nodes.")})
print(json.dumps({"sdgraph": sdgraph.__file__, "nodes": sdgraph.nodes.__file__, "packs": packs}))
"""


def test_the_engine_and_the_node_packs_come_from_the_checkout_that_runs(copy: Path) -> None:
    found = json.loads(python(copy, "-c", PROBE))
    files = [found["sdgraph"], found["nodes"], *found["packs"]]
    assert any(f.endswith("sampling.py") for f in found["packs"])
    outside = [f for f in files if not Path(f).resolve().is_relative_to(copy.resolve())]
    assert not outside, f"loaded from another checkout: {outside}"


def test_python_m_sdgraph_runs_the_checkouts_own_nodes(copy: Path) -> None:
    described = json.loads(python(copy, "-m", "sdgraph", "nodes", "KSampler"))
    assert described["description"].startswith(MARK)
    here = json.loads(python(ROOT, "-m", "sdgraph", "nodes", "KSampler"))
    assert not here["description"].startswith(MARK)


@pytest.mark.parametrize("dirs", [["tests/sd", "tests/browser"], ["tests/browser", "tests/sd", "tests/engine"]])
def test_any_combination_of_test_directories_collects(dirs: list[str]) -> None:
    out = python(ROOT, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *dirs)
    assert "error" not in out.lower().splitlines()[-1], out[-2000:]


PATCHES = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=|sys\.modules\[[^\]]+\]\s*=")


def test_no_test_or_bench_patches_the_import_path_to_find_the_project() -> None:
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/*.py")]
    here = Path(__file__).resolve()
    found = [f"{path.relative_to(ROOT)}:{n}" for path in files if path.resolve() != here
             for n, line in enumerate(path.read_text().splitlines(), 1) if PATCHES.search(line)]
    assert len(files) > 20 and not found, found
