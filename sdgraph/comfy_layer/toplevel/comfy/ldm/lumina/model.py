"""Stand-ins for Lumina 2, which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "Lumina 2", ("FeedForward", "NextDiT", "JointAttention", "JointTransformerBlock", ))
