#!/usr/bin/env bash
# Install rlhf and its dependencies into the current Python environment.
# On a machine without a GPU, torch's CPU build is installed first (otherwise pip would pull a multi-GB CUDA
# build); on a GPU machine the CUDA build that pip picks is the right one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install "torch>=2.6"
  else
    "$PY" -m pip install torch==2.13.0
  fi
fi
"$PY" -m pip install -e ".[dev${RLHF_EXTRAS:+,$RLHF_EXTRAS}]"
