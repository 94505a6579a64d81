"""Write the published noise-level tables that two custom schedulers read into nodes/sd/schedule_tables.json.

Numbers only: Align Your Steps' optimised 10-step sigmas (Sabour et al. 2024, NVIDIA's "How to" page: SD1,
SDXL and SVD) and GITS' optimised sigmas for SD1.5 (Chen et al. 2024, per coefficient and step count 2-20), as
the ComfyUI checkout holds them (its AlignYourStepsScheduler and GITSScheduler tables), so sdgraph's schedules
are ComfyUI's to the bit. Dev tooling, like the rest of this folder:

    python tools/comfy_reference/schedule_tables.py --comfyui /tmp/comfyui
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_samplers import import_sampling  # noqa: E402

ABOUT = ("Published noise levels (sigmas, descending) read by nodes/sd/custom_schedulers.py. align_your_steps: "
         "the 10-step schedules of Align Your Steps (Sabour et al. 2024) per model family. gits: GITS' schedules for "
         "SD1.5 (Chen et al. 2024) per coefficient, one row per step count from 2 to 20. Written by "
         "tools/comfy_reference/schedule_tables.py from the numbers of ComfyUI a125cd8's tables.")


def _compact(tables: dict) -> str:
    """JSON with one line per row of numbers."""
    def rows(value) -> str:
        if isinstance(value, list) and value and isinstance(value[0], list):
            return "[\n" + ",\n".join("   " + json.dumps(r) for r in value) + "\n  ]"
        return json.dumps(value)

    def section(table: dict) -> str:
        return "{\n" + ",\n".join(f"  {json.dumps(k)}: {rows(v)}" for k, v in table.items()) + "\n }"

    body = [f' "about": {json.dumps(tables["about"])}']
    body += [f" {json.dumps(k)}: {section(v)}" for k, v in tables.items() if k != "about"]
    return "{\n" + ",\n".join(body) + "\n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "nodes" / "sd" / "schedule_tables.json")
    args = parser.parse_args()
    import_sampling(args.comfyui.resolve())
    import comfy_extras.nodes_align_your_steps as ays
    import comfy_extras.nodes_gits as gits

    tables = {
        "about": ABOUT,
        "align_your_steps": {name: [float(v) for v in row] for name, row in ays.NOISE_LEVELS.items()},
        "gits": {f"{coeff:.2f}": [[float(v) for v in row] for row in rows]
                 for coeff, rows in sorted(gits.NOISE_LEVELS.items())},
    }
    args.out.write_text(_compact(tables) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
