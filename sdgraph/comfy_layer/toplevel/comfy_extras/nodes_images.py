"""`comfy_extras.nodes_images` for plugins: sdgraph's equivalent core node classes (see sdgraph/comfy_layer/extras.py)."""
from sdgraph.comfy_layer.extras import reexport

reexport(globals(), ("ImageCrop", "RepeatImageBatch", "ImageFromBatch", "ImageAddNoise", "SaveAnimatedWEBP", "SaveAnimatedPNG", "ImageStitch", "ResizeAndPadImage", "GetImageSize", "ImageRotate", "ImageFlip", "ImageScaleToMaxDimension", ))
