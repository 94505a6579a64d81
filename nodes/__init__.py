"""Built-in node packs of sdgraph, installed as `sdgraph.nodes`."""
