"""bf16 on every stage, on one CPU process: each stage trains a few steps with ``deepspeed.precision=bf16
model.dtype=bfloat16`` and its losses stay close to the fp32 run of the same config (2-process ZeRO-3 in bf16:
tests/distributed/test_zero_equivalence.py).

Tolerance: bf16 keeps 8 bits of mantissa, a relative rounding of 2^-8 = 0.4% per operation; over the forward
passes of a few steps of the micro model the losses (about 8 nats at the start) agree to a few tenths of a percent.
Measured (commit of this test): 0.02% to 0.8%. ``REL`` = 3% leaves room for that and still fails a run that trains differently (a wrong dtype cast, a loss scaled
or a step skipped moves these losses by far more) or one that is not bf16 at all (checked separately: the
weights the stage wrote are bfloat16)."""

from __future__ import annotations

import json
import os

import pytest
from safetensors import safe_open

from rlhf.config import STAGES, load_config
from rlhf.stages import run_stage

from .conftest import ROOT

BF16 = ["deepspeed.precision=bf16", "model.dtype=bfloat16"]
REL = 0.03


def losses(out: str, key: str) -> list[float]:
    rows = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    return [r[key] for r in rows if key in r]


def dtypes(out: str) -> set[str]:
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}


def both(stage: str, tmp_path, args: list[str]) -> tuple[str, str]:
    os.chdir(ROOT)
    outs = []
    for name, extra in (("fp32", []), ("bf16", BF16)):
        out = str(tmp_path / name)
        cfg = load_config(STAGES[stage], os.path.join(ROOT, f"configs/tiny/{stage}.yaml"),
                          [f"run.output_dir={out}", "run.progress=false", *args, *extra])
        run_stage(stage, cfg)
        outs.append(out)
    return outs[0], outs[1]


def close(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b) and a, (a, b)
    print(f"bf16 vs fp32: largest relative difference {max(abs(y - x) / abs(x) for x, y in zip(a, b)):.2e}")
    assert b == pytest.approx(a, rel=REL), (a, b)
    assert a != b, "bf16 gave the fp32 numbers exactly: it did not run in bf16"


SMALL = ["deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=4", "train.warmup_steps=1"]


def test_pretrain_in_bf16(tmp_path, micro_model_config):
    fp32, bf16 = both("pretrain", tmp_path, [f"model.from_config={micro_model_config}", "train.max_steps=4",
                                            "data.eval_file=", "data.block_size=64", "run.logging_steps=1", *SMALL])
    close(losses(fp32, "loss"), losses(bf16, "loss"))
    assert dtypes(bf16) == {"BF16"} and dtypes(fp32) == {"F32"}


def test_sft_in_bf16(tmp_path, micro_base):
    fp32, bf16 = both("sft", tmp_path, [f"model.name_or_path={micro_base}", "train.max_steps=3", "run.logging_steps=1",
                                        *SMALL])
    a, b = (json.load(open(os.path.join(o, "summary.json"))) for o in (fp32, bf16))
    close([a["train_loss"], a["heldout_loss_after"]], [b["train_loss"], b["heldout_loss_after"]])
    # the logged gradient norm: fp32 ZeRO-0 reports the norm it clips with (DeepSpeed alone logs none); at the
    # first step, before any update, it agrees with the norm DeepSpeed's bf16 optimizer computes on its own
    g32, g16 = losses(fp32, "grad_norm"), losses(bf16, "grad_norm")
    assert len(g32) == len(g16) == 3 and all(g > 0 for g in g32), (g32, g16)
    assert g32[0] == pytest.approx(g16[0], rel=REL)
    assert dtypes(bf16) == {"BF16"}


def test_reward_model_in_bf16(tmp_path, micro_sft):
    fp32, bf16 = both("rm", tmp_path, [f"model.name_or_path={micro_sft}", "train.max_steps=3", "data.test_file=",
                                      "data.max_train_pairs=24", *SMALL])
    a, b = (json.load(open(os.path.join(o, "summary.json"))) for o in (fp32, bf16))
    close([a["train_loss"]], [b["train_loss"]])
    assert dtypes(bf16) == {"BF16"}


def test_dpo_in_bf16(tmp_path, micro_sft):
    fp32, bf16 = both("dpo", tmp_path, [f"model.name_or_path={micro_sft}", "train.max_steps=3", "data.test_file=",
                                       "data.max_train_pairs=24", "run.logging_steps=1", "train.learning_rate=1e-3",
                                       *SMALL])
    close(losses(fp32, "loss")[1:], losses(bf16, "loss")[1:])  # step 1 is log 2 in both
    assert dtypes(bf16) == {"BF16"}


def test_ppo_in_bf16(tmp_path, micro_sft, micro_rm):
    """Greedy rollouts of the same prompts; the pretraining loss of each iteration is on the same blocks."""
    fp32, bf16 = both("ppo", tmp_path, [
        f"model.name_or_path={micro_sft}", f"reward.model={micro_rm}", "critic.model=", "generation.do_sample=false",
        "generation.max_new_tokens=8", "ppo.iterations=2", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=4",
        "deepspeed.micro_batch_size=2", "data.heldout_prompt_file=", "data.ptx_eval_file=", "ppo.sample_every=1000"])
    close(losses(fp32, "ptx_loss"), losses(bf16, "ptx_loss"))
    assert dtypes(bf16) == {"BF16"}
