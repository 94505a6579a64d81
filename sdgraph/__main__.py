from sdgraph.cli import entry

entry()
