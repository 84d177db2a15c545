"""Critic-free advantage estimators for the PPO stage (``ppo.advantage_estimator: rloo | grpo``).

Both sample k responses per prompt (``ppo.samples_per_prompt``) and use the group as the baseline instead of a
learned value function, so no critic is built, trained or saved. Shapes: a rollout of ``B = G * k`` episodes in
groups of k consecutive rows (all k responses of one prompt), ``T`` response tokens.

RLOO (REINFORCE Leave-One-Out; Kool et al. 2019, Ahmadian et al. 2024, "Back to Basics", eq. 6). The sequence
reward includes the KL penalty, R_i = score_i - beta * sum_t KL_t (k1), and the baseline of response i is the mean
of the other k - 1 rewards of its group:

    A_i = R_i - 1/(k-1) * sum_{j != i} R_j  =  k/(k-1) * (R_i - mean_j R_j)

applied to every token of response i, with PPO's clipped surrogate (as TRL's RLOO trainer does).

GRPO (Group Relative Policy Optimization; Shao et al. 2024, "DeepSeekMath", eq. 3 and 4). The advantage is the
score normalised within its group, without the KL penalty,

    A_i = (score_i - mean_j score_j) / (std_j score_j + eps)     (std with Bessel's correction, as TRL)

and the KL to the reference enters the loss instead, with the k3 estimator (Schulman 2020; ``kl_per_token(...,
"k3")`` in rlhf.algos.advantages), per token:

    KL_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1
    loss = 1/G' sum_i 1/|o_i| sum_t [ -min(ratio_t A_i, clip(ratio_t, 1 - eps, 1 + eps) A_i) + beta KL_t ]

over the sequences i of the (mini)batch, each averaged over its own tokens first.

Neither estimator whitens its advantages over the rollout (GRPO's are normalised within each group already; RLOO's
are used as they are, as in Ahmadian et al. 2024).
"""

from __future__ import annotations

import torch

from rlhf.algos.advantages import kl_per_token

ESTIMATORS = ("gae", "rloo", "grpo")


def _groups(x: torch.Tensor, k: int) -> torch.Tensor:
    if k < 2:
        raise ValueError(f"samples_per_prompt {k}: a group baseline needs at least 2 responses per prompt")
    if x.dim() != 1 or x.numel() % k:
        raise ValueError(f"{x.numel()} scores cannot be split into groups of {k}")
    return x.view(-1, k)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out advantages (B,) of sequence rewards (B,) in groups of k consecutive rows."""
    r = _groups(rewards, k)
    baseline = (r.sum(1, keepdim=True) - r) / (k - 1)
    return (r - baseline).reshape(-1)


def grpo_advantages(scores: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages (B,) of scores (B,) in groups of k consecutive rows; a group whose scores are all
    equal gets advantage 0."""
    s = _groups(scores, k)
    mean = s.mean(1, keepdim=True)
    std = s.std(1, keepdim=True)
    return ((s - mean) / (std + eps)).reshape(-1)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip: float, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's loss (module docstring) for logp, old_logp, ref_logp, mask (B, T) and sequence advantages (B,).

    Stats: the clip fraction and the mean k3 KL to the reference over tokens."""
    a = advantages[:, None]
    ratio = torch.exp((logp - old_logp) * mask)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * a
    kl = kl_per_token(logp, ref_logp, "k3")
    per_token = -torch.minimum(unclipped, clipped) + beta * kl
    lengths = mask.sum(1).clamp(min=1)
    loss = ((per_token * mask).sum(1) / lengths).mean()
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        stats = {"policy_clipfrac": ((clipped < unclipped).float() * mask).sum() / n,
                 "kl_loss_term": (kl * mask).sum() / n}
    return loss, stats
