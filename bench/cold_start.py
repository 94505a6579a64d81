"""Cold `sdgraph run workflows/txt2img.json` to the first picture, in fresh processes, phase by phase.

    python -m bench.cold_start [--repeats 5] [--base /work/wt/coldstart-base] [--no-sd15] [--lock /tmp/bigmem.lock]

Each run is a new Python process with a new base directory (nothing in the disk cache), timed on the wall clock
from the parent's spawn. The child runs `sdgraph.cli.main(["run", ...])`, exactly what `sdgraph run` runs, and
only wraps three of the engine's calls with clocks (building the executor, executing, each node's work) to split
the time into phases:

    python     interpreter start and site imports, up to the child's first line (CPU: the child's own)
    import     `import sdgraph.cli`
    registry   node registration and the plugin scan (`create_executor`)
    prepare    reading, validating and planning the workflow
    load       CheckpointLoaderSimple (its diffusers / transformers imports included)
    encode     the CLIPTextEncode nodes, first start to last end
    sample     KSampler
    decode     VAEDecode
    save       SaveImage
    picture    spawn to the saved picture (the figure that matters; CPU: the child's up to then)
    exit       after the picture until the process has ended; total: spawn to exit

Models: the tiny default model (the workflow as shipped), and an SD1.5-size single-file checkpoint: random fp16
weights (2.1 GB) in the original key layout, written to a temporary directory and deleted afterwards, run at
256x256 with 2 steps (as `bench.load` runs it). Its page cache is warmed first, so the process is cold, not the
disk. Each phase is given in wall seconds and in the process's CPU seconds (all threads), which a machine shared
with other work disturbs less. `--base DIR` times another checkout too (e.g. `git worktree add --detach DIR main`), the two alternating
run by run; the figures are medians.
"""
from __future__ import annotations

import json
import os
import sys
import time

if __name__ == "__main__" and "--child" in sys.argv:
    SPAWNED = float(sys.argv[sys.argv.index("--child") + 1])
    FIRST_LINE = time.time()
elif __name__ == "__main__" and not __package__:
    from pathlib import Path

    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

CHILD_MARK = "COLD_START "
PHASE_NODES = {"load": "CheckpointLoaderSimple", "encode": "CLIPTextEncode", "sample": "KSampler",
               "decode": "VAEDecode", "save": "SaveImage"}
PHASES = ["python", "import", "registry", "prepare", "load", "encode", "sample", "decode", "save", "picture",
          "exit", "total"]


# ---- the child: one `sdgraph run`, its phases from timing the executor's calls ---------------------------------


def child(spawned: float, first_line: float, argv: list[str]) -> None:
    marks = {"spawned": spawned, "first_line": first_line, "imported": 0.0, "registry": 0.0, "execute": 0.0}
    cpu = {"first_line": time.process_time()}  # the process's CPU seconds at the same marks
    events: list[tuple[float, float, str, float, float]] = []  # each node's work: start, end, node id, CPU both
    import sdgraph.cli as cli  # noqa: E402 (the import is the phase being timed)

    marks["imported"], cpu["imported"] = time.time(), time.process_time()
    from sdgraph.execute import Executor
    from sdgraph.run import PromptRun

    make_executor, execute, compute = cli.create_executor, Executor.execute, PromptRun._compute

    def timed_executor(*args, **kwargs):
        made = make_executor(*args, **kwargs)
        marks["registry"], cpu["registry"] = time.time(), time.process_time()
        return made

    def timed_execute(self, *args, **kwargs):
        marks["execute"], cpu["execute"] = time.time(), time.process_time()
        return execute(self, *args, **kwargs)

    def timed_compute(self, node, *args, **kwargs):
        began, cpu_began = time.time(), time.process_time()
        try:
            return compute(self, node, *args, **kwargs)
        finally:
            events.append((began, time.time(), str(node.node_id), cpu_began, time.process_time()))

    cli.create_executor, Executor.execute, PromptRun._compute = timed_executor, timed_execute, timed_compute
    code = cli.main(argv)
    classes = {k: v["class_type"] for k, v in json.loads(open(argv[1]).read()).items()}
    print(CHILD_MARK + json.dumps({"code": code, "marks": marks, "cpu": cpu, "events": events, "classes": classes}), flush=True)
    getattr(cli, "exit_process", sys.exit)(code)  # the command's own exit (an older checkout: a plain one)


