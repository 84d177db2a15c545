#!/usr/bin/env bash
# Quickstart on the embedded tiny default (a CPU is enough): install, then run the whole pipeline
# (configs/tiny/pipeline.yaml): base model -> values-targeted SFT and control SFT -> comparison data (SFT
# samples ranked by the rubric) -> reward model ->
# PPO-ptx and plain PPO -> win-rate evaluation against the SFT model. Prints where the report is.
# Re-running skips finished stages and resumes an interrupted one. RUN=runs/mine picks another run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
RUN=${RUN:-runs/tiny}
t0=$SECONDS
rlhf pipeline configs/tiny/pipeline.yaml "run_dir=$RUN"
echo
echo "[quickstart] done in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s (after install)."
echo "[quickstart] report: $RUN/eval/report.md  (plots: $RUN/eval/*.png, samples: $RUN/eval/samples.jsonl)"
echo "[quickstart] models: $RUN/base $RUN/sft $RUN/sft_control $RUN/rm $RUN/ppo_ptx $RUN/ppo (comparisons: $RUN/compare/pairs.jsonl)"
