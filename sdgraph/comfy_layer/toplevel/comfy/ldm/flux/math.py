"""Stand-ins for Flux (its rotary attention), which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "Flux (its rotary attention)", ("apply_rope", "apply_rope1", "attention", "rope", ))
