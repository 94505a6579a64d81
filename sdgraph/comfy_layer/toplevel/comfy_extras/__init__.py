"""ComfyUI's `comfy_extras` for plugins: its node modules as re-exports of sdgraph's core nodes (see
sdgraph/comfy_layer/extras.py), and the helpers packs import from them."""
