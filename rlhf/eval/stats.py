"""Win-rate statistics: counts, ties-as-half win rate, paired bootstrap over prompts, Wilson interval.

Conventions (docs/references.md, "Win rates"):

1. Verdicts are "win", "tie" or "loss" from the candidate's point of view; the win rate counts a tie as half a
   win: ``(wins + 0.5 * ties) / n``.
2. The 95% interval of that rate is a paired bootstrap over prompts (>= 1,000 resamples): the prompts are drawn
   with replacement, every verdict of a drawn prompt comes along (so several samples per prompt -- PALMS rates 3
   per prompt -- are resampled together and their correlation widens the interval, as it should), and the
   interval is the percentile interval of the resampled rates. Each resample's rate is
   ``sum(scores of the drawn verdicts) / count(drawn verdicts)``, score 1 / 0.5 / 0 for win / tie / loss.
3. For plain wins out of n (no ties), the Wilson score interval.

All functions are pure Python + numpy and deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from statistics import NormalDist

import numpy as np

from .judges import VERDICTS

SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
"""Ties count half (docs/references.md, "Win rates")."""

NO_CATEGORY = "(none)"
"""The per-category key used by ``summarize`` for items without a category (as rlhf.eval.reward_metrics)."""


def _check_verdicts(verdicts: Sequence[str]) -> None:
    for i, v in enumerate(verdicts):
        if v not in SCORE:
            raise ValueError(f"verdict {i} is {v!r}; expected one of {', '.join(VERDICTS)}")


def count(verdicts: Sequence[str]) -> dict:
    """Wins, ties, losses, n and the ties-as-half win rate ``(wins + 0.5 * ties) / n`` (None when n == 0)."""
    _check_verdicts(verdicts)
    wins, ties, losses = (sum(v == k for v in verdicts) for k in VERDICTS)
    n = len(verdicts)
    return {"wins": wins, "ties": ties, "losses": losses, "n": n,
            "win_rate": (wins + 0.5 * ties) / n if n else None}


def _cluster_bootstrap(values: Sequence[float], prompt_ids: Sequence[Hashable], n_resamples: int, seed: int,
                       level: float) -> tuple[float, float]:
    """Percentile interval of mean(values) under resampling of whole prompts with replacement.

    Per prompt k: S_k = sum of its values, N_k = its number of values. A resample draws K prompt indices
    j_1..j_K uniformly with replacement (K = number of distinct prompts) and computes
    ``sum_i S_{j_i} / sum_i N_{j_i}``; the interval is the (1-level)/2 and (1+level)/2 quantiles of those.
    """
    if len(values) != len(prompt_ids):
        raise ValueError(f"{len(values)} values but {len(prompt_ids)} prompt ids")
    if not values:
        raise ValueError("cannot bootstrap an empty list")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    index: dict[Hashable, int] = {}
    for p in prompt_ids:
        index.setdefault(p, len(index))
    k = len(index)
    sums, counts = np.zeros(k), np.zeros(k)
    for v, p in zip(values, prompt_ids):
        sums[index[p]] += float(v)
        counts[index[p]] += 1
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // k)  # bound memory at ~2M drawn indices per chunk
    for start in range(0, n_resamples, chunk):
        draw = rng.integers(0, k, size=(min(chunk, n_resamples - start), k))  # (B, K) prompt indices
        stats[start:start + len(draw)] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(verdicts: Sequence[str], prompt_ids: Sequence[Hashable], n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap interval over prompts of the ties-as-half win rate (see the module docstring).

    ``prompt_ids[i]`` names the prompt of ``verdicts[i]``; verdicts sharing a prompt id are drawn together.
    Deterministic for a given seed. Source: docs/references.md, "Win rates" (paired bootstrap over prompts,
    >= 1,000 resamples, ties count half).
    """
    _check_verdicts(verdicts)
    return _cluster_bootstrap([SCORE[v] for v in verdicts], prompt_ids, n_resamples, seed, level)


def mean_ci(values: Sequence[float], prompt_ids: Sequence[Hashable], n_resamples: int = 1000, seed: int = 0,
            level: float = 0.95) -> tuple[float, float]:
    """The same paired bootstrap over prompts for the mean of a score (e.g. rubric scores 1-5 per category)."""
    return _cluster_bootstrap(list(values), prompt_ids, n_resamples, seed, level)


def wilson_interval(wins: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``wins`` successes out of ``n`` (no ties).

    With p = wins / n and z the (1+level)/2 normal quantile (1.96 for 95%):
    ``(p + z^2/2n -+ z * sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``.
    Wilson (1927); recommended for binomial proportions by Brown, Cai & DasGupta (2001); docs/references.md,
    "Win rates".
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= wins <= n:
        raise ValueError(f"wins must be in [0, n={n}], got {wins}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = wins / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _row(verdicts: list[str], prompt_ids: list[Hashable], n_resamples: int, seed: int, level: float) -> dict:
    row = count(verdicts)
    row["n_prompts"] = len(set(prompt_ids))
    if verdicts:
        row["ci_low"], row["ci_high"] = bootstrap_ci(verdicts, prompt_ids, n_resamples, seed, level)
    else:
        row["ci_low"] = row["ci_high"] = None
    return row


def summarize(verdicts: Sequence[str], prompt_ids: Sequence[Hashable], categories: Sequence[str | None],
              n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Overall and per-category counts, ties-as-half win rate and its paired bootstrap interval over prompts.

    Returns ``{"overall": ROW, "per_category": {category: ROW}}`` where ROW is
    ``{wins, ties, losses, n, win_rate, ci_low, ci_high, n_prompts}`` (win_rate and the interval are None when
    n == 0). Items with category None are grouped under ``"(none)"``; categories are sorted. Each category's
    interval resamples that category's prompts only.
    """
    if not len(verdicts) == len(prompt_ids) == len(categories):
        raise ValueError(f"lengths differ: {len(verdicts)} verdicts, {len(prompt_ids)} prompt ids, "
                         f"{len(categories)} categories")
    _check_verdicts(verdicts)
    groups: dict[str, tuple[list[str], list[Hashable]]] = {}
    for v, p, c in zip(verdicts, prompt_ids, categories):
        vs, ps = groups.setdefault(NO_CATEGORY if c is None else c, ([], []))
        vs.append(v)
        ps.append(p)
    return {
        "overall": _row(list(verdicts), list(prompt_ids), n_resamples, seed, level),
        "per_category": {c: _row(vs, ps, n_resamples, seed, level) for c, (vs, ps) in sorted(groups.items())},
    }


def agreement(a: list[str], b: list[str]) -> dict:
    """How often two judges' verdicts on the same pairs agree, over the pairs both decided (neither a tie):
    ``{decided_by_both, agree, rate}`` (rate None when no pair was decided by both)."""
    if len(a) != len(b):
        raise ValueError(f"agreement: {len(a)} verdicts against {len(b)}")
    both = [(x, y) for x, y in zip(a, b) if x != "tie" and y != "tie"]
    agree = sum(x == y for x, y in both)
    return {"decided_by_both": len(both), "agree": agree, "rate": agree / len(both) if both else None}
