"""sdgraph: a fast, validated node-graph workflow engine for Stable Diffusion."""
__version__ = "0.1.0"
