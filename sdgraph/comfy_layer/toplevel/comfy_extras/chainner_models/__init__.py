"""ComfyUI's `comfy_extras.chainner_models`: upscale model loading (sdgraph's, see model_loading)."""
