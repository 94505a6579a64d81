"""Cold `sdgraph run workflows/txt2img.json` to the first picture, in fresh processes, phase by phase.

    python -m bench.cold_start [--repeats 5] [--base /work/wt/coldstart-base] [--comfyui /tmp/comfyui] [--no-sd15]
                               [--no-tiny] [--lock /tmp/bigmem.lock]

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

`--comfyui DIR` times a cold ComfyUI run of the same workflow on the SD1.5-size file too (a checkout prepared as
tools/comfy_reference/README.md says; the tiny default model is a diffusers folder ComfyUI cannot load, so it is
compared on that file only). Its child puts the checkout on sys.path (with the torchvision stand-in, written by the
parent), starts it as `--cpu --base-directory BASE` (models/checkpoints/ holds the file, output/ the picture) and
calls ComfyUI's own node classes from its `nodes` module in the workflow's order under inference mode, as its
executor does; the workflow is the one sdgraph runs, its `--set` overrides applied beforehand by the parent with
sdgraph's own code. Its `import` is `import nodes` (which imports `comfy.sd` and registers the built-in nodes, so
its `registry` is 0); the server, its prompt validation and the comfy_extras / custom-node scan are not run.
Compare import + registry + load as one: sdgraph imports diffusers and transformers in its load.
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


# ---- the children: one `sdgraph run` (its phases from timing the executor's calls), or one ComfyUI run --------


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
    print_report(code, marks, cpu, events, json.loads(open(argv[1]).read()))
    getattr(cli, "exit_process", sys.exit)(code)  # the command's own exit (an older checkout: a plain one)


def child_comfyui(spawned: float, first_line: float, comfyui: str, stand_in: str, base: str, workflow: str) -> None:
    marks = {"spawned": spawned, "first_line": first_line}
    cpu = {"first_line": time.process_time()}
    from pathlib import Path

    from bench.load import start_comfyui

    start_comfyui(Path(comfyui), Path(stand_in), "--base-directory", base)
    import nodes  # noqa: E402 (the import is the phase being timed)

    marks["imported"] = marks["registry"] = time.time()
    cpu["imported"] = cpu["registry"] = time.process_time()
    import torch

    prompt = json.loads(Path(workflow).read_text())
    marks["execute"], cpu["execute"] = time.time(), time.process_time()
    events, outputs = [], {}
    with torch.inference_mode():
        for node_id, spec in prompt.items():  # the file lists each node after its inputs
            cls = nodes.NODE_CLASS_MAPPINGS[spec["class_type"]]
            kwargs = {k: outputs[v[0]][v[1]] if isinstance(v, list) else v for k, v in spec["inputs"].items()}
            if "prompt" in cls.INPUT_TYPES().get("hidden", {}):
                kwargs["prompt"] = prompt  # SaveImage embeds it in the picture, as sdgraph's does
            began, cpu_began = time.time(), time.process_time()
            outputs[node_id] = getattr(cls(), cls.FUNCTION)(**kwargs)
            events.append((began, time.time(), node_id, cpu_began, time.process_time()))
    print_report(0, marks, cpu, events, prompt)


def print_report(code: int, marks: dict, cpu: dict, events: list, prompt: dict) -> None:
    classes = {k: v["class_type"] for k, v in prompt.items()}
    print(CHILD_MARK + json.dumps({"code": code, "marks": marks, "cpu": cpu, "events": events, "classes": classes}),
          flush=True)


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


def cold_run(checkout, extra: list[str], model_file=None, lock=None, comfyui=None) -> dict[str, float]:
    """One fresh `sdgraph run` of `checkout`'s txt2img workflow in a new base directory, or with `comfyui` (a
    ComfyUI checkout) that workflow run by ComfyUI; its phases."""
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
        if comfyui is not None:
            argv = ["comfyui", str(comfyui), *comfyui_inputs(checkout, base, extra)]
        env = dict(os.environ, PYTHONPATH=str(checkout))
        with locked(lock):
            spawned = time.time()
            done = subprocess.run([sys.executable, __file__, "--child", repr(spawned), *argv], cwd=checkout, env=env,
                                  capture_output=True, text=True, timeout=900)
            exited = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} in {checkout} failed:\n{done.stderr[-3000:]}")
        if not list((base / "output").glob("txt2img*.png")):
            raise RuntimeError(f"{argv[0]} in {checkout} saved no picture")
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith(CHILD_MARK))
    return phases(json.loads(line[len(CHILD_MARK):]), exited)


def comfyui_inputs(checkout, base, extra: list[str]) -> list[str]:
    """The ComfyUI child's torchvision stand-in and workflow (the `--set` overrides applied), written into `base`."""
    from sdgraph.overrides import apply_override
    from sdgraph.workflow import load_workflow
    from tools.comfy_reference.make_references import write_torchvision_stand_in

    workflow = load_workflow(checkout / "workflows" / "txt2img.json")
    for text in extra[1::2]:  # extra is ["--set", override, ...]
        apply_override(workflow, text)
    (base / "workflow.json").write_text(json.dumps(workflow.to_api()))
    write_torchvision_stand_in(base / "stand-in")
    return [str(base / "stand-in"), str(base), str(base / "workflow.json")]


