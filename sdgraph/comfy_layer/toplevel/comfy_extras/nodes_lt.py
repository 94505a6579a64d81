"""Stand-ins for `comfy_extras.nodes_lt` (LTX-Video nodes and helpers, a model family sdgraph does not run): the
names import; using one raises NotImplementedError naming it."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "LTX-Video (Lightricks)",
                   ("LTXVAddGuide", "LTXVImgToVideo", "LTXVCropGuides", "LTXVConditioning", "ModelSamplingLTXV",
                    "LTXVScheduler", "LTXVPreprocess", "EmptyLTXVLatentVideo", "get_noise_mask",
                    "_append_guide_attention_entry", "conditioning_get_any_value"))
NODE_CLASS_MAPPINGS: dict = {}
