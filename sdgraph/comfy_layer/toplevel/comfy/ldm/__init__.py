"""`comfy.ldm` for plugins: the attention functions of sdgraph's UNets, and stand-ins for other families."""
