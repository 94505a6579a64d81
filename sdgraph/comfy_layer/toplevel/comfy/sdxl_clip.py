"""Stand-ins for ComfyUI's SDXL text encoder classes (sdgraph's CLIP holds transformers encoders instead: an SDXL
CLIP has two, `len(clip.encoders) == 2`, `clip.is_sdxl`)."""
from sdgraph.comfy_layer import unsupported

unsupported.define(globals(), "ComfyUI's own SDXL text encoder classes",
                   ("SDXLClipG", "SDXLClipGTokenizer", "SDXLTokenizer", "SDXLClipModel", "SDXLRefinerClipModel",
                    "StableCascadeClipGTokenizer", "StableCascadeTokenizer", "StableCascadeClipG",
                    "StableCascadeClipModel"))
