#!/usr/bin/env bash
# Quickstart on the embedded tiny default (CPU is enough): install, then run every stage that exists so far.
# Today that is pretrain (the tiny base model) -> SFT on the PALMS values-targeted set; the reward model,
# PPO-ptx and evaluation stages join this script as they land. Re-running resumes/skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
RUN=${RUN:-runs/tiny}
stage() {  # stage NAME CONFIG OUT: skip a finished stage, resume an interrupted one
  local name=$1 config=$2 out=$3
  if [ -f "$out/summary.json" ]; then
    echo "[quickstart] $name: finished earlier ($out/summary.json), skipping"
    return
  fi
  local t0=$SECONDS
  rlhf "$name" "$config" "run.output_dir=$out" "${@:4}"
  echo "[quickstart] $name took $((SECONDS - t0)) s"
}
stage pretrain configs/tiny/pretrain.yaml "$RUN/base"
stage sft configs/tiny/sft.yaml "$RUN/sft" "model.name_or_path=$RUN/base"
echo
echo "[quickstart] done. Base model: $RUN/base   values-targeted SFT model: $RUN/sft"
echo "[quickstart] summaries: $RUN/base/summary.json $RUN/sft/summary.json"
echo "[quickstart] PPO-ptx and evaluation are not in this version yet; see README."
