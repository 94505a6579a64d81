"""Run the flow-control toy workflows in ComfyUI's own executor and record what it did (dev tooling).

`tests/engine/flow_nodes.py` holds ComfyUI-convention classes (lazy inputs, expansion, ExecutionBlocker, async
functions) and `FLOW_CASES`. Each case runs twice in one ComfyUI `PromptExecutor` (the second run shows what it
reuses); per run we keep the node calls, the UI outputs, the nodes that ran and the node each was shown as, the
blocker's error messages, and how the run ended. `tests/engine/test_flow_control.py` holds sdgraph to it.

    python tools/comfy_reference/flow_semantics.py --comfyui /tmp/comfyui \\
        --out tests/engine/data/flow_reference.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_references import write_torchvision_stand_in  # noqa: E402


class _Server:
    """What ComfyUI's executor expects of its server: a client id and a message sink."""

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id = None
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def send_sync(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self.messages.append((event, data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "engine" / "data" / "flow_reference.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="comfy-flow-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(args.comfyui), str(ROOT)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import execution
    import nodes

    from tests.engine import flow_nodes
    nodes.NODE_CLASS_MAPPINGS.update(flow_nodes.NODE_CLASS_MAPPINGS)
    found: dict[str, list[dict[str, Any]]] = {}
    for name, workflow in flow_nodes.FLOW_CASES.items():
        server = _Server()
        executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC)
        outputs = sorted(n for n, info in workflow.items() if info["class_type"] == "FlowShow")
        runs = []
        for attempt in range(2):
            flow_nodes.reset()
            server.messages.clear()
            executor.execute(json.loads(json.dumps(workflow)), f"{name}-{attempt}", {"client_id": "reference"},
                             outputs)
            ui = executor.history_result["outputs"]
            runs.append(flow_nodes.summary(server.messages, dict(flow_nodes.CALLS), ui, flow_nodes.SEEN))
        found[name] = runs
        print(name, runs[0]["calls"], runs[0]["outputs"], runs[0]["errors"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
