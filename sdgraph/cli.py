"""The headless face: `sdgraph run | validate | nodes | schema | serve`. It parses and presents; it never decides."""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from sdgraph.execute import Executor, RunResult
from sdgraph.disk_cache import add_disk_cache_arguments, disk_cache_options
from sdgraph.fast_path import add_fast_path_arguments, fast_path_options
from sdgraph.limits import RAM_BUDGET_HELP, add_limit_arguments, gigabytes, limits_from_args
from sdgraph.overrides import OverrideError, apply_override
from sdgraph.pack_output import document_stdout
from sdgraph.prepare import PreparedPrompt
from sdgraph.runtime import RuntimeOptions, create_executor
from sdgraph.uiformat import ConversionError, api_to_ui, name_node_errors
from sdgraph.uiformat.errors import where as problem_where
from sdgraph.workflow import Workflow, WorkflowFormatError, json_schema, load_workflow

EXIT_INVALID = 2
EXIT_FAILED = 1


def entry() -> NoReturn:
    """The `sdgraph` command as its own process (the console script and `python -m sdgraph`)."""
    exit_process(main())


def exit_process(code: int) -> NoReturn:
    """Ends the process without the interpreter's last passes of the cycle collector over every object torch,
    diffusers and the models made (seconds, measured in bench.cold_start's exit phase): they die with the process.
    Exit handlers still run. Never for a caller of `main` that goes on (tests): frozen objects are never collected."""
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_INVALID
    # a document on stdout (JSON) is the command's alone: plugin prints, from any thread, go to stderr
    with document_stdout(_prints_document(args)) as args.out:
        return int(args.handler(args) or 0)


def _prints_document(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False)) or args.command == "convert" or bool(getattr(args, "name", None))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdgraph", description="Run and inspect Stable Diffusion node graphs.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a workflow JSON file")
    run.add_argument("workflow", type=Path)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.input=value",
                     help="override a literal input (NODE: id, unique title or unique class)")
    run.add_argument("--json", action="store_true", help="print machine-readable results")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _runtime_flags(run)
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow", type=Path)
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.input=value")
    validate.add_argument("--json", action="store_true")
    _runtime_flags(validate)
    validate.set_defaults(handler=cmd_validate)

    nodes = sub.add_parser("nodes", help="list nodes, or describe one; shows plugin load failures")
    nodes.add_argument("name", nargs="?")
    nodes.add_argument("--json", action="store_true")
    _runtime_flags(nodes)
    nodes.set_defaults(handler=cmd_nodes)

    convert = sub.add_parser("convert", help="print a workflow (UI JSON, API JSON or picture) as API-format JSON")
    convert.add_argument("workflow", type=Path)
    convert.add_argument("--ui", action="store_true", help="the other way: print an API workflow as a UI workflow")
    convert.add_argument("--base-dir", type=Path, help="directory holding custom_nodes/ (default ./user)")
    convert.add_argument("--no-plugins", action="store_true", help="know only the built-in nodes")
    convert.set_defaults(handler=cmd_convert)

    schema = sub.add_parser("schema", help="print the JSON Schema of the workflow format")
    schema.set_defaults(handler=lambda args: print(json.dumps(json_schema(), indent=2)))

    try:
        from sdgraph.cli_serve import add_serve_parser
    except ImportError:
        pass
    else:
        add_serve_parser(sub)
    return parser


def _runtime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-dir", type=Path, help="directory holding models/, input/, output/ (default ./user)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--lowvram", action="store_true", help="stream weights to the GPU as they are used")
    add_fast_path_arguments(parser)
    parser.add_argument("--ram-budget-gb", type=gigabytes, default=None, metavar="GB", help=RAM_BUDGET_HELP)
    parser.add_argument("--no-cache", action="store_true", help="do not keep node outputs between runs")
    parser.add_argument("--cache-lru", type=int, default=0, metavar="N",
                        help="besides each node's latest output, keep N outputs of earlier runs (default 0)")
    parser.add_argument("--no-plugins", action="store_true", help="load only the built-in nodes")
    parser.add_argument("--preview", action="store_true", help="produce latent previews while sampling")
    add_disk_cache_arguments(parser)
    add_limit_arguments(parser)


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    return RuntimeOptions(base_dir=args.base_dir, cpu=args.cpu, lowvram=args.lowvram, no_cache=args.no_cache,
                          cache_lru=args.cache_lru, ram_budget_gb=args.ram_budget_gb,
                          plugins=not args.no_plugins, preview=getattr(args, "preview", False),
                          limits=limits_from_args(args), **disk_cache_options(args),
                          **fast_path_options(args))


