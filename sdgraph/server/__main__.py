"""`python -m sdgraph.server [flags]`: the same as `sdgraph serve`."""
import sys

from sdgraph.cli_serve import main

sys.exit(main())
