import sys

from sdgraph.cli import main

sys.exit(main())
