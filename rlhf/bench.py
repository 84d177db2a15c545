"""``rlhf bench ppo CONFIG [overrides] [--iterations N]``: where the time of a PPO iteration goes on this hardware.

Runs the PPO stage for a fixed number of iterations into a temporary directory (nothing of the user's run is
touched), then prints the phase breakdown (generation; reward/reference/value forward passes; training) and
tokens per second, measured side by side in one run. The first iteration is reported separately and left out
of the means (it pays for start-up costs).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from rlhf.config import PPOStageConfig, load_config

PHASES = (("generation", "time_generation"), ("score + reference + value forward", "time_forward"),
          ("training (PPO epochs, ptx)", "time_train"))


def phase_table(rows: list[dict]) -> str:
    """A text table of mean seconds per phase over ``rows`` (metrics.jsonl lines)."""
    n = len(rows)
    total = sum(r["time_iteration"] for r in rows) / n
    lines = [f"{'phase':<36} {'s/iteration':>12} {'share':>7}"]
    accounted = 0.0
    for label, key in PHASES:
        mean = sum(r[key] for r in rows) / n
        accounted += mean
        lines.append(f"{label:<36} {mean:>12.3f} {100 * mean / total:>6.1f}%")
    other = total - accounted
    lines.append(f"{'other (metrics, checkpoint, samples)':<36} {other:>12.3f} {100 * other / total:>6.1f}%")
    lines.append(f"{'total':<36} {total:>12.3f} {100.0:>6.1f}%")
    tps = sum(r["tokens_per_s"] for r in rows) / n
    gtps = sum(r["generation_tokens_per_s"] for r in rows) / n
    lines.append(f"response tokens/s: {tps:.1f} overall, {gtps:.1f} during generation; "
                 f"mean response length {sum(r['response_length'] for r in rows) / n:.1f} tokens")
    return "\n".join(lines)


def bench_ppo(config: str, overrides: list[str], iterations: int = 5) -> dict:
    from rlhf.stages import ppo

    with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
        cfg = load_config(
            PPOStageConfig, config,
            [*overrides, f"run.output_dir={tmp}", f"ppo.iterations={iterations}", "run.resume=never",
             f"run.save_steps={10**9}", f"ppo.sample_every={10**9}", "data.heldout_prompt_file=",
             "data.ptx_eval_file=", "run.progress=false"],
        )
        t0 = time.time()
        ppo.run(cfg)
        wall = time.time() - t0
        with open(os.path.join(tmp, "metrics.jsonl")) as f:
            rows = [json.loads(x) for x in f]
    steady = rows[1:] if len(rows) > 1 else rows
    print(f"\n[bench] PPO, {iterations} iterations of {cfg.ppo.rollout_batch_size} episodes "
          f"(max {cfg.generation.max_new_tokens} new tokens), ZeRO-{cfg.deepspeed.zero_stage}, "
          f"{cfg.deepspeed.precision}; first iteration {rows[0]['time_iteration']:.2f} s, wall {wall:.1f} s")
    print(phase_table(steady))
    return {"rows": rows, "wall_s": wall}


def main(args) -> int:
    bench_ppo(args.config, args.overrides, args.iterations)
    return 0