def median_phases(rows: list[dict[str, float]]) -> dict[str, float]:
    import statistics

    return {p: statistics.median(r[p] for r in rows) for p in rows[0]}


def print_table(model: str, figures: dict[str, dict[str, float]], runs: int) -> None:
    """Wall seconds and CPU seconds per phase, a column pair per engine; the first's ratios to each other."""
    first, *others = list(figures)
    print(f"\n{model} (median of {runs} fresh processes; wall s / CPU s)")
    print("| phase | " + " | ".join(figures) + "".join(f" | {first} / {n}" for n in others) + " |")
    print("|---" * (len(figures) + 1 + len(others)) + "|")
    for p in PHASES:
        cells = [f"{row[p]:.2f} / {row.get('cpu_' + p, float('nan')):.2f}" for row in figures.values()]
        a = figures[first]
        for b in (figures[n] for n in others):
            cells.append(f"{_ratio(a[p], b[p])} / {_ratio(a.get('cpu_' + p), b.get('cpu_' + p))}")
        print(f"| {p} | " + " | ".join(cells) + " |")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b and b == b and a == a else "-"


def main() -> None:
    import argparse
    import subprocess
    import tempfile
    from functools import partial
    from pathlib import Path

    from bench.load import SD15_RUN, warm_page_cache

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", type=Path, help="another checkout to time side by side (e.g. main)")
    parser.add_argument("--comfyui", type=Path, help="a ComfyUI checkout to time on the SD1.5-size file too")
    parser.add_argument("--no-sd15", action="store_true", help="only the tiny default model")
    parser.add_argument("--no-tiny", action="store_true", help="only the SD1.5-size file")
    parser.add_argument("--lock", type=Path, help="flock this file around every SD1.5-size run")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the SD1.5-size file is written (2.1 GB, deleted afterwards)")
    args = parser.parse_args()
    if args.comfyui and args.no_sd15:
        parser.error("--comfyui runs on the SD1.5-size file only: drop --no-sd15")
    engines = {"this": partial(cold_run, root)}
    if args.base:
        engines["base"] = partial(cold_run, args.base.resolve())
    comfyui = {"ComfyUI": partial(cold_run, root, comfyui=args.comfyui.resolve())} if args.comfyui else {}
    models: list[tuple[str, list[str], Path | None]] = [] if args.no_tiny else [("tiny default model", [], None)]
    if comfyui:
        print("ComfyUI runs on the SD1.5-size file only (the tiny default model is a diffusers folder it cannot load)")
    with tempfile.TemporaryDirectory(prefix="bench-cold-sd15-", dir=args.scratch) as scratch:
        if not args.no_sd15:
            sd15 = Path(scratch) / "sd15-random-fp16.safetensors"
            subprocess.run([sys.executable, "-m", "bench.cold_start", "--write-sd15", str(sd15)], cwd=root, check=True)
            warm_page_cache(sd15)
            models.append((f"SD1.5-size file, {sd15.stat().st_size / 1e9:.2f} GB fp16, 256x256, 2 steps",
                           ["--set", f"checkpoint.ckpt_name={sd15.name}", *SD15_RUN], sd15))
        results: dict = {}
        for model, extra, file in models:
            runners = engines | (comfyui if file else {})
            rows: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
            for _ in range(args.repeats):
                for name, run in runners.items():
                    rows[name].append(run(extra, file, args.lock if file else None))
                    print(f"{model} / {name}: picture {rows[name][-1]['picture']:.2f} s", file=sys.stderr, flush=True)
            results[model] = {name: median_phases(r) for name, r in rows.items()}
            print_table(model, results[model], args.repeats)
    print("\n" + json.dumps(results))


if __name__ == "__main__" and "--child" in sys.argv:
    argv = sys.argv[sys.argv.index("--child") + 2:]
    if argv[0] == "comfyui":
        child_comfyui(SPAWNED, FIRST_LINE, *argv[1:])
    else:
        child(SPAWNED, FIRST_LINE, argv)
elif __name__ == "__main__" and "--write-sd15" in sys.argv:
    write_sd15_file(sys.argv[sys.argv.index("--write-sd15") + 1])
elif __name__ == "__main__":
    main()