def phases(report: dict, exited: float) -> dict[str, float]:
    """Seconds per phase from a child's report, wall clock and (`cpu_` + phase) the process's CPU time;
    `exited` is the parent's clock when the process ended."""
    m, c, classes = report["marks"], report["cpu"], report["classes"]
    out = {"python": m["first_line"] - m["spawned"], "import": m["imported"] - m["first_line"],
           "registry": m["registry"] - m["imported"], "prepare": m["execute"] - m["registry"],
           "cpu_python": c["first_line"], "cpu_import": c["imported"] - c["first_line"],
           "cpu_registry": c["registry"] - c["imported"], "cpu_prepare": c["execute"] - c["registry"]}
    for phase, cls in PHASE_NODES.items():
        spans = [e for e in report["events"] if classes.get(e[2]) == cls]
        out[phase] = max(e[1] for e in spans) - min(e[0] for e in spans) if spans else float("nan")
        out["cpu_" + phase] = max(e[4] for e in spans) - min(e[3] for e in spans) if spans else float("nan")
    saved = [e for e in report["events"] if classes.get(e[2]) == "SaveImage"]
    out["picture"] = min(e[1] for e in saved) - m["spawned"] if saved else float("nan")
    out["cpu_picture"] = min(e[4] for e in saved) if saved else float("nan")
    out["total"] = exited - m["spawned"]
    out["exit"] = out["total"] - out["picture"]
    return out


# ---- the SD1.5-size file --------------------------------------------------------------------------------------


def write_sd15_file(path: str) -> None:
    """Random fp16 weights of SD1.5's UNet, VAE and CLIP-L in the original single-file key layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdgraph.nodes.sd import ldm_names
    from sdgraph.nodes.sd.empty_init import empty_weights
    from tests.parity.checkpoints import SD15_CLIP, SD15_UNET, SD15_VAE

    generator = torch.Generator().manual_seed(0)
    with empty_weights():  # shapes only: the values are drawn below, straight into fp16
        unet, vae = UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD15_VAE)
        clip = CLIPTextModel(CLIPTextConfig(**SD15_CLIP))

    def drawn(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: _random_tensor(k, v, generator) for k, v in module.state_dict().items()}

    state = ldm_names.unet_to_ldm(drawn(unet), dict(unet.config))
    state.update(ldm_names.vae_to_ldm(drawn(vae), len(SD15_VAE["block_out_channels"])))
    state.update(ldm_names.clip_to_ldm(drawn(clip), "cond_stage_model.transformer."))
    save_file({k: v.contiguous() for k, v in state.items() if not k.endswith("position_ids")}, path)


def _random_tensor(name: str, like, generator):
    import torch

    if not like.is_floating_point():
        return like.clone()
    if like.dim() >= 2:  # scaled by fan-in, so activations keep their size through the layers
        fan_in = like[0].numel()
        return (torch.randn(like.shape, generator=generator) / fan_in ** 0.5).half()
    base = 1.0 if name.endswith("weight") else 0.0  # norm scales near 1, biases near 0
    return (base + 0.02 * torch.randn(like.shape, generator=generator)).half()


# ---- the parent -----------------------------------------------------------------------------------------------


def cold_run(checkout, extra: list[str], model_file=None, lock=None) -> dict[str, float]:
    """One fresh `sdgraph run` of `checkout`'s txt2img workflow in a new base directory; its phases."""
    import subprocess
    import tempfile
    from pathlib import Path

    from bench.load import locked

    with tempfile.TemporaryDirectory(prefix="bench-cold-start-",
                                     dir=model_file.parent if model_file else None) as scratch:
        base = Path(scratch)
        if model_file is not None:  # a hard link: a symlink out of models/checkpoints/ is refused by the path guard
            (base / "models" / "checkpoints").mkdir(parents=True)
            os.link(model_file, base / "models" / "checkpoints" / model_file.name)
        argv = ["run", "workflows/txt2img.json", "--cpu", "--quiet", "--base-dir", str(base), *extra]
        env = dict(os.environ, PYTHONPATH=str(checkout))
        with locked(lock):
            spawned = time.time()
            done = subprocess.run([sys.executable, __file__, "--child", repr(spawned), *argv], cwd=checkout, env=env,
                                  capture_output=True, text=True, timeout=900)
            exited = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"sdgraph run in {checkout} failed:\n{done.stderr[-3000:]}")
        if not list((base / "output").glob("txt2img*.png")):
            raise RuntimeError(f"sdgraph run in {checkout} saved no picture")
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith(CHILD_MARK))
    return phases(json.loads(line[len(CHILD_MARK):]), exited)


