"""The GPU suite, for the first machine with CUDA GPUs: ``pytest -m gpu`` (or ``bash launch/test_gpu.sh``).

- every stage (pretrain, SFT, reward model, DPO, PPO-ptx) trains a few steps in bf16 on one GPU, in this process,
  with DeepSpeed's bf16 (``deepspeed.precision=bf16 model.dtype=bfloat16``): finite losses, a written summary, and
  GPU memory actually used;
- the 2-GPU ZeRO-3 parity of every stage on NCCL: two processes end with the weights of one process at the same
  global batch (fp32; the tolerance of tests/distributed/runner.py).

Without a GPU every test skips with one line saying so; the default CPU suite leaves the ``gpu`` marker out. This
suite has not yet run on a GPU (README, docs/testing.md)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from . import runner as R

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
pytestmark = [pytest.mark.gpu, pytest.mark.distributed,
              pytest.mark.skipif(GPUS == 0, reason="no CUDA GPU on this machine: the GPU suite needs one")]
STAGES = ("pretrain", "sft", "rm", "dpo", "ppo")
BF16 = ["deepspeed.precision=bf16", "model.dtype=bfloat16"]


def stage_args(stage: str, out: str, request, model_config: str, data: dict) -> list[str]:
    ref = lambda name: request.getfixturevalue(f"ref_{name}")  # noqa: E731 - the CPU references as inputs
    return {
        "pretrain": lambda: R.pretrain_args(out, model_config),
        "sft": lambda: R.sft_args(out, ref("pretrain")),
        "rm": lambda: R.rm_args(out, ref("pretrain"), data["pairs"]),
        "dpo": lambda: R.dpo_args(out, ref("sft"), data["pairs"]),
        "ppo": lambda: R.ppo_args(out, ref("sft"), ref("rm"), data["text"]),
    }[stage]()


@pytest.mark.parametrize("stage", STAGES)
def test_stage_trains_in_bf16_on_one_gpu(stage, request, tmp_path, micro_model_config, dist_data, monkeypatch):
    from rlhf.config import STAGES, load_config
    from rlhf.stages import run_stage

    monkeypatch.chdir(R.ROOT)
    out = str(tmp_path / stage)
    args = [*stage_args(stage, out, request, micro_model_config, dist_data), *BF16]
    torch.cuda.reset_peak_memory_stats()
    run_stage(stage, load_config(STAGES[stage], f"configs/tiny/{stage}.yaml", args))
    assert torch.cuda.max_memory_allocated() > 0, f"{stage} ran without touching the GPU"
    summary = json.load(open(os.path.join(out, "summary.json")))
    losses = [v for k, v in summary.items() if "loss" in k and isinstance(v, (int, float))]
    assert losses and all(math.isfinite(v) for v in losses), summary


@pytest.mark.skipif(GPUS < 2, reason=f"the 2-GPU parity tests need two CUDA GPUs (this machine has {GPUS})")
@pytest.mark.parametrize("stage", STAGES)
def test_two_gpus_match_one_under_zero3(stage, request, tmp_path, micro_model_config, dist_data):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    cfg = f"configs/tiny/{stage}.yaml"
    R.run_stage(stage, cfg, stage_args(stage, one, request, micro_model_config, dist_data), 1, "single")
    log = R.run_stage(stage, cfg, [*stage_args(stage, two, request, micro_model_config, dist_data),
                                   "deepspeed.zero_stage=3"], 2, "torchrun")
    assert "x world 2" in log, log[-3000:]
    for sub in (["", "critic"] if stage == "ppo" else [""]):
        diff, mean, where = R.max_weight_diff(os.path.join(one, sub), os.path.join(two, sub))
        assert diff <= R.ATOL and mean <= R.MEAN_ATOL, f"{stage}/{sub}: max {diff:.3g} at {where}, mean {mean:.3g}"
