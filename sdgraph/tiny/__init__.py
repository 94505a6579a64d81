"""The tiny text-to-image model trained in this repo: its synthetic data, architecture, training and classifier.

Modules (import what you need; nothing heavy is imported here):

- ``shapes``: the captioned synthetic dataset of shapes (numpy + Pillow only).
- ``architecture``: configurations of the tiny VAE, UNet, text encoder, ControlNet, LoRA and their paths.
- ``train``: ``python -m sdgraph.tiny.train`` trains everything from scratch.
- ``classifier``: the attribute classifier used to evaluate generated pictures.
"""
