"""Stand-ins for TAESD (the tiny preview autoencoder), which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "TAESD (the tiny preview autoencoder)", ("Block", "Clamp", "conv", "TAESD", "Encoder", "Decoder", ))
