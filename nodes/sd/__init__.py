"""Stable Diffusion nodes: thin typed adapters over diffusers, transformers, safetensors and Pillow."""
