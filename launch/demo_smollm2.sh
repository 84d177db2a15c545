#!/usr/bin/env bash
# The whole pipeline on a real model, SmolLM2-135M-Instruct, on a 2-core CPU (no GPU; about an hour with nothing
# else running, peak memory of every stage well under 12 GiB): import the GGUF (launch/fetch_smollm2.sh), then
# rlhf pipeline configs/smollm2-135m/pipeline.yaml: values-targeted SFT and control SFT (LoRA) -> reward model ->
# PPO-ptx and plain PPO (LoRA actors) -> evaluation against the SFT model (rubric, reward model, SmolLM2 itself as
# pairwise LLM judge) and against the base model. Prints the minutes and peak memory of each stage and the
# rubric win rates against the base model, and writes everything to the run directory (log: RUN/demo.log).
# Re-running skips finished stages and resumes an interrupted one.
# Usage: bash launch/demo_smollm2.sh        (RUN=runs/mine picks another run directory)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/smollm2-135m}
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, transformers, trl, peft, deepspeed" 2>/dev/null; then
  bash launch/install.sh   # a fresh machine: install the package and its dependencies first
fi
mkdir -p "$RUN"
LOG="$RUN/demo.log"
echo "[demo] $(date '+%F %T'); log: $LOG; load average now: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" | tee -a "$LOG"
t0=$SECONDS
bash launch/fetch_smollm2.sh runs/smollm2-135m/base 2>&1 | tee -a "$LOG"
echo "[demo] base model ready in $(( SECONDS - t0 )) s: runs/smollm2-135m/base" | tee -a "$LOG"
t1=$SECONDS
# python -m runs this checkout's rlhf (the current directory comes first on the module path)
"$PY" -m rlhf.cli pipeline configs/smollm2-135m/pipeline.yaml "run_dir=$RUN" 2>&1 | tee -a "$LOG"
echo "[demo] pipeline done in $(( (SECONDS - t1) / 60 )) min $(( (SECONDS - t1) % 60 )) s; whole demo $(( (SECONDS - t0) / 60 )) min" | tee -a "$LOG"
"$PY" - "$RUN" <<'PY' 2>&1 | tee -a "$LOG"
import json, os, sys

from rlhf.stages.pipeline import stage_table

run = sys.argv[1]
summary = json.load(open(os.path.join(run, "pipeline_summary.json")))
print("\n[demo] per stage: wall time and peak resident memory (RSS) of the process while the stage ran")
print(stage_table(summary["stages"]))
peaks = [t.get("earlier", t).get("peak_rss_gib") for t in summary["stages"].values()]
peaks = [p for p in peaks if p is not None]
if peaks:
    print(f"[demo] highest stage peak: {max(peaks):.2f} GiB ({'under' if max(peaks) < 12 else 'OVER'} 12 GiB)")
path = os.path.join(run, "eval_vs_base", "winrates.json")
if os.path.exists(path):
    res = json.load(open(path))
    print("\n[demo] rubric (offline stand-in for human raters), win rate against the base model, 95% interval:")
    for name in ("sft", "control_sft", "ppo", "ppo_ptx"):
        o = res["candidates"].get(name, {}).get("rubric", {}).get("overall")
        if o:
            verdict = "beats the base model" if o["ci_low"] > 0.5 else "not shown to beat the base model"
            print(f"  {name:<12} {o['win_rate']:.3f} [{o['ci_low']:.3f}, {o['ci_high']:.3f}]  "
                  f"(W/T/L {o['wins']}/{o['ties']}/{o['losses']}): {verdict}")
for name in ("eval", "eval_vs_base"):
    report = os.path.join(run, name, "report.md")
    if os.path.exists(report):
        print(f"[demo] report ({'against the SFT model' if name == 'eval' else 'against the base model'}): "
              f"{os.path.abspath(report)}")
PY
