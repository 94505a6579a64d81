"""Checkpoint loading, sdgraph against ComfyUI on the same file, and cold `sdgraph run` to the first picture.

    python -m bench.load --comfyui /tmp/comfyui [--lock /tmp/bigmem.lock] [--repeats 3] [--files F ...]

Files (default): the SD1.5-architecture random-weight checkpoint of `tests/parity/checkpoints.py` (fp32, 4.3 GB;
it must exist: `python -m tests.parity.checkpoints`) and its fp16 copy (2.1 GB, like a released SD1.5 file),
written beside it on first use. Every load is timed in a fresh subprocess, so the process is cold while the page
cache is warm (each file is read once before timing): sdgraph's `load_checkpoint` on a CPU `ModelManager`, and,
with `--comfyui DIR`, ComfyUI's `comfy.sd.load_checkpoint_guess_config` (started with `--cpu`). The figure is the
median of the repeats, the two engines alternating; imports (torch, diffusers / comfy) are timed apart.
Then cold runs: the whole `sdgraph run` process for `workflows/txt2img.json` on the tiny default model, and for
the same workflow on the fp16 file at 256x256 with 2 steps (`--no-runs` skips them). With `--lock FILE` each
child that holds an SD1.5-size model runs under an exclusive flock of FILE.

Measured on the 2-core dev machine (README, Benchmarks): fp32 file 1.38 s against ComfyUI's 1.22 s (1.13x; 6.06 s
before loading without random init), fp16 file 1.23 s against 1.09 s (1.13x; 5.64 s before).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

if __name__ == "__main__" and not __package__:
    # Run as a file, sys.path[0] is bench/ and `import sdgraph` could find another checkout's install: rerun as a
    # module of this checkout, whose root `python -m` puts first on sys.path.
    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

ROOT = Path(__file__).resolve().parents[1]
SD15_RUN = ["--set", "latent.width=256", "--set", "latent.height=256", "--set", "sampler.steps=2"]


# ---- the files ----------------------------------------------------------------------------------------------


def fp16_copy(source: Path) -> Path:
    """`<source>-fp16.safetensors` beside the source: every floating-point tensor as float16, built once."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = source.with_name(source.stem + "-fp16.safetensors")
    if not target.exists():
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            tensors = {k: _half(handle.get_tensor(k)) for k in handle.keys()}
        partial = target.with_suffix(".partial")
        save_file(tensors, str(partial))
        partial.replace(target)
    return target


def _half(tensor: Any) -> Any:
    import torch

    return tensor.to(torch.float16) if tensor.is_floating_point() else tensor.clone()


