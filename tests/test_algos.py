"""rlhf.algos against hand computations, numpy, and naive loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhf.algos.advantages import gae, kl_per_token, masked_mean, masked_var, per_token_rewards, whiten
from rlhf.algos.kl_control import AdaptiveKLController, FixedKLController
from rlhf.algos.losses import policy_loss, ptx_loss, value_loss


def test_masked_mean_and_biased_var_match_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6], dtype=torch.float)
    vals = x[mask.bool()].numpy()
    assert masked_mean(x, mask).item() == pytest.approx(vals.mean(), abs=1e-6)
    assert masked_var(x, mask).item() == pytest.approx(vals.var(ddof=0), abs=1e-6)  # biased
    w = whiten(x, mask)
    ref = (vals - vals.mean()) / np.sqrt(vals.var() + 1e-8)
    np.testing.assert_allclose(w[mask.bool()].numpy(), ref, atol=1e-5)
    assert (w[~mask.bool()] == 0).all()
    keep = whiten(x, mask, shift_mean=False)
    np.testing.assert_allclose(keep[mask.bool()].numpy(), ref + vals.mean(), atol=1e-5)
    assert masked_mean(x, mask, dim=1)[1].item() == pytest.approx(x[1, :3].mean().item(), abs=1e-6)


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    lr = torch.tensor([0.5, -1.0])
    assert torch.allclose(kl_per_token(logp, ref, "k1"), lr)
    assert torch.allclose(kl_per_token(logp, ref, "k2"), 0.5 * lr**2)
    assert torch.allclose(kl_per_token(logp, ref, "k3"), torch.exp(-lr) - 1 + lr)
    assert (kl_per_token(logp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="k4"):
        kl_per_token(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_estimates_of_the_true_kl():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(6, generator=g), 0)
    q = torch.softmax(torch.randn(6, generator=g), 0)
    true_kl = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=g)
    lp, lq = p.log()[samples], q.log()[samples]
    assert kl_per_token(lp, lq, "k1").mean().item() == pytest.approx(true_kl, rel=0.03)
    assert kl_per_token(lp, lq, "k3").mean().item() == pytest.approx(true_kl, rel=0.03)


def test_per_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards, non_score = per_token_rewards(torch.tensor([1.0, -2.0]), kl, mask, beta=0.1)
    expect = torch.tensor([[-0.01, -0.02, -0.03 + 1.0], [-0.05 - 2.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expect)
    assert torch.allclose(non_score, -0.1 * kl * mask)


def naive_gae(rewards, values, lengths, gamma, lam):
    """A Python double loop: for every t, A_t = sum_l (gamma lam)^l delta_{t+l} inside the response."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        n = lengths[b]
        for t in range(n):
            total = 0.0
            for l_ in range(n - t):
                s = t + l_
                next_v = values[b][s + 1] if s + 1 < n else 0.0
                delta = rewards[b][s] + gamma * next_v - values[b][s]
                total += (gamma * lam) ** l_ * delta
            adv[b][t] = total
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_a_python_double_loop(gamma, lam):
    g = torch.Generator().manual_seed(2)
    r, v = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    lengths = [6, 4, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (6 - n) for n in lengths])
    adv, ret = gae(r, v, mask, gamma, lam)
    ref = naive_gae(r.tolist(), v.tolist(), lengths, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), np.array(ref), atol=1e-5)
    assert torch.allclose(ret, (adv + v) * mask)
    assert (adv[mask == 0] == 0).all()


def stepwise_gae(rewards, values, mask, gamma, lam):
    """GAE as rlhf computed it before its deltas were vectorised: everything one time step at a time."""
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype)
    values, rewards = values * mask, rewards * mask
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        last = last * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0)])
def test_vectorised_gae_is_bit_identical_to_the_stepwise_loop(gamma, lam):
    g = torch.Generator().manual_seed(5)
    r, v = torch.randn(16, 64, generator=g) * 3, torch.randn(16, 64, generator=g)
    lengths = torch.randint(1, 65, (16,), generator=g)
    mask = (torch.arange(64)[None, :] < lengths[:, None]).float()
    adv, ret = gae(r, v, mask, gamma, lam)
    ref_adv, ref_ret = stepwise_gae(r, v, mask, gamma, lam)
    assert torch.equal(adv, ref_adv) and torch.equal(ret, ref_ret)


