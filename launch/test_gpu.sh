#!/usr/bin/env bash
# The GPU suite on a machine with CUDA GPUs: every stage a few steps in bf16 on one GPU, and the 2-GPU ZeRO-3
# parity of every stage on NCCL (tests/distributed/test_gpu.py). Without a GPU every test skips, saying so.
# Usage: bash launch/test_gpu.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
python3 -m pytest -m gpu tests/distributed/test_gpu.py "$@"