def _load(args: argparse.Namespace, executor: Executor) -> Workflow:
    workflow = load_workflow(args.workflow, executor.registry)
    for text in args.overrides:
        apply_override(workflow, text)
    return workflow


def prepare_named(executor: Executor, workflow: Workflow) -> PreparedPrompt:
    """The prepared prompt, its node errors named as the user's file names them (a UI file's node ids, titles)."""
    prompt = executor.prepare(workflow)
    name_node_errors(prompt.node_errors, workflow.origin)
    return prompt


def cmd_convert(args: argparse.Namespace) -> int:
    from sdgraph.paths import Dirs, default_base
    from sdgraph.plugins import build_registry

    dirs = Dirs(base=(args.base_dir or default_base()).resolve())
    registry = build_registry(dirs.custom_nodes, plugins=not args.no_plugins, dirs=dirs)
    try:
        workflow = load_workflow(args.workflow, registry)
    except ConversionError as exc:
        for item in exc.problems:
            print(f"error: {problem_where(item)}{item['message']}", file=sys.stderr)
        return EXIT_INVALID
    except (OSError, WorkflowFormatError) as exc:
        return _input_error(args, exc)
    out = api_to_ui(workflow.to_api(), registry) if args.ui else workflow.to_api()
    print(json.dumps(out, indent=2), file=args.out)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    executor = create_executor(runtime_options(args))
    try:
        workflow = _load(args, executor)
    except (OSError, WorkflowFormatError, OverrideError) as exc:
        return _input_error(args, exc)
    prompt = prepare_named(executor, workflow)
    if args.json:
        print(json.dumps(prompt.as_dict(), indent=2, default=str), file=args.out)
    elif prompt.ok:
        print(f"{args.workflow}: valid; output nodes {', '.join(prompt.outputs)}")
        _print_node_errors(prompt)
    else:
        print_invalid(prompt)
    return 0 if prompt.ok else EXIT_INVALID


def cmd_run(args: argparse.Namespace) -> int:
    executor = create_executor(runtime_options(args))
    try:
        workflow = _load(args, executor)
    except (OSError, WorkflowFormatError, OverrideError) as exc:
        return _input_error(args, exc)
    prompt = prepare_named(executor, workflow)
    if not prompt.ok:
        if args.json:
            print(json.dumps({"status": "invalid", **prompt.as_dict()}, indent=2, default=str), file=args.out)
        else:
            print_invalid(prompt)
        return EXIT_INVALID
    if not args.json:
        _print_node_errors(prompt)
    progress = _Progress(len(prompt.plan), enabled=not (args.quiet or args.json))
    try:
        result = executor.execute(prompt, listener=progress.on_event)
    finally:
        progress.close()
    _name_run_error(result, workflow)
    files = written_files(executor, result)
    if args.json:
        print(json.dumps(_json_result(result, files), indent=2, default=str), file=args.out)
    else:
        _print_result(result, files)
    return 0 if result.ok else EXIT_FAILED


def _name_run_error(result: RunResult, workflow: Workflow) -> None:
    """A run error on a converted workflow also names the node as the UI file shows it."""
    info = (workflow.origin or {}).get(str((result.error or {}).get("node_id")))
    if info is not None:
        result.error["ui_node"] = {k: info[k] for k in ("ui_id", "title", "path")}


def cmd_nodes(args: argparse.Namespace) -> int:
    executor = create_executor(runtime_options(args))
    registry, dirs = executor.registry, executor.services.dirs
    if args.name:
        node = registry.get(args.name)
        if node is None:
            print(f"no node named {args.name!r}", file=sys.stderr)
            return EXIT_INVALID
        print(json.dumps(node.spec.describe(dirs), indent=2, default=str), file=args.out)
        return 0
    if args.json:
        print(json.dumps({"nodes": registry.describe(dirs), "problems": [p.as_dict() for p in registry.problems]},
                         indent=2, default=str), file=args.out)
        return 0
    for pack, names in sorted(registry.packs.items()):
        print(f"{pack}:")
        for name in sorted(names):
            spec = registry.nodes[name].spec
            aliases = f" (also {', '.join(spec.aliases)})" if spec.aliases else ""
            print(f"  {name}{aliases} [{spec.category}]")
    for problem in registry.problems:
        where = f"{problem.pack}" + (f" / {problem.node}" if problem.node else "")
        print(f"\nFAILED TO LOAD {where}: {problem.message}", file=sys.stderr)
        if problem.traceback:
            print(problem.traceback.rstrip(), file=sys.stderr)
    return 0


