"""Stand-ins for TAEHV (the tiny video autoencoder), which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "TAEHV (the tiny video autoencoder)", ("TAEHV", "conv", "apply_model_with_memblocks", ))
