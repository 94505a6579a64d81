"""Packages: the engine `sdgraph`, and the built-in node packs in `nodes/`, shipped as `sdgraph.nodes`.

`sdgraph/nodes/__init__.py` only points a source checkout at `nodes/`; the distribution takes `sdgraph.nodes`
from `nodes/` itself.
"""
from setuptools import find_packages, setup

packages = find_packages(include=["sdgraph", "sdgraph.*"], exclude=["sdgraph.nodes", "sdgraph.nodes.*"])
packages += ["sdgraph.nodes"] + [f"sdgraph.nodes.{name}" for name in find_packages("nodes")]
setup(packages=packages, package_dir={"sdgraph.nodes": "nodes"})
