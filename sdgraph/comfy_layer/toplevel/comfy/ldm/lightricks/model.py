"""Stand-ins for LTX-Video (Lightricks), which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "LTX-Video (Lightricks)", ("GuideAttentionMask", "_attention_with_guide_mask", "apply_rotary_emb", "LTXVModel", "CrossAttention", "BasicTransformerBlock", ))
