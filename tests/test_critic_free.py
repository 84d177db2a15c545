"""Critic-free advantage estimators (ppo.advantage_estimator: rloo | grpo): the estimators against hand
computations and a loop reference, the config's refusals, and the PPO stage run with each on the micro model."""

from __future__ import annotations

import math
import os

import pytest
import torch

from rlhf.algos.critic_free import grpo_advantages, grpo_loss, rloo_advantages
from rlhf.config import ConfigError, PPOStageConfig, load_config
from rlhf.data.order import grouped
from rlhf.stages import ppo

from .conftest import ROOT
from .resume import resume_matches_straight
from .test_ppo import first_last, metrics, ppo_cfg

# ----------------------------------------------------------------------------------------------------------
# The estimators by hand
# ----------------------------------------------------------------------------------------------------------


def test_rloo_baseline_is_the_mean_of_the_other_responses():
    # group 1: baselines (2+3)/2, (1+3)/2, (1+2)/2 = 2.5, 2, 1.5; group 2 all equal: every advantage 0
    adv = rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), k=3)
    assert adv.tolist() == pytest.approx([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0])
    # the closed form k/(k-1) * (r - group mean), on a group of 4
    r = torch.tensor([0.3, -1.2, 2.0, 0.1])
    assert rloo_advantages(r, 4).tolist() == pytest.approx((4 / 3 * (r - r.mean())).tolist(), abs=1e-6)


def test_grpo_advantage_is_the_score_normalised_within_its_group():
    adv = grpo_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0, 7.0, 7.0, 7.0, 7.0]), k=4)
    # group 1: mean 2, std with Bessel's correction sqrt((1 + 1 + 0 + 0) / 3)
    std = math.sqrt(2 / 3)
    assert adv[:4].tolist() == pytest.approx([-1 / (std + 1e-4), 1 / (std + 1e-4), 0.0, 0.0], rel=1e-6)
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # equal scores: no signal, not a division by zero


@pytest.mark.parametrize("fn", [rloo_advantages, grpo_advantages])
def test_a_group_of_one_or_a_split_group_is_refused(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(torch.ones(4), 1)
    with pytest.raises(ValueError, match="groups of 3"):
        fn(torch.ones(4), 3)


def test_grpo_loss_matches_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    B, T, clip, beta = 6, 5, 0.2, 0.04
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g)  # ratios inside and outside the clip range
    ref = logp + 0.5 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    lengths = [5, 3, 1, 4, 5, 2]
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths])
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip, beta)

    total, clipped_tokens = 0.0, 0
    for i in range(B):
        seq = 0.0
        for t in range(lengths[i]):
            ratio = math.exp(logp[i, t] - old[i, t])
            a = float(adv[i])
            surrogate = min(ratio * a, min(max(ratio, 1 - clip), 1 + clip) * a)
            d = float(ref[i, t] - logp[i, t])
            kl = math.exp(d) - d - 1
            seq += -surrogate + beta * kl
            clipped_tokens += min(max(ratio, 1 - clip), 1 + clip) * a < ratio * a
        total += seq / lengths[i]
    assert loss.item() == pytest.approx(total / B, rel=1e-5)
    assert stats["policy_clipfrac"].item() == pytest.approx(clipped_tokens / sum(lengths))


def test_grpo_loss_gradient_ignores_padding():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, _ = grpo_loss(logp, torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask, 0.2, 0.1)
    loss.backward()
    assert logp.grad[0, 2] == 0 and logp.grad[1, 1] == 0 and logp.grad[1, 2] == 0
    # ratio 1, KL 0 and its gradient 0 at logp = ref: d/dlogp of -A * ratio / |o_i| / B
    assert logp.grad[0, 0].item() == pytest.approx(-1.0 / 2 / 2) and logp.grad[1, 0].item() == pytest.approx(1.0 / 2)


def test_rloo_reward_carries_the_kl_penalty_and_grpo_keeps_it_out():
    scores = torch.tensor([1.0, 1.0])
    kl = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])  # the first response drifted from the reference
    adv, non_score = ppo.critic_free_advantages("rloo", scores, kl, beta=1.0, k=2)
    assert adv.tolist() == pytest.approx([-1.0, 1.0]) and non_score.sum().item() == pytest.approx(-1.0)
    adv, non_score = ppo.critic_free_advantages("grpo", scores, kl, beta=1.0, k=2)
    assert adv.tolist() == [0.0, 0.0] and non_score.abs().sum() == 0


