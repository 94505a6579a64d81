#!/usr/bin/env bash
# Install sdgraph and what it needs on a fresh machine. `setup.sh test` also installs the test tools.
# torch is installed first and pinned: an unpinned torch requirement would pull multi-GB GPU builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
fi

if [ "${1:-}" = "test" ]; then
  "$PY" -m pip install -q -e ".[test]"
  # Browser tests drive Debian's Chromium with Playwright (no browser download).
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; browser tests will be skipped" >&2
  fi
else
  "$PY" -m pip install -q -e .
fi

# The example workflows read their input pictures from the input directory.
mkdir -p "${SDGRAPH_HOME:-user}/input"
cp -n workflows/input/*.png "${SDGRAPH_HOME:-user}/input/" 2>/dev/null || true
