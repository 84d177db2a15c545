"""PPO-ptx stage on the micro default: learning with a rule-based reward, KL control by beta, ptx keeps
pretraining loss lower, the trained reward model's score rises on held-out prompts, and exact resume."""

from __future__ import annotations

import json
import os

import pytest

import rlhf.engine as E
from rlhf.config import PPOStageConfig, load_config
from rlhf.stages import ppo

from .conftest import ROOT
from .test_stages_pretrain_sft import assert_same_weights


def ppo_cfg(out, sft_dir, critic_dir, *extra):
    return load_config(
        PPOStageConfig,
        os.path.join(ROOT, "configs/tiny/ppo.yaml"),
        [
            f"run.output_dir={out}", f"model.name_or_path={sft_dir}", "run.progress=false",
            "reward.model=", "reward.function=tests.rewards:supportive_words", f"critic.model={critic_dir}",
            "ppo.missing_eos_score=-0.5",
            "data.heldout_prompt_file=", "data.ptx_eval_file=data/pretrain/heldout.txt",
            "ppo.rollout_batch_size=16", "ppo.mini_batch_size=8", "ppo.ppo_epochs=2", "deepspeed.micro_batch_size=8",
            "generation.max_new_tokens=24", "ppo.ptx_coef=0", "ppo.sample_every=1000", "run.save_steps=1000",
            *extra,
        ],
    )


def metrics(out):
    return [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]


def first_last(rows, key, k=5):
    return sum(r[key] for r in rows[:k]) / k, sum(r[key] for r in rows[-k:]) / k


@pytest.fixture(scope="module")
def keyword_runs(tmp_path_factory, micro_sft, micro_rm):
    """The same seed with a small and a large beta, rule-based reward."""
    outs = {}
    for beta in (0.01, 0.5):
        out = str(tmp_path_factory.mktemp(f"ppo_beta{beta}"))
        ppo.run(ppo_cfg(out, micro_sft, micro_rm, "ppo.iterations=30", f"ppo.kl_coef={beta}",
                        "train.learning_rate=3e-4", "critic.learning_rate=1e-3"))
        outs[beta] = out
    return outs


def test_rule_based_reward_rises_while_kl_stays_bounded(keyword_runs):
    rows = metrics(keyword_runs[0.01])
    # the reward: the rule's score, replaced by missing_eos_score when the response does not end with EOS
    start, end = first_last(rows, "reward_mean")
    assert end > start + 0.25, (start, end)
    assert all(r["kl"] < 50 for r in rows), "KL ran away"
    for key in ("policy_loss", "value_loss", "policy_clipfrac", "value_clipfrac", "approx_kl", "entropy",
                "response_length", "eos_rate", "beta", "time_generation", "time_forward", "time_train", "tokens_per_s"):
        assert key in rows[-1], key


def test_larger_beta_ends_with_lower_kl(keyword_runs):
    _, kl_small = first_last(metrics(keyword_runs[0.01]), "kl")
    _, kl_large = first_last(metrics(keyword_runs[0.5]), "kl")
    assert kl_large < kl_small, (kl_large, kl_small)


def test_ptx_keeps_pretraining_loss_lower(tmp_path, micro_sft, micro_rm):
    ends = {}
    for coef in (0.0, 1.0):
        out = str(tmp_path / f"ptx{coef}")
        s = ppo.run(ppo_cfg(out, micro_sft, micro_rm, "ppo.iterations=12", f"ppo.ptx_coef={coef}",
                            "train.learning_rate=3e-4"))
        ends[coef] = s["ptx_heldout_loss_end"]
        assert s["ptx_heldout_loss_start"] > 0
    assert ends[1.0] < ends[0.0], ends


def test_trained_reward_model_score_rises_on_heldout_prompts(tmp_path, micro_sft, micro_rm):
    out = str(tmp_path / "rm_ppo")
    s = ppo.run(ppo_cfg(out, micro_sft, "", "reward.function=", f"reward.model={micro_rm}", "critic.model=",
                        "data.heldout_prompt_file=data/prompts/test.jsonl", "ppo.iterations=25",
                        "train.learning_rate=3e-4", "critic.learning_rate=1e-3", "ppo.missing_eos_score=-3"))
    assert s["heldout_reward_final"] > s["heldout_reward_start"], s
    # the gold stand-in (configs/tiny/ppo.yaml: ppo.gold_rubric) is logged beside the proxy at every iteration
    gold = [r["gold_rubric_mean"] for r in metrics(out)]
    assert len(gold) == 25 and all(1.0 <= g <= 5.0 for g in gold) and len(set(gold)) > 1, gold
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    AutoModelForCausalLM.from_pretrained(out)
    AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "critic"))


