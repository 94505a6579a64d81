"""`comfy_extras.nodes_perpneg` for plugins: sdgraph's PerpNegGuider, and Guider_PerpNeg as an sdgraph GUIDER
(see sdgraph/comfy_layer/guiders.py)."""
from sdgraph.comfy_layer.extras import reexport
from sdgraph.comfy_layer.guiders import Guider_PerpNeg  # noqa: F401 - ComfyUI's name

reexport(globals(), ("PerpNegGuider",))
