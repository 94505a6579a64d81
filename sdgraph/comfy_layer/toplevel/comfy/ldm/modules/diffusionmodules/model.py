"""Stand-ins for ComfyUI's own VAE building blocks (sdgraph's VAEs are diffusers'), which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "ComfyUI's own VAE building blocks (sdgraph's VAEs are diffusers')", ("ResnetBlock", "Encoder", "Decoder", "AttnBlock", "Upsample", "Downsample", ))