def median_phases(rows: list[dict[str, float]]) -> dict[str, float]:
    import statistics

    return {p: statistics.median(r[p] for r in rows) for p in rows[0]}


def print_table(model: str, figures: dict[str, dict[str, float]], runs: int) -> None:
    """Wall seconds and CPU seconds per phase, a column pair per checkout; with two, their ratios."""
    names = list(figures)
    print(f"\n{model} (median of {runs} fresh processes; wall s / CPU s)")
    ratio = len(names) == 2
    print("| phase | " + " | ".join(names) + (f" | {names[0]} / {names[1]} |" if ratio else " |"))
    print("|---" * (len(names) + 1 + ratio) + "|")
    for p in PHASES:
        cells = [f"{figures[n][p]:.2f} / {figures[n].get('cpu_' + p, float('nan')):.2f}" for n in names]
        if ratio:
            a, b = figures[names[0]], figures[names[1]]
            cells.append(f"{_ratio(a[p], b[p])} / {_ratio(a.get('cpu_' + p), b.get('cpu_' + p))}")
        print(f"| {p} | " + " | ".join(cells) + " |")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b and b == b and a == a else "-"


def main() -> None:
    import argparse
    import subprocess
    import tempfile
    from pathlib import Path

    from bench.load import SD15_RUN, warm_page_cache

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", type=Path, help="another checkout to time side by side (e.g. main)")
    parser.add_argument("--no-sd15", action="store_true", help="only the tiny default model")
    parser.add_argument("--no-tiny", action="store_true", help="only the SD1.5-size file")
    parser.add_argument("--lock", type=Path, help="flock this file around every SD1.5-size run")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the SD1.5-size file is written (2.1 GB, deleted afterwards)")
    args = parser.parse_args()
    checkouts = {"this": root} | ({"base": args.base.resolve()} if args.base else {})
    models: list[tuple[str, list[str], Path | None]] = [] if args.no_tiny else [("tiny default model", [], None)]
    with tempfile.TemporaryDirectory(prefix="bench-cold-sd15-", dir=args.scratch) as scratch:
        if not args.no_sd15:
            sd15 = Path(scratch) / "sd15-random-fp16.safetensors"
            subprocess.run([sys.executable, "-m", "bench.cold_start", "--write-sd15", str(sd15)], cwd=root, check=True)
            warm_page_cache(sd15)
            models.append((f"SD1.5-size file, {sd15.stat().st_size / 1e9:.2f} GB fp16, 256x256, 2 steps",
                           ["--set", f"checkpoint.ckpt_name={sd15.name}", *SD15_RUN], sd15))
        results: dict = {}
        for model, extra, file in models:
            rows: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
            for _ in range(args.repeats):
                for name, checkout in checkouts.items():
                    rows[name].append(cold_run(checkout, extra, file, args.lock if file else None))
                    print(f"{model} / {name}: picture {rows[name][-1]['picture']:.2f} s", file=sys.stderr, flush=True)
            results[model] = {name: median_phases(r) for name, r in rows.items()}
            print_table(model, results[model], args.repeats)
    print("\n" + json.dumps(results))


if __name__ == "__main__" and "--child" in sys.argv:
    at = sys.argv.index("--child")
    child(SPAWNED, FIRST_LINE, sys.argv[at + 2:])
elif __name__ == "__main__" and "--write-sd15" in sys.argv:
    write_sd15_file(sys.argv[sys.argv.index("--write-sd15") + 1])
elif __name__ == "__main__":
    main()
