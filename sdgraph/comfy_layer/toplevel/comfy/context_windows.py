"""Stand-ins for ComfyUI's sampling context windows (video), which sdgraph does not provide. The names import (packs name them at load
time); using one raises NotImplementedError naming it (see sdgraph/comfy_layer/unsupported.py)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "ComfyUI's sampling context windows (video)", ("IndexListContextHandler", "ContextSchedules", "ContextFuseMethods", "create_prepare_sampling_wrapper", ))
