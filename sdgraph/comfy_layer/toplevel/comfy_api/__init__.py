"""`comfy_api`: ComfyUI's versioned node API for packs; `comfy_api.latest` holds the V3 node API (io, ui)."""