def warm_page_cache(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(64 << 20):
            pass


# ---- children: one load in a fresh process --------------------------------------------------------------


def child_sdgraph(path: Path) -> dict[str, float]:
    start = time.perf_counter()
    # what the loader imports on first use, timed apart from the load as ComfyUI's `import comfy.sd` is
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from diffusers.loaders import single_file_utils  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    from sdgraph.models import ModelManager
    from sdgraph.nodes.sd.loading import load_checkpoint

    loaded, cpu = time.perf_counter(), time.process_time()
    model, clip, vae = load_checkpoint(path, ModelManager(force_cpu=True))
    return _figures(start, loaded, cpu)


def child_comfyui(path: Path, comfyui: Path) -> dict[str, float]:
    start = time.perf_counter()
    from tools.comfy_reference.make_references import write_torchvision_stand_in

    scratch = Path(tempfile.mkdtemp(prefix="bench-load-comfy-"))
    write_torchvision_stand_in(scratch)
    start_comfyui(comfyui, scratch)
    import comfy.sd

    loaded, cpu = time.perf_counter(), time.process_time()
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return _figures(start, loaded, cpu)


def start_comfyui(comfyui: Path, stand_in: Path, *flags: str) -> None:
    """Make the ComfyUI checkout importable in this process, started as `--cpu` plus `flags`; `stand_in` holds
    the torchvision stand-in of `tools/comfy_reference/make_references.py`."""
    sys.path[:0] = [str(stand_in), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu", *flags]
    import comfy.options

    comfy.options.enable_args_parsing()


def _figures(start: float, loaded: float, cpu: float) -> dict[str, float]:
    """Import seconds, load seconds (wall and process CPU) and peak resident memory of this child."""
    return {"import_s": loaded - start, "load_s": time.perf_counter() - loaded, "load_cpu_s": time.process_time() - cpu,
            "peak_rss_gb": _peak_rss_gb()}


def _peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb / 2**20


# ---- the parent ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(lock: Path | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_child(engine: str, path: Path, comfyui: Path | None, lock: Path | None) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.load", "--child", engine, "--files", str(path)]
    if comfyui is not None:
        command += ["--comfyui", str(comfyui)]
    with locked(lock):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} child failed on {path.name}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_loads(path: Path, comfyui: Path | None, repeats: int, lock: Path | None) -> dict[str, Any]:
    warm_page_cache(path)
    engines = ["sdgraph"] + (["comfyui"] if comfyui else [])
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    for _ in range(repeats):
        for engine in engines:
            runs[engine].append(run_child(engine, path, comfyui, lock))
    result: dict[str, Any] = {"file": path.name, "gb": path.stat().st_size / 1e9}
    for engine, rows in runs.items():
        result[engine] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        result[engine]["load_all"] = [round(r["load_s"], 2) for r in rows]
    if comfyui:
        result["ratio"] = result["sdgraph"]["load_s"] / result["comfyui"]["load_s"]
        result["cpu_ratio"] = result["sdgraph"]["load_cpu_s"] / result["comfyui"]["load_cpu_s"]
    return result


def cold_run(extra: list[str], base: Path | None, lock: Path | None) -> float:
    """Wall seconds of a whole `sdgraph run workflows/txt2img.json` process, start to exit (picture saved)."""
    with tempfile.TemporaryDirectory(prefix="bench-load-run-") as scratch:
        base = base or Path(scratch)
        command = [sys.executable, "-m", "sdgraph", "run", "workflows/txt2img.json", "--cpu", "--quiet",
                   "--base-dir", str(base), *extra]
        with locked(lock):
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"sdgraph run failed:\n{done.stderr[-3000:]}")
        if not list((base / "output").glob("txt2img*.png")):
            raise RuntimeError(f"sdgraph run saved no picture under {base / 'output'}")
    return seconds


def cold_runs(sd15: Path | None, repeats: int, lock: Path | None) -> dict[str, float]:
    out = {"tiny": statistics.median(cold_run([], None, None) for _ in range(repeats))}
    if sd15 is not None:
        # a hard link beside the file: a symlink out of models/checkpoints/ is refused by the path guard
        with tempfile.TemporaryDirectory(prefix="bench-load-home-", dir=sd15.parent) as home:
            (Path(home) / "models" / "checkpoints").mkdir(parents=True)
            os.link(sd15, Path(home) / "models" / "checkpoints" / sd15.name)
            args = ["--set", f"checkpoint.ckpt_name={sd15.name}", *SD15_RUN]
            out[sd15.name] = statistics.median(cold_run(args, Path(home), lock) for _ in range(repeats))
    return out


def default_files() -> list[Path]:
    from tests.parity import checkpoints

    fp32 = checkpoints.cache_dir() / f"parity-sd15-s0-v{checkpoints.VERSION}.safetensors"
    if not fp32.exists():
        sys.exit(f"{fp32} is missing: build it with `python -m tests.parity.checkpoints`")
    return [fp32, fp16_copy(fp32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", nargs="*", type=Path, help="single-file checkpoints (default: see above)")
    parser.add_argument("--comfyui", type=Path, help="a ComfyUI checkout to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lock", type=Path, help="flock this file around every SD1.5-size child")
    parser.add_argument("--no-runs", action="store_true", help="skip the cold `sdgraph run` timings")
    parser.add_argument("--child", choices=["sdgraph", "comfyui"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path = args.files[0]
        row = child_sdgraph(path) if args.child == "sdgraph" else child_comfyui(path, args.comfyui.resolve())
        print(json.dumps(row))
        return
    files = [f.resolve() for f in args.files] if args.files else default_files()
    comfyui = args.comfyui.resolve() if args.comfyui else None
    for path in files:
        print(json.dumps(compare_loads(path, comfyui, args.repeats, args.lock)), flush=True)
    if not args.no_runs:
        sd15 = next((f for f in files if "fp16" in f.name), files[-1] if args.files else None)
        print(json.dumps({"cold_run_s": cold_runs(sd15, args.repeats, args.lock)}), flush=True)


if __name__ == "__main__":
    main()
