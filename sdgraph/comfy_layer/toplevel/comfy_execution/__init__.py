"""ComfyUI's `comfy_execution` for plugins: graph building for expansion, and the execution blocker."""
