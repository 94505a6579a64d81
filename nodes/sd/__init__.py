"""Stable Diffusion nodes: thin typed adapters over diffusers, transformers, safetensors and Pillow."""
from sdgraph.nodes.sd import lean_imports

lean_imports.install()  # imports nothing now; diffusers' and transformers' eager packages run only when used
