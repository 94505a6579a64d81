"""Small hand-written UI workflows: nodes and links in litegraph's shape."""
from __future__ import annotations

from typing import Any


def node(node_id: int, kind: str, values: Any = None, inputs: list | None = None, outputs: list | None = None,
         **extra: Any) -> dict[str, Any]:
    """`inputs`: (name, type, link) or (name, type, link, widget_name); `outputs`: types."""
    slots = []
    for item in inputs or []:
        slot = {"name": item[0], "type": item[1], "link": item[2]}
        if len(item) > 3:
            slot["widget"] = {"name": item[3]}
        slots.append(slot)
    outs = [{"name": t, "type": t, "links": []} for t in outputs or []]
    found = {"id": node_id, "type": kind, "mode": 0, "inputs": slots, "outputs": outs, "properties": {}}
    if values is not None:
        found["widgets_values"] = values
    found.update(extra)
    return found


def graph(nodes: list[dict], links: list[list], **extra: Any) -> dict[str, Any]:
    return {"nodes": nodes, "links": links, **extra}


def ckpt(node_id: int = 4) -> dict[str, Any]:
    return node(node_id, "CheckpointLoaderSimple", ["m.safetensors"], outputs=["MODEL", "CLIP", "VAE"])


def encode(node_id: int, text: str, clip_link: int | None, **extra: Any) -> dict[str, Any]:
    return node(node_id, "CLIPTextEncode", [text], inputs=[("clip", "CLIP", clip_link)], outputs=["CONDITIONING"],
                **extra)
