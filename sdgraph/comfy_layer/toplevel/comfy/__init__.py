"""ComfyUI's `comfy` package for plugins, answered by sdgraph (see sdgraph/comfy_layer/__init__.py).

Present: cli_args, model_management, utils, samplers, sample. Others (comfy.sd, comfy.model_patcher, ...) are not
provided yet, so a pack importing them fails to load with the missing module named.
"""
