"""Checkpoints under ZeRO-3 with 2 processes: a resumable DeepSpeed checkpoint (every rank's shard) reloads and the
resumed run ends where the uninterrupted one did; the consolidated model (gathered on rank 0) loads with plain
transformers, without DeepSpeed, and reproduces the outputs the ZeRO-3 engine computed during the run."""

from __future__ import annotations

import glob
import json
import os
import sys

import pytest
import torch

from . import runner as R
from .conftest import metrics, summary

pytestmark = pytest.mark.distributed


def test_zero3_checkpoint_reloads_and_resumes(zero_run, request, tmp_path, micro_model_config):
    first, _ = zero_run("pretrain", 3, request)  # 4 steps, checkpoints at steps 2 and 4
    ckpt = os.path.join(first, "checkpoints", "step-2")
    with open(os.path.join(ckpt, "state.json")) as f:
        assert json.load(f)["world_size"] == 2
    for kind in ("model_states", "optim_states"):  # each rank's partition of weights and optimizer state
        assert len(glob.glob(os.path.join(ckpt, "model", f"zero_pp_rank_*_mp_rank_00_{kind}.pt"))) == 2, kind

    resumed = str(tmp_path / "resumed")
    log = R.run_stage("pretrain", "configs/tiny/pretrain.yaml",
                      [*R.pretrain_args(resumed, micro_model_config), "deepspeed.zero_stage=3", f"run.resume={ckpt}"])
    assert f"resuming from {ckpt}" in log
    diff, _, where = R.max_weight_diff(first, resumed)
    assert diff <= 1e-6, f"resumed run differs by {diff:.3g} at {where}"
    a, b = metrics(first), metrics(resumed)
    assert [r["step"] for r in b] == [3, 4]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a[2:]], abs=1e-6)


def test_consolidated_zero3_model_loads_without_deepspeed(zero_run, request, tmp_path):
    out, _ = zero_run("pretrain", 3, request)
    # the blocks the engine measured train_loss on (the stage's first 64 training blocks)
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from rlhf.data.text import tokenize_blocks

    blocks = tokenize_blocks(AutoTokenizer.from_pretrained(out), ["data/pretrain/passages.txt"], 64)[:64]
    save_file({"blocks": blocks.contiguous()}, str(tmp_path / "blocks.safetensors"))
    script = f"""
import sys
sys.modules["deepspeed"] = None  # importing deepspeed now fails: nothing below may need it
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({out!r}).eval()
x = load_file({str(tmp_path / "blocks.safetensors")!r})["blocks"]
total = 0.0
with torch.no_grad():
    for i in range(0, len(x), 4):
        logits = model(input_ids=x[i : i + 4]).logits[:, :-1].float()
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[i : i + 4, 1:].reshape(-1),
                                                   reduction="sum").item()
print("LOSS", total / x[:, 1:].numel())
"""
    log = R.run([sys.executable, "-c", script], timeout=300)
    loss = float(log.split("LOSS")[-1])
    assert loss == pytest.approx(summary(out)["train_loss"], abs=1e-5), "plain model != ZeRO-3 engine"


