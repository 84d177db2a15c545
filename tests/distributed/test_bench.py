"""``rlhf bench zero`` starts its own 2-process jobs and prints its tables (figures only; nothing is timed here)."""

from __future__ import annotations

import re
import sys

import pytest

from . import runner as R

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_bench_zero_prints_generation_and_memory_tables(ref_sft, ref_rm):
    log = R.run([sys.executable, "-m", "rlhf.cli", "bench", "zero", "configs/tiny/ppo.yaml",
                 f"model.name_or_path={ref_sft}", f"reward.model={ref_rm}", "ppo.rollout_batch_size=8",
                 "ppo.mini_batch_size=4", "deepspeed.micro_batch_size=2", "generation.max_new_tokens=8",
                 "data.ptx_files=[data/pretrain/passages.txt]", "--iterations", "2", "--stages", "0,3"],
                timeout=1200)
    assert "gathered once per rollout" in log and "gathered per layer, per token" in log
    assert re.search(r"per-layer / once: \d+\.\d+x the time", log)
    for stage in (0, 3):
        row = rf"ZeRO-{stage}\s+(\d)\s+(\d+)\s+(-?\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$"
        rows = re.findall(row, log, re.M)
        assert [r[0] for r in rows] == ["0", "1"] and all(int(r[1]) > 0 for r in rows), log[-2000:]
        for _, _, grown, _, plan_states, plan_peak, ratio in rows:  # rlhf plan's estimate beside the measured peak
            assert 0 < float(plan_states) <= float(plan_peak)
            assert float(ratio) == pytest.approx(int(grown) / float(plan_peak), abs=0.02)


def test_bench_estimators_prints_time_and_memory_for_each_estimator(ref_sft, ref_rm):
    log = R.run([sys.executable, "-m", "rlhf.cli", "bench", "estimators", "configs/tiny/ppo.yaml",
                 f"model.name_or_path={ref_sft}", f"reward.model={ref_rm}", "ppo.rollout_batch_size=8",
                 "ppo.mini_batch_size=4", "deepspeed.micro_batch_size=2", "generation.max_new_tokens=8",
                 "data.ptx_files=[data/pretrain/passages.txt]", "--iterations", "2", "--samples-per-prompt", "2"],
                timeout=1200)
    assert "2 samples per prompt" in log and "ratios against gae" in log
    rows = re.findall(r"^(gae|rloo|grpo)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+)\s+(-?\d+)\s+(\d+\.\d+)\s+", log, re.M)
    assert [r[0] for r in rows] == ["gae", "rloo", "grpo"], log[-2000:]
    assert float(rows[0][5]) == 1.0 and all(int(r[3]) > 0 for r in rows)
