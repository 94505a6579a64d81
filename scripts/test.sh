#!/usr/bin/env bash
# Set up, then run the whole test suite (engine, nodes on tiny models, server, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec "${PYTHON:-python3}" -m pytest -q "$@"