# ---- presentation -------------------------------------------------------------------------------------------


class _Progress:
    """Two tqdm bars: nodes of the workflow, and steps of the node running now."""

    def __init__(self, total_nodes: int, enabled: bool) -> None:
        self.enabled = enabled
        self.nodes = self.steps = None
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.nodes = tqdm(total=total_nodes, desc="nodes", unit="node", position=0, leave=True)

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event == "execution_cached":
            self.nodes.update(len(data["nodes"]))
        elif event == "executing" and data["node"] is not None:
            self._close_steps()
            self.nodes.set_postfix_str(f"node {data['node']}")
            self.nodes.update(1)
        elif event == "progress":
            if self.steps is None or self.steps.total != data["max"]:
                self._close_steps()
                self.steps = self._tqdm(total=data["max"], desc="  steps", unit="step", position=1, leave=False)
            self.steps.n = data["value"]
            self.steps.refresh()

    def _close_steps(self) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None

    def close(self) -> None:
        self._close_steps()
        if self.nodes is not None:
            self.nodes.close()


def written_files(executor: Executor, result: RunResult) -> list[str]:
    """Paths of the images and files the output nodes reported in their UI output."""
    dirs = executor.services.dirs
    files = []
    for ui in result.outputs.values():
        for item in ui.get("images", []) if isinstance(ui, dict) else []:
            if isinstance(item, dict) and "filename" in item:
                root = dirs.of_type(item.get("type", "output"))
                files.append(str(root / item.get("subfolder", "") / item["filename"]))
    return files


def _json_result(result: RunResult, files: list[str]) -> dict[str, Any]:
    return {"prompt_id": result.prompt_id, "status": result.status, "seconds": round(result.seconds, 4),
            "executed": result.executed, "cached": result.cached, "outputs": result.outputs, "files": files,
            "error": result.error}


def _print_result(result: RunResult, files: list[str]) -> None:
    if result.status == "error" and result.error:
        err = result.error
        seen = f", {problem_where(err['ui_node']).rstrip(': ')} in the UI file" if err.get("ui_node") else ""
        print(f"error in node {err['node_id']} ({err['node_type']}{seen}): {err['exception_type']}: "
              f"{err['exception_message']}", file=sys.stderr)
        return
    if result.status == "interrupted":
        print("interrupted", file=sys.stderr)
        return
    print(f"done in {result.seconds:.2f}s: {len(result.executed)} node(s) ran, {len(result.cached)} cached")
    for path in files:
        print(f"wrote {path}")


def print_invalid(prompt: PreparedPrompt) -> None:
    error = prompt.error or {}
    print(f"invalid workflow: {error.get('message', '')}", file=sys.stderr)
    if error.get("details"):
        print(f"  {error['details']}", file=sys.stderr)
    _print_node_errors(prompt)


def _print_node_errors(prompt: PreparedPrompt) -> None:
    for node_id, entry in prompt.node_errors.items():
        ui = entry.get("ui_node")
        seen = f", {problem_where(ui).rstrip(': ')} in the UI file" if ui else ""
        print(f"  node {node_id} ({entry['class_type']}{seen}):", file=sys.stderr)
        for err in entry["errors"]:
            name = err.get("extra_info", {}).get("input_name")
            where = f"input {name!r}: " if name else ""
            print(f"    - {where}{err['message']}: {err['details']} [{err['type']}]", file=sys.stderr)
            if err.get("ui_hint"):
                print(f"      ({err['ui_hint']})", file=sys.stderr)


def _input_error(args: argparse.Namespace, exc: Exception) -> int:
    if getattr(args, "json", False):
        error: dict[str, Any] = {"type": "invalid_prompt", "message": str(exc)}
        if isinstance(exc, ConversionError):
            error["problems"] = exc.problems
        print(json.dumps({"status": "invalid", "error": error}), file=args.out)
    else:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
