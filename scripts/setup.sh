#!/usr/bin/env bash
# Create .venv and install Phalanx with everything it needs, offline but for the package
# registries. torch is pinned to 2.13.0, the CPU build that lies on disk on these machines:
# a bare "torch" would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,ray]" "torch==2.13.0"
bash scripts/fetch_fashion_mnist.sh . || true
