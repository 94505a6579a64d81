"""Stand-ins for ComfyUI's quantised tensor ops, which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "ComfyUI's quantised tensor ops", ("QuantizedTensor", "ck", ))
