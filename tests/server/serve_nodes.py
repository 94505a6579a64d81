"""`python -m tests.server.serve_nodes [sdgraph serve flags]`: the real `serve()` over the test nodes only.

Used by the subprocess tests and `bench/server_load.py`, so neither waits for torch and the diffusion packs.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from sdgraph.cli_serve import add_serve_arguments, serve
from tests.server.nodes import make_executor


def main() -> int:
    args = add_serve_arguments(argparse.ArgumentParser(prog="serve_nodes")).parse_args()
    base = (args.base_dir or Path("user")).resolve()
    return serve(args, executor=make_executor(base), executor_factory=functools.partial(make_executor, base))


if __name__ == "__main__":
    sys.exit(main())
