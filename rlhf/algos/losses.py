"""Losses: pairwise Bradley-Terry reward-model loss (PPO losses live beside it).

Shapes: ``B`` pairs (reward model), ``B x T`` response tokens (policy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry loss of a reward model on preference pairs.

    loss = mean_b[ -log sigmoid(r_c - r_r - m) ] + c * mean_b[ (r_c + r_r)^2 ]

    - InstructGPT eq. 1 (Ouyang et al. 2022) without margin and centring;
    - margin ``m`` as in Llama 2 (Touvron et al. 2023), per pair, (B,);
    - centring term ``c`` from Eisenstein et al. 2023 (c = 0.01 suggested): keeps rewards near zero.

    Args: r_chosen, r_rejected: (B,) scalar rewards. Returns (loss, stats) with accuracy (strict r_c > r_r),
    mean margin r_c - r_r, and the centring penalty.
    """
    diff = r_chosen - r_rejected  # (B,)
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    center = torch.mean((r_chosen + r_rejected) ** 2)
    if center_coef:
        loss = loss + center_coef * center
    stats = {
        "accuracy": (r_chosen > r_rejected).float().mean().detach(),
        "margin": (r_chosen - r_rejected).mean().detach(),
        "center_penalty": center.detach(),
    }
    return loss, stats


def grouped_pairwise_loss(
    scores: torch.Tensor,
    chosen_idx: torch.Tensor,
    rejected_idx: torch.Tensor,
    weights: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry loss with InstructGPT's batching (Ouyang et al. 2022, eq. 1): every response is scored once and
    each prompt's pairs are weighted 1 / C(K, 2) of their prompt, 1 / G over the G prompts of the batch.

    loss = sum_p w_p [ -log sigmoid(s[c_p] - s[r_p] - m_p) ] + c * sum_p w_p (s[c_p] + s[r_p])^2

    Args: scores (N,) rewards of the batch's distinct responses; chosen_idx, rejected_idx (P,) indices into scores
    for each pair; weights (P,) summing to 1; margin (P,) or None. With one pair per prompt (weights 1 / P) this is
    :func:`pairwise_loss`. Stats as there, averaged over pairs with the same weights.
    """
    r_c, r_r = scores[chosen_idx], scores[rejected_idx]  # (P,)
    diff = r_c - r_r
    if margin is not None:
        diff = diff - margin
    loss = (weights * -F.logsigmoid(diff)).sum()
    center = (weights * (r_c + r_r) ** 2).sum()
    if center_coef:
        loss = loss + center_coef * center
    stats = {
        "accuracy": (weights * (r_c > r_r).float()).sum().detach(),
        "margin": (weights * (r_c - r_r)).sum().detach(),
        "center_penalty": center.detach(),
    }
    return loss, stats


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), masked token mean.

    ratio = exp(logp - old_logp);  loss = mean_t max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))

    logp, old_logp, advantages, mask: (B, T). Stats: clip fraction (tokens where the clipped term is active) and
    approx-KL = mean((ratio - 1) - log ratio) (k3 between the old and new policy).
    """
    from rlhf.algos.advantages import masked_mean

    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "policy_clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (N+ detail 8; lm-human-preferences):

    V_clip = old_V + clip(V - old_V, -eps, eps);  loss = 0.5 * mean_t max((V - R)^2, (V_clip - R)^2)
    """
    from rlhf.algos.advantages import masked_mean

    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    l1 = (values - returns) ** 2
    l2 = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((l2 > l1).float(), mask), "value_error": masked_mean(l1, mask)}
    return loss, stats


def ptx_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pretraining language-model loss for the ptx term: mean next-token cross-entropy.

    InstructGPT eq. 2 adds gamma * E_{x ~ D_pretrain}[log pi(x)]; minimising ``ptx_coef * ptx_loss`` is the same term.
    logits: (B, T, V); input_ids, attention_mask: (B, T).
    """
    labels = input_ids[:, 1:]
    logits = logits[:, :-1]
    mask = attention_mask[:, 1:] if attention_mask is not None else torch.ones_like(labels)
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), reduction="none")
    return (nll * mask.reshape(-1)).sum() / mask.sum().clamp(min=1)