def test_gae_with_lambda_one_gamma_one_is_return_to_go_minus_value():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.2, 0.5, 0.7]])
    adv, ret = gae(r, v, torch.ones(1, 3), 1.0, 1.0)
    assert torch.allclose(adv, torch.tensor([[0.8, 0.5, 0.3]]))
    assert torch.allclose(ret, torch.ones(1, 3))


def test_policy_loss_clipping_at_the_boundaries():
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    old = torch.zeros(1, 4)
    # ratios 1.5 (A>0: clipped to 1.2), 0.5 (A>0: unclipped 0.5), 1.5 (A<0: unclipped -1.5), 0.5 (A<0: clipped 0.8)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))
    loss, stats = policy_loss(logp, old, adv, mask, clip=0.2)
    expect = (-1.2 + -0.5 + 1.5 + 0.8) / 4
    assert loss.item() == pytest.approx(expect, abs=1e-6)
    assert stats["policy_clipfrac"].item() == pytest.approx(0.5)
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5])
    assert stats["approx_kl"].item() == pytest.approx(((ratio - 1) - ratio.log()).mean().item(), abs=1e-6)
    # exactly at the boundary nothing counts as clipped, and no gradient is lost inside the trust region
    at = torch.log(torch.tensor([[1.2, 0.8, 1.0, 1.0]])).requires_grad_()
    loss2, stats2 = policy_loss(at, old, adv, mask, clip=0.2)
    assert stats2["policy_clipfrac"].item() == 0.0
    loss2.backward()
    assert torch.allclose(at.grad[0, 2:], torch.tensor([0.25, 0.25]))  # -A * ratio / 4 with ratio 1, A = -1


def test_policy_loss_ignores_padding():
    adv = torch.tensor([[1.0, 100.0]])
    loss, _ = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), adv, torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-1.0)


def test_value_loss_clipping_by_hand():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    ret = torch.tensor([[1.0, 1.0, -1.0]])
    v = torch.tensor([[0.5, 0.1, 0.5]])
    loss, stats = value_loss(v, old, ret, torch.ones(1, 3), clip=0.2)
    # clipped predictions: 0.2, 0.1, 0.2
    l1 = torch.tensor([0.25, 0.81, 2.25])
    l2 = torch.tensor([0.64, 0.81, 1.44])
    assert loss.item() == pytest.approx(0.5 * torch.maximum(l1, l2).mean().item(), abs=1e-6)
    assert stats["value_clipfrac"].item() == pytest.approx(1 / 3)


def test_ptx_loss_is_next_token_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 11, generator=g)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    manual = 0.0
    for b in range(2):
        for t in range(4):
            manual += -torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]].item()
    assert ptx_loss(logits, ids).item() == pytest.approx(manual / 8, abs=1e-5)
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    manual2 = sum(-torch.log_softmax(logits[0, t], -1)[ids[0, t + 1]].item() for t in range(4))
    manual2 += -torch.log_softmax(logits[1, 0], -1)[ids[1, 1]].item()
    assert ptx_loss(logits, ids, am).item() == pytest.approx(manual2 / 5, abs=1e-5)


def test_adaptive_kl_controller_follows_ziegler():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(kl=12.0, n_steps=100)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 100 / 10000))
    ctl2 = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl2.update(kl=5.4, n_steps=1000)  # error = -0.1
    assert ctl2.value == pytest.approx(0.1 * (1 - 0.1 * 0.1))
    state = ctl2.state_dict()
    ctl3 = AdaptiveKLController(1.0, 1.0, 1)
    ctl3.load_state_dict(state)
    assert ctl3.value == ctl2.value and ctl3.target == 6.0
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05 and math.isclose(fixed.value, 0.05)
