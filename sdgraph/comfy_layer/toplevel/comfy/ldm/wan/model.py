"""Stand-ins for Wan video, which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "Wan video", ("WanT2VCrossAttention", "WanI2VCrossAttention", "WanModel", "WanAttentionBlock", "WanSelfAttention", ))
