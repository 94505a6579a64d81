"""Benchmarks: each runs as a module of this checkout, `python -m bench.<name>` from its root."""