def test_ppo_resume_matches_uninterrupted_run(tmp_path, micro_sft, micro_rm, monkeypatch):
    args = ("ppo.iterations=4", "run.save_steps=2", "ppo.ptx_coef=0.5", "ppo.ema_decay=0.9", "ppo.adaptive_kl=true",
            "ppo.kl_target=1.0")
    from .resume import resume_matches_straight

    reports = []

    def run(cfg):  # records the progress reports of each run; the resumed one's are checked
        reports.clear()
        previous = E.set_progress_hook(lambda done, total, unit: reports.append((done, total, unit)))
        try:
            return ppo.run(cfg)
        finally:
            E.set_progress_hook(previous)

    straight, resumed, _ = resume_matches_straight(run, lambda out: ppo_cfg(out, micro_sft, micro_rm, *args), tmp_path,
                                                   monkeypatch, 2)
    assert reports == [(3, 4, "iteration"), (4, 4, "iteration")]  # the resumed run reports from where it resumed
    assert_same_weights(os.path.join(straight, "critic"), os.path.join(resumed, "critic"))
    assert_same_weights(os.path.join(straight, "ema"), os.path.join(resumed, "ema"))
    a, b = metrics(straight), metrics(resumed)
    assert [r["beta"] for r in a] == pytest.approx([r["beta"] for r in b])


def test_reward_function_must_be_an_import_path(tmp_path, micro_sft, micro_rm):
    from rlhf.config import ConfigError

    with pytest.raises(ConfigError, match="package.module:function"):
        ppo_cfg(str(tmp_path), micro_sft, micro_rm, "reward.function=not_a_path")
    cfg = ppo_cfg(str(tmp_path / "x"), micro_sft, micro_rm, "reward.function=rlhf.rewards:nope")
    with pytest.raises(AttributeError, match="no callable 'nope'"):
        ppo.run(cfg)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_minibatches_are_the_same_episodes_at_any_world_size(world):
    one = ppo.minibatch_indices(seed=3, it=5, epoch=1, rollout=16, mini=8, world=1, rank=0)
    shares = [ppo.minibatch_indices(3, 5, 1, 16, 8, world, r) for r in range(world)]
    for k, episodes in enumerate(one):
        assert all(len(s[k]) == 8 // world for s in shares)
        assert sorted(i for s in shares for i in s[k]) == sorted(episodes)  # minibatch k: the same set
    assert sorted(i for mb in one for i in mb) == list(range(16))  # each epoch visits every episode once
    assert one != ppo.minibatch_indices(3, 5, 2, 16, 8, 1, 0)  # a new order every epoch


@pytest.mark.parametrize("world, grad_accum", [(2, 2), (4, 1)])
def test_ptx_blocks_of_a_step_are_the_same_at_any_world_size(world, grad_accum):
    import torch

    from rlhf.data.order import PtxSampler

    blocks = torch.arange(10 * 3).view(10, 3)  # 10 blocks of 3 tokens; row i starts with 3 * i
    one = PtxSampler(blocks, batch_size=3, world=1, grad_accum=4)
    many = PtxSampler(blocks, batch_size=3, world=world, grad_accum=grad_accum)
    for step in range(4):
        alone = [i for a in range(4) for i in one.indices(step, 0, a)]
        # by hand: 4 micro-slots x 3 blocks per step, consecutive, cycling through the 10 blocks
        assert alone == [(step * 12 + j) % 10 for j in range(12)]
        spread = [i for r in range(world) for a in range(grad_accum) for i in many.indices(step, r, a)]
        assert spread == alone  # slot q = rank * grad_accum + micro reads the same blocks
    assert one.batch(0, 0, 1)[:, 0].tolist() == [9, 12, 15]  # blocks 3, 4, 5
