"""Convert every UI-format ComfyUI workflow template that uses only core nodes, and count those that convert.

    pip download --no-deps -d /tmp/cwt comfyui-workflow-templates-json
    python tools/count_templates.py /tmp/cwt/comfyui_workflow_templates_json-*.whl [--json]

Each argument is a wheel (its `templates/*.json` are read in place), a folder (every .json under it) or a .json
file. A template is counted when it is in the UI format (sdgraph.uiformat.is_ui_workflow) and every node in it,
inside subgraph definitions too, is a ComfyUI core node (tests/uiformat/data/comfyui_core_node_names.txt), one of
the frontend's own nodes, or an instance of a subgraph it defines. Those are converted with
sdgraph.uiformat.ui_to_api (the shipped core table, no registry); the failures are listed with their problems.
The templates with other nodes are converted too, and listed if anything but their unknown node types is a problem.
Nothing is written; the templates stay where they are (never in the repository).
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from extract_comfy_examples import FRONTEND_NODES, core_names, workflow_types  # noqa: E402

from sdgraph.uiformat import ConversionError, convert, is_ui_workflow, ui_to_api  # noqa: E402


def templates(sources: list[Path]) -> Iterator[tuple[str, bytes]]:
    for source in sources:
        if source.suffix == ".whl":
            with zipfile.ZipFile(source) as wheel:
                for name in sorted(wheel.namelist()):
                    if "/templates/" in name and name.endswith(".json"):
                        yield name.rsplit("/", 1)[1], wheel.read(name)
        elif source.is_dir():
            for path in sorted(source.rglob("*.json")):
                yield str(path.relative_to(source)), path.read_bytes()
        else:
            yield source.name, source.read_bytes()


def count(sources: list[Path]) -> dict:
    core = core_names()
    seen, not_ui, non_core, converted, failed, other_problems = 0, [], {}, [], {}, {}
    for name, raw in templates(sources):
        seen += 1
        try:
            workflow = json.loads(raw)
        except ValueError:
            not_ui.append(name)
            continue
        if not isinstance(workflow, dict) or not is_ui_workflow(workflow):
            not_ui.append(name)
            continue
        used, defined = workflow_types(workflow)
        outside = sorted(used - core - FRONTEND_NODES - defined)
        if outside:
            non_core[name] = outside
            try:  # the rest of the file must still convert: only the unknown nodes may be reported
                problems = [p for p in convert(workflow).problems if not p["message"].startswith("unknown node type")]
            except Exception as exc:  # noqa: BLE001
                problems = [{"message": f"crash: {type(exc).__name__}: {exc}"}]
            if problems:
                other_problems[name] = [p["message"] for p in problems]
            continue
        try:
            ui_to_api(workflow)
        except ConversionError as exc:
            failed[name] = [f"{p.get('node_id')} {p.get('path') or ''}: {p.get('message')}" for p in exc.problems]
            continue
        except Exception as exc:  # noqa: BLE001 - a crash is a failure to report, not to stop on
            failed[name] = [f"crash: {type(exc).__name__}: {exc}"]
            continue
        converted.append(name)
    return {"files": seen, "not_ui": not_ui, "non_core": non_core, "core_ui": len(converted) + len(failed),
            "converted": converted, "failed": failed, "non_core_other_problems": other_problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args(argv)
    result = count(args.sources)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0 if not result["failed"] else 1
    print(f"{result['files']} files: {len(result['not_ui'])} not in the UI format, "
          f"{len(result['non_core'])} with nodes outside ComfyUI's core, {result['core_ui']} UI-format core-only")
    print(f"converted without error: {len(result['converted'])}/{result['core_ui']}")
    print(f"with nodes outside the core: {len(result['non_core']) - len(result['non_core_other_problems'])}"
          f"/{len(result['non_core'])} have no problem but their unknown node types")
    for name, problems in sorted(result["non_core_other_problems"].items()):
        print(f"PROBLEM {name}: {'; '.join(problems[:3])}")
    for name, problems in sorted(result["failed"].items()):
        print(f"FAILED {name}")
        for problem in problems[:5]:
            print(f"    {problem}")
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
