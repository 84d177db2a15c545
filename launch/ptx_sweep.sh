#!/usr/bin/env bash
# Sweep the pretraining-loss coefficient of PPO-ptx (ppo.ptx_coef, InstructGPT's gamma) on a finished pipeline run:
# one PPO run per coefficient from the run's SFT model against its reward model, with every other setting taken
# from the run's own PPO-ptx config, then one evaluation of them beside the run's SFT, plain PPO and PPO-ptx
# (win rates against SFT and held-out perplexity, the report's "Capability integrity" table).
#
#   bash launch/ptx_sweep.sh RUN_DIR [COEF ...]        e.g. bash launch/ptx_sweep.sh runs/tiny 0.005 0.02 0.2
#
# Writes RUN_DIR/ptx_sweep/ptx_<COEF>/ and RUN_DIR/ptx_sweep/eval/report.md. Finished coefficients are skipped
# and an interrupted one resumes, so re-running after a crash loses nothing. Extra settings for every PPO run can
# be passed in PPO_OVERRIDES (space-separated key=value), e.g. PPO_OVERRIDES="ppo.iterations=10"; PPO_CMD runs
# them on more processes, e.g. NPROC=8 PPO_CMD="launch/multi_gpu.sh ppo" (default: rlhf ppo).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bash launch/ptx_sweep.sh RUN_DIR [COEF ...]" >&2
  exit 2
fi
RUN=${1%/}
shift
COEFS=("$@")
[ ${#COEFS[@]} -gt 0 ] || COEFS=(0.005 0.02 0.2)
for need in sft rm ppo ppo_ptx eval; do
  if [ ! -f "$RUN/$need/config.yaml" ]; then
    echo "ptx_sweep: $RUN/$need/config.yaml not found; run the pipeline first (rlhf pipeline ... run_dir=$RUN)" >&2
    exit 2
  fi
done
for c in "${COEFS[@]}"; do
  if ! [[ "$c" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; then
    echo "ptx_sweep: coefficient '$c' is not a non-negative number" >&2
    exit 2
  fi
done
OUT=$RUN/ptx_sweep
mkdir -p "$OUT"
models="sft: '$RUN/sft', ppo: '$RUN/ppo', ppo_ptx: '$RUN/ppo_ptx'"
for c in "${COEFS[@]}"; do
  dir=$OUT/ptx_$c
  if [ -f "$dir/summary.json" ]; then
    echo "[ptx_sweep] ptx_coef $c: finished, skipped ($dir)"
  else
    echo "[ptx_sweep] ptx_coef $c -> $dir"
    # shellcheck disable=SC2086
    ${PPO_CMD:-rlhf ppo} "$RUN/ppo_ptx/config.yaml" "run.output_dir=$dir" "model.name_or_path=$RUN/sft" "reward.model=$RUN/rm" \
      "ppo.ptx_coef=$c" ${PPO_OVERRIDES:-}
  fi
  models="$models, 'ptx_$c': '$dir'"
done
# run.overwrite: the evaluation is redone whenever the script runs (another set of coefficients is other models);
# cached generations of unchanged models are reused
rlhf eval "$RUN/eval/config.yaml" "run.output_dir=$OUT/eval" "eval.baseline=sft" "reward_judge.model=$RUN/rm" \
  "models={$models}" run.overwrite=true
echo "[ptx_sweep] report: $OUT/eval/report.md"
