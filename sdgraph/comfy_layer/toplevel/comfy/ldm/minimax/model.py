"""Stand-ins for MiniMax video, which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "MiniMax video", ("MiniMaxH3Model", "PackedLayout", "_mod_gate", "_mod_scale_shift", ))
