"""Stand-ins for the LTX-Video VAE, which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "the LTX-Video VAE", ("ResnetBlock3D", "Encoder", "Decoder", ))