def test_consolidated_zero3_sft_model_matches_the_engine(zero_run, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.data.formats import load_categories
    from rlhf.data.sft import SFTCollator, load_sft_or_raise
    from rlhf.eval.perplexity import completion_loss
    from rlhf.stages.sft import split_holdout

    out, _ = zero_run("sft", 3, request)  # saved by HF's Trainer (accelerate launch, ZeRO-3)
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    _, enc = load_sft_or_raise("data/palms/values_targeted.jsonl", tok,
                               load_categories("data/palms/categories.yaml"), 512, "error")
    _, held = split_holdout(enc, 0.1, 0)  # configs/tiny/sft.yaml: seed 0
    loss = completion_loss(model, held, SFTCollator(tok.pad_token_id), 4)
    assert loss == pytest.approx(summary(out)["heldout_loss_after"], abs=1e-5)


def test_consolidated_zero3_reward_model_matches_the_engine(zero_run, request, dist_data):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.data.formats import load_categories
    from rlhf.data.preference import load_preferences
    from rlhf.stages.rm import pair_rewards

    out, _ = zero_run("rm", 3, request)
    model, tok = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    _, enc = load_preferences(dist_data["pairs"], tok, load_categories("data/palms/categories.yaml"), 512, "error")
    chosen, rejected = pair_rewards(model, enc, tok.pad_token_id, 8, "cpu")
    with open(os.path.join(out, "test_scores.jsonl")) as f:
        engine = [json.loads(x) for x in f]  # raw scores the ZeRO-3 engine gave the same pairs
    assert chosen == pytest.approx([r["chosen"] for r in engine], abs=1e-4)
    assert rejected == pytest.approx([r["rejected"] for r in engine], abs=1e-4)


def test_consolidated_zero3_ppo_models_match_the_engine(zero_run, request, dist_data):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.data.text import tokenize_blocks
    from rlhf.eval.perplexity import lm_loss

    out, _ = zero_run("ppo", 3, request)
    actor, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    blocks = tokenize_blocks(tok, dist_data["text"], 128)  # configs/tiny/ppo.yaml: ptx_block_size 128
    assert lm_loss(actor, blocks, 2) == pytest.approx(summary(out)["ptx_heldout_loss_end"], abs=1e-5)
    critic = AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "critic"))
    x = blocks[:2, :16]
    with torch.no_grad():
        assert torch.isfinite(critic(input_ids=x).logits).all()


@pytest.mark.slow
def test_zero3_ppo_checkpoint_resumes(zero_run, request, ref_sft, ref_rm, dist_data, tmp_path):
    first, _ = zero_run("ppo", 3, request)  # 2 iterations, a checkpoint after each
    resumed = str(tmp_path / "resumed")
    ckpt = os.path.join(first, "checkpoints", "step-1")
    log = R.run_stage("ppo", "configs/tiny/ppo.yaml", [*R.ppo_args(resumed, ref_sft, ref_rm, dist_data["text"]),
                                                       "deepspeed.zero_stage=3", f"run.resume={ckpt}"])
    assert f"resuming from {ckpt}" in log
    for sub in ("", "critic"):
        diff, _, where = R.max_weight_diff(os.path.join(first, sub), os.path.join(resumed, sub))
        assert diff <= 1e-6, f"{sub or 'actor'}: {diff:.3g} at {where}"
    assert [r["step"] for r in metrics(resumed)] == [2]
    assert metrics(resumed)[0]["score_mean"] == pytest.approx(metrics(first)[1]["score_mean"], abs=1e-6)


@pytest.mark.slow
def test_zero3_hf_trainer_checkpoint_resumes(zero_run, request, ref_pretrain, tmp_path):
    straight, _ = zero_run("sft", 3, request)  # 3 steps without an intermediate checkpoint
    first, resumed = str(tmp_path / "first"), str(tmp_path / "resumed")
    R.run_stage("sft", "configs/tiny/sft.yaml", [*R.sft_args(first, ref_pretrain), "deepspeed.zero_stage=3",
                                                 "run.save_steps=2"])
    ckpt = os.path.join(first, "checkpoints", "checkpoint-2")
    assert os.path.exists(os.path.join(ckpt, "COMPLETE"))
    log = R.run_stage("sft", "configs/tiny/sft.yaml", [*R.sft_args(resumed, ref_pretrain), "deepspeed.zero_stage=3",
                                                       f"run.resume={ckpt}"])
    assert f"resuming from {ckpt}" in log
    diff, _, where = R.max_weight_diff(straight, resumed)
    assert diff <= 1e-6, f"{diff:.3g} at {where}"


@pytest.mark.slow
def test_resume_needs_the_world_size_that_wrote_the_checkpoint(zero_run, request, micro_model_config, tmp_path):
    first, _ = zero_run("pretrain", 3, request)
    ckpt = os.path.join(first, "checkpoints", "step-2")
    with pytest.raises(AssertionError, match="written by 2 processes; resume it with the same number"):
        R.run_stage("pretrain", "configs/tiny/pretrain.yaml",
                    [*R.pretrain_args(str(tmp_path / "one"), micro_model_config), "deepspeed.zero_stage=3",
                     f"run.resume={ckpt}"], nproc=1, launcher="single")
