"""`comfy_extras.nodes_post_processing` for plugins: sdgraph's equivalent core node classes (see sdgraph/comfy_layer/extras.py)."""
from sdgraph.comfy_layer.extras import reexport

reexport(globals(), ("ImageBlend", "ImageBlur", "ImageQuantize", "ImageSharpen", "ImageScaleToTotalPixels", ))
