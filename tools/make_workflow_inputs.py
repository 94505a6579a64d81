"""Write the input pictures the workflows in workflows/ read (img2img source, inpaint source, control outline).

    python tools/make_workflow_inputs.py

The pictures come from the same generator the tiny model was trained on, so they are reproducible.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sdgraph.tiny.shapes import ShapeLabels, render

OUT = Path(__file__).resolve().parents[1] / "workflows" / "input"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    square = render(ShapeLabels("square", "red", "white", "left", "large"))
    Image.fromarray(square.image).save(OUT / "red_square_left.png")

    # Inpaint source: the red square picture, transparent (= to be repainted) over its left part.
    rgba = np.dstack([square.image, np.full(square.image.shape[:2], 255, np.uint8)])
    rgba[:, :36, 3] = 0
    Image.fromarray(rgba, "RGBA").save(OUT / "inpaint_left.png")

    triangle = render(ShapeLabels("triangle", "green", "black", "top", "large"))
    Image.fromarray(triangle.outline).save(OUT / "outline_triangle_top.png")


if __name__ == "__main__":
    main()
