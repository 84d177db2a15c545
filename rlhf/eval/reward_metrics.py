"""Reward-model evaluation metrics on preference pairs: accuracy, margin, calibration (ECE), length baseline; and
the same for DPO's implicit reward."""

from __future__ import annotations

import math
from collections import defaultdict


def accuracy(r_chosen: list[float], r_rejected: list[float]) -> float:
    """Fraction of pairs with r_c > r_r; ties count as wrong."""
    return sum(c > r for c, r in zip(r_chosen, r_rejected)) / max(1, len(r_chosen))


def expected_calibration_error(r_chosen: list[float], r_rejected: list[float], bins: int = 10) -> float:
    """ECE of p = sigmoid(r_c - r_r) as the probability that the chosen response is preferred.

    Each pair is presented in a fixed random-free symmetric way: we score both orders, (p, 1) and (1 - p, 0),
    so the predicted probabilities cover [0, 1] and an uninformative model (p = 0.5) has ECE 0.
    ECE = sum_b (n_b / N) * |mean(y in b) - mean(p in b)| over ``bins`` equal-width bins.
    """
    preds: list[tuple[float, int]] = []
    for c, r in zip(r_chosen, r_rejected):
        p = 1.0 / (1.0 + math.exp(-(c - r)))
        preds += [(p, 1), (1.0 - p, 0)]
    if not preds:
        return 0.0
    buckets: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for p, y in preds:
        buckets[min(int(p * bins), bins - 1)].append((p, y))
    n = len(preds)
    return sum(len(b) / n * abs(sum(y for _, y in b) / len(b) - sum(p for p, _ in b) / len(b)) for b in buckets.values())


def longer_wins_accuracy(chosen: list[str], rejected: list[str]) -> float:
    """Accuracy of the baseline that prefers the longer response (in characters; ties wrong)."""
    return sum(len(c) > len(r) for c, r in zip(chosen, rejected)) / max(1, len(chosen))


def accuracy_per_category(r_chosen: list[float], r_rejected: list[float], categories: list[str | None]) -> dict:
    """Share of pairs with r_chosen > r_rejected (ties wrong) per category, "(none)" for rows without one."""
    per_cat: dict[str, list[int]] = defaultdict(list)
    for c, r, cat in zip(r_chosen, r_rejected, categories):
        per_cat[cat or "(none)"].append(int(c > r))
    return {k: sum(v) / len(v) for k, v in sorted(per_cat.items())}


def reward_report(
    r_chosen: list[float], r_rejected: list[float], chosen: list[str], rejected: list[str],
    categories: list[str | None], bins: int = 10,
) -> dict:
    """All metrics the reward stage writes into summary.json."""
    return {
        "accuracy": accuracy(r_chosen, r_rejected),
        "mean_margin": sum(c - r for c, r in zip(r_chosen, r_rejected)) / max(1, len(r_chosen)),
        "ece": expected_calibration_error(r_chosen, r_rejected, bins),
        "length_baseline_accuracy": longer_wins_accuracy(chosen, rejected),
        "accuracy_per_category": accuracy_per_category(r_chosen, r_rejected, categories),
        "pairs": len(r_chosen),
    }


def implicit_reward_report(
    chosen: list[float], rejected: list[float], ref_chosen: list[float], ref_rejected: list[float], beta: float,
    categories: list[str | None],
) -> dict:
    """DPO's implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) on preference pairs, from the summed
    response log-probabilities of the policy (``chosen``, ``rejected``) and the reference: accuracy of r_c > r_r
    (ties wrong), its mean margin r_c - r_r and accuracy per category, and ``logp_accuracy``, how often the policy
    itself gives the chosen response the higher log-probability."""
    r_c = [beta * (p - q) for p, q in zip(chosen, ref_chosen)]
    r_r = [beta * (p - q) for p, q in zip(rejected, ref_rejected)]
    return {
        "accuracy": accuracy(r_c, r_r),
        "margin": sum(c - r for c, r in zip(r_c, r_r)) / max(1, len(r_c)),
        "accuracy_per_category": accuracy_per_category(r_c, r_r, categories),
        "logp_accuracy": accuracy(chosen, rejected),
    }
