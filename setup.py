"""Packages: the engine `sdgraph`, and the built-in node packs in `nodes/`, shipped as `sdgraph.nodes`."""
from setuptools import find_packages, setup

packages = find_packages(include=["sdgraph", "sdgraph.*"])
packages += ["sdgraph.nodes"] + [f"sdgraph.nodes.{name}" for name in find_packages("nodes")]
setup(packages=packages, package_dir={"sdgraph.nodes": "nodes"})
