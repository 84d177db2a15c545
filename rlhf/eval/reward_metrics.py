"""Reward-model evaluation metrics on preference pairs: accuracy, margin, calibration (ECE), length and
bag-of-words baselines; and the same for DPO's implicit reward."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable


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


_WORD = re.compile(r"[\w']+")


def _bag(text: str) -> set[str]:
    """Lower-cased words and adjacent word pairs of ``text``, each once (presence, not counts)."""
    words = _WORD.findall(text.lower())
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}


def bag_of_words_baseline(
    train_chosen: list[str], train_rejected: list[str], min_count: int = 3, l2: float = 0.01, max_iter: int = 200,
) -> Callable[[list[str], list[str]], float]:
    """A bag-of-words Bradley-Terry model fitted once to the training pairs; returns its accuracy function for any
    test pairs (chosen, rejected) -> share with the chosen response scored higher (ties wrong).

    The baseline a reward model should beat on judgements a lexical rule could make: a response is scored
    ``w . x`` where ``x`` marks which words and word pairs occur in it (those in at least ``min_count`` training
    responses); ``w`` minimises the Bradley-Terry loss ``mean log(1 + exp(-(w . (x_chosen - x_rejected))))`` plus
    ``l2 * |w|^2`` (L-BFGS, ``max_iter`` iterations, from w = 0; deterministic). It sees responses only, never the
    prompt, and no order within a response beyond word pairs. A reward model near or below it has not learned
    what the words alone tell about its labels. With no usable feature it scores 0 (every test pair a tie).
    """
    import torch

    counts = Counter(f for text in (*train_chosen, *train_rejected) for f in _bag(text))
    vocab = {f: i for i, f in enumerate(sorted(f for f, c in counts.items() if c >= min_count))}

    def differences(chosen: list[str], rejected: list[str]) -> torch.Tensor:
        rows, cols, vals = [], [], []
        for i, (c, r) in enumerate(zip(chosen, rejected)):
            fc = {vocab[f] for f in _bag(c) if f in vocab}
            fr = {vocab[f] for f in _bag(r) if f in vocab}
            for j, v in [*((j, 1.0) for j in fc - fr), *((j, -1.0) for j in fr - fc)]:
                rows.append(i)
                cols.append(j)
                vals.append(v)
        idx = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
        return torch.sparse_coo_tensor(idx, torch.tensor(vals, dtype=torch.float64),
                                       (len(chosen), len(vocab)), check_invariants=True).coalesce()

    if not vocab or not train_chosen:
        return lambda chosen, rejected: 0.0
    x_train = differences(train_chosen, train_rejected)
    w = torch.zeros(len(vocab), 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-torch.sparse.mm(x_train, w)).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def test_accuracy(chosen: list[str], rejected: list[str]) -> float:
        if not chosen:
            return 0.0
        with torch.no_grad():
            margins = torch.sparse.mm(differences(chosen, rejected), w).squeeze(1)
        return float((margins > 0).double().mean())

    return test_accuracy


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
