"""`sdgraph.nodes` in a source checkout: the built-in node packs live in the checkout's top-level `nodes/`.

An installed sdgraph ships `nodes/` here in place of this file (setup.py maps the package there). In a checkout
this file resolves the packs next to the `sdgraph` package that was imported, so each checkout runs its own nodes
even when another checkout's editable install (which maps `sdgraph.nodes` to its own `nodes/`) shares the
interpreter.
"""
from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[2] / "nodes"
__path__ = [str(_SOURCE)]  # submodules (sdgraph.nodes.sd, ...) load from the checkout's nodes/
exec(compile((_SOURCE / "__init__.py").read_bytes(), str(_SOURCE / "__init__.py"), "exec"))  # its own init code
