"""Masked statistics, whitening, per-token KL estimators and GAE.

Shapes: ``B`` sequences x ``T`` response tokens; ``mask`` (B, T) is 1 on real response tokens (up to and
including EOS) and 0 on padding after it.
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (over all, or along ``dim``)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Biased variance (divide by N, not N-1) of the masked entries: lm-human-preferences / N+ detail 6."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries; padding stays 0.

    ``shift_mean=False`` keeps the mean (used for rewards in lm-human-preferences: scale only).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of the sampled tokens (Schulman 2020, "Approximating
    KL divergence"). With log-ratio ``lr = logp - ref_logp`` (the samples come from pi):

    - k1 = lr                       unbiased, can be negative (InstructGPT eq. 2 and lm-human-preferences use it)
    - k2 = lr^2 / 2                 biased, low variance, >= 0
    - k3 = (exp(-lr) - 1) + lr      unbiased, >= 0
    """
    lr = logp - ref_logp
    if estimator == "k1":
        return lr
    if estimator == "k2":
        return 0.5 * lr**2
    if estimator == "k3":
        return torch.expm1(-lr) + lr
    raise ValueError(f"unknown KL estimator {estimator!r}: use k1, k2 or k3")


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """r_t = -beta * KL_t, plus the sequence score on the last real token (N+ detail 5; InstructGPT eq. 2).

    scores: (B,), kl / mask: (B, T). Returns (rewards (B, T), non-score part -beta * KL (B, T)).
    """
    non_score = -beta * kl * mask
    last = (mask.sum(1) - 1).clamp(min=0).long()  # index of the last real token, (B,)
    rewards = non_score.clone()
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, non_score


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over masked responses.

    delta_t = r_t + gamma * V_{t+1} - V_t       (V_{t+1} = 0 after the last real token)
    A_t     = delta_t + gamma * lam * A_{t+1}
    returns = A + V                              (N+ detail 7: gamma 1, lambda 0.95)

    rewards, values, mask: (B, T). Returns (advantages, returns), both (B, T), zero on padding.
    """
    B, T = rewards.shape
    values = values * mask
    rewards = rewards * mask
    # every delta_t at once (the same elementwise operations as one step at a time: bit-identical); only the
    # recursion over A runs step by step
    next_v = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    delta = rewards + gamma * next_v - values
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    decay = gamma * lam
    for t in reversed(range(T)):
        last = (delta[:, t] + decay * last) * mask[:, t]  # padding does not carry advantage backwards
        adv[:, t] = last
    return adv, (adv + values) * mask
