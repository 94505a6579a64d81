"""Stand-ins for the Wan video VAE, which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "the Wan video VAE", ("RMS_norm", "CausalConv3d", "WanVAE", ))
