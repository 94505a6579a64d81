"""`comfy_extras.nodes_freelunch` for plugins: sdgraph's equivalent core node classes (see sdgraph/comfy_layer/extras.py)."""
from sdgraph.comfy_layer.extras import reexport

reexport(globals(), ("FreeU", "FreeU_V2", ))
