"""`comfy_extras.nodes_model_merging` for plugins: sdgraph's equivalent core node classes (see sdgraph/comfy_layer/extras.py)."""
from sdgraph.comfy_layer.extras import reexport

reexport(globals(), ("ModelMergeSimple", "CLIPMergeSimple", "ModelMergeBlocks", "CheckpointSave", "CLIPSave", "VAESave", "ModelSave", ))