def test_a_rollout_answers_each_prompt_k_times_in_a_row():
    assert grouped([4, 1, 7], 3) == [4, 4, 4, 1, 1, 1, 7, 7, 7]
    assert grouped([4, 1], 1) == [4, 1]


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------


def cfg_with(*overrides):
    return load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"), list(overrides))


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_k_1_is_refused_naming_the_key(estimator):
    with pytest.raises(ConfigError, match=r"ppo\.samples_per_prompt.*at least 2 per prompt") as e:
        cfg_with(f"ppo.advantage_estimator={estimator}")
    assert e.value.key == "ppo.samples_per_prompt"
    cfg_with(f"ppo.advantage_estimator={estimator}", "ppo.samples_per_prompt=4")  # accepted


def test_a_group_must_divide_the_rollout():
    with pytest.raises(ConfigError, match=r"ppo\.samples_per_prompt.*divide rollout_batch_size"):
        cfg_with("ppo.advantage_estimator=grpo", "ppo.samples_per_prompt=3", "ppo.rollout_batch_size=16")


def test_groups_cannot_straddle_processes():
    cfg = cfg_with("ppo.advantage_estimator=grpo", "ppo.samples_per_prompt=8", "ppo.rollout_batch_size=8",
                   "ppo.mini_batch_size=4")
    assert ppo.batch_sizes(cfg, 1).prompts == 1
    with pytest.raises(ValueError, match="samples_per_prompt: 8 responses per prompt do not divide the 4 episodes"):
        ppo.batch_sizes(cfg, 2)


# ----------------------------------------------------------------------------------------------------------
# The stage on the micro model
# ----------------------------------------------------------------------------------------------------------


def free_cfg(out, micro_sft, estimator, *extra):
    return ppo_cfg(out, micro_sft, "", f"ppo.advantage_estimator={estimator}", "ppo.samples_per_prompt=4", *extra)


# RLOO's learning run is slow (left out of the default suite to keep it short); GRPO's runs by default
@pytest.mark.parametrize("estimator", [pytest.param("rloo", marks=pytest.mark.slow), "grpo"])
def test_critic_free_estimator_raises_a_rule_based_reward_without_a_critic(tmp_path, micro_sft, estimator):
    """As the GAE test in test_ppo: the reward PPO optimises (the rule's score, replaced by missing_eos_score when a
    response does not end with EOS) rises over 12 iterations."""
    out = str(tmp_path / estimator)
    summary = ppo.run(free_cfg(out, micro_sft, estimator, "ppo.iterations=12", "ppo.kl_coef=0.01",
                               "train.learning_rate=1e-3"))
    rows = metrics(out)
    start, end = first_last(rows, "reward_mean", k=3)
    assert end > start + 0.15, (start, end)
    assert not os.path.exists(os.path.join(out, "critic")), "a critic-free run saved a critic"
    assert "value_loss" not in rows[-1] and summary["advantage_estimator"] == estimator
    ckpt = os.path.join(out, "checkpoints")
    assert not any("critic" in f for _, _, files in os.walk(ckpt) for f in files)
    if estimator == "grpo":
        assert "kl_loss_term" in rows[-1]


def test_grpo_resume_matches_uninterrupted_run(tmp_path, micro_sft, monkeypatch):
    args = ("ppo.iterations=4", "run.save_steps=2", "ppo.ptx_coef=0.5")  # with the ptx term
    straight, resumed, _ = resume_matches_straight(
        ppo.run, lambda out: free_cfg(out, micro_sft, "grpo", *args), tmp_path, monkeypatch, 2)
    a, b = metrics(straight), metrics(resumed)
    assert [r["policy_loss"] for r in a] == pytest.approx([r["policy_loss"] for r in b], rel=1e-6)


@pytest.mark.slow
def test_rloo_with_lora_and_a_reward_model(tmp_path, micro_sft, micro_rm):
    """LoRA: the reference is the actor with its adapters off; the reward model's scores are normalised as in PPO."""
    out = str(tmp_path / "rloo_lora")
    ppo.run(ppo_cfg(out, micro_sft, "", "reward.function=", f"reward.model={micro_rm}", "ppo.advantage_estimator=rloo",
                    "ppo.samples_per_prompt=2", "ppo.iterations=2", "lora.enabled=true", "train.learning_rate=1e-3"))
    rows = metrics(out)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # adapters start at zero: actor == reference
    assert rows[1]["kl"] != 0.0  # and the update moved the actor away from it
    assert os.path.exists(os.path.join(out, "adapter")) and not os.path.exists(os.path.join(out, "critic"))
