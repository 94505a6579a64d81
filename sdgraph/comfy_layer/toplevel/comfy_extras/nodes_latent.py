"""`comfy_extras.nodes_latent` for plugins: sdgraph's equivalent core node classes (see sdgraph/comfy_layer/extras.py)."""
from sdgraph.comfy_layer.extras import reexport

reexport(globals(), ("LatentAdd", "LatentSubtract", "LatentMultiply", "LatentInterpolate", "LatentBatch", "LatentBatchSeedBehavior", ))
