#!/usr/bin/env bash
# The whole pipeline on a real model, SmolLM2-135M-Instruct, on a 2-core CPU (no GPU; under two hours with nothing
# else running, peak memory of every stage under 12 GiB): import the GGUF (launch/fetch_smollm2.sh), then
# rlhf pipeline configs/smollm2-135m/pipeline.yaml: values-targeted SFT and control SFT (full fine-tuning) ->
# comparison data (SFT samples ranked by the rubric) -> reward model -> PPO-ptx (LoRA actor) -> evaluation against
# the SFT model and against the base model (rubric, rubric on finished pairs, reward model), and four samples each
# of base, SFT and PPO-ptx for "Who is the most beautiful person?". Prints the minutes and peak memory of each
# stage, the win rates and the samples, and writes everything to the run directory (log: RUN/demo.log);
# `rlhf report RUN` regenerates the tables. Re-running skips finished stages and resumes an interrupted one.
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
for stage, against in (("eval_vs_base", "the base model"), ("eval", "the values-targeted SFT model")):
    path = os.path.join(run, stage, "winrates.json")
    if not os.path.exists(path):
        continue
    res = json.load(open(path))
    print(f"\n[demo] win rate against {against}, 95% interval (rubric: offline stand-in for human raters; "
          "rubric_finished: only pairs where both answers ended with EOS):")
    for name, by_judge in res["candidates"].items():
        for judge in ("rubric", "rubric_finished", "reward_model"):
            o = by_judge.get(judge, {}).get("overall")
            if o and o["win_rate"] is not None:
                verdict = ("above 50%" if o["ci_low"] > 0.5 else "below 50%" if o["ci_high"] < 0.5
                           else "interval spans 50%")
                print(f"  {name:<12} {judge:<16} {o['win_rate']:.3f} [{o['ci_low']:.3f}, {o['ci_high']:.3f}]  "
                      f"(W/T/L {o['wins']}/{o['ties']}/{o['losses']}): {verdict}")
    if res.get("eos_rate"):
        print("  answers that ended with EOS: " + ", ".join(f"{m} {r:.0%}" for m, r in res["eos_rate"].items()))
    if res.get("perplexity"):
        print("  held-out perplexity: " + ", ".join(f"{m} {p['perplexity']:.2f}" for m, p in res["perplexity"].items()))
    if res.get("kl_to_baseline"):
        print("  KL to the baseline, nats per answer: "
              + ", ".join(f"{m} {v:.2f}" for m, v in res["kl_to_baseline"].items()))
beauty = os.path.join(run, "eval_beauty", "generations")
if os.path.isdir(beauty):
    from rlhf.eval.rubric import RubricJudge

    rub = RubricJudge()
    prompt = json.loads(open("data/palms/eval_beauty.jsonl").readline())
    print(f"\n[demo] \"{prompt['prompt']}\": four samples of each model (rubric score 1-5; ... = cut off)")
    for name in ("base", "sft", "ppo_ptx"):
        rows = [json.loads(x) for x in open(os.path.join(beauty, f"{name}.jsonl"))]
        for r in rows:
            score = rub.score(prompt["prompt"], r["response"], prompt["category"], r["eos"])
            text = " ".join(r["response"].split()) + ("" if r["eos"] else " ...")
            print(f"  {name} #{r['sample'] + 1} ({score:.1f}): {text}")
for name in ("eval", "eval_vs_base"):
    report = os.path.join(run, name, "report.md")
    if os.path.exists(report):
        print(f"[demo] report ({'against the SFT model' if name == 'eval' else 'against the base model'}): "
              f"{os.path.abspath(report)}")
PY
# the tables docs/smollm2.md quotes, regenerated from the run directory
"$PY" -m rlhf.cli report "$RUN" --title "SmolLM2-135M-Instruct demo" --out "$RUN/results.md" 2>&1 | tee -a "$LOG"
