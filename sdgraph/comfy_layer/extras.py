"""What ComfyUI's `comfy_extras.nodes_*` modules hold, for packs: sdgraph's equivalent core node classes.

Each `comfy_extras.nodes_<x>` module of the layer re-exports, under ComfyUI's module and class names, the
ComfyUI-convention classes of sdgraph's built-in nodes (the very classes `nodes.NODE_CLASS_MAPPINGS` holds), so
`from comfy_extras.nodes_mask import MaskComposite` gives a class that runs sdgraph's MaskComposite. A class
ComfyUI's module has but sdgraph lacks is absent: importing it fails with its name.
"""
from __future__ import annotations

from typing import Any, Iterable


def reexport(namespace: dict[str, Any], names: Iterable[str]) -> None:
    """Put the core classes called `names` (those sdgraph has) and NODE_CLASS_MAPPINGS into a module."""
    import nodes  # noqa: PLC0415 - the layer's `nodes`, importable once the layer is active

    mappings = {name: nodes.NODE_CLASS_MAPPINGS[name] for name in names if name in nodes.NODE_CLASS_MAPPINGS}
    namespace.update(mappings)
    namespace["NODE_CLASS_MAPPINGS"] = mappings
    namespace["NODE_DISPLAY_NAME_MAPPINGS"] = {name: nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name)
                                               for name in mappings}
