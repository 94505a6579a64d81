"""`comfy_extras.nodes_model_downscale` for plugins: sdgraph's equivalent core node classes (see sdgraph/comfy_layer/extras.py)."""
from sdgraph.comfy_layer.extras import reexport

reexport(globals(), ("PatchModelAddDownscale", ))
