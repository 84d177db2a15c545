"""Win-rate statistics: counts and ties-as-half on hand-made verdicts, bootstrap coverage on synthetic data,
prompt-level resampling of several samples per prompt, Wilson against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf.eval.stats import agreement, bootstrap_ci, count, mean_ci, summarize, wilson_interval


def _synthetic(rng: np.random.Generator, n: int, p_win: float, p_tie: float) -> list[str]:
    u = rng.random(n)
    return ["win" if x < p_win else "tie" if x < p_win + p_tie else "loss" for x in u]


# ---- counting ---------------------------------------------------------------------------------------------


def test_count_ties_half():
    c = count(["win", "tie", "loss", "win", "tie", "win"])
    assert (c["wins"], c["ties"], c["losses"], c["n"]) == (3, 2, 1, 6)
    assert c["win_rate"] == pytest.approx((3 + 1) / 6)
    assert count(["tie"] * 4)["win_rate"] == 0.5
    assert count(["loss", "loss"])["win_rate"] == 0.0
    assert count([])["win_rate"] is None


def test_count_rejects_unknown_verdict():
    with pytest.raises(ValueError, match=r"verdict 1 is 'draw'"):
        count(["win", "draw"])


# ---- bootstrap --------------------------------------------------------------------------------------------


def test_bootstrap_is_deterministic_and_contains_the_estimate():
    rng = np.random.default_rng(1)
    v = _synthetic(rng, 60, 0.5, 0.2)
    ids = list(range(60))
    a, b = bootstrap_ci(v, ids, seed=3), bootstrap_ci(v, ids, seed=3)
    assert a == b
    assert bootstrap_ci(v, ids, seed=4) != a
    assert a[0] < count(v)["win_rate"] < a[1]
    # all wins: every resample is 1.0
    assert bootstrap_ci(["win"] * 10, list(range(10))) == (1.0, 1.0)


def test_bootstrap_covers_true_rate_at_nominal_level():
    """200 synthetic experiments, 80 prompts each, known ties-as-half rate 0.35 + 0.5 * 0.2 = 0.45."""
    rng = np.random.default_rng(0)
    true_rate = 0.35 + 0.5 * 0.2
    covered = 0
    for e in range(200):
        v = _synthetic(rng, 80, 0.35, 0.2)
        low, high = bootstrap_ci(v, list(range(80)), n_resamples=1000, seed=e)
        covered += low <= true_rate <= high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_bootstrap_covers_with_several_correlated_samples_per_prompt():
    """3 samples per prompt whose win probability depends on the prompt: resampling prompts keeps coverage,
    resampling samples as if independent (each its own prompt id) under-covers."""
    rng = np.random.default_rng(5)
    prompts, k = 40, 3
    # p_i ~ Beta(0.5, 0.5): strong prompt effect; mean 0.5; no ties
    clustered = naive = 0
    for e in range(200):
        p = rng.beta(0.5, 0.5, size=prompts)
        v = ["win" if rng.random() < p[i] else "loss" for i in range(prompts) for _ in range(k)]
        ids = [i for i in range(prompts) for _ in range(k)]
        lo, hi = bootstrap_ci(v, ids, seed=e)
        clustered += lo <= 0.5 <= hi
        lo, hi = bootstrap_ci(v, list(range(len(v))), seed=e)
        naive += lo <= 0.5 <= hi
    assert 0.90 <= clustered / 200 <= 0.99, clustered
    assert naive / 200 < 0.90, naive  # the wrong resampling unit is too narrow
    assert naive < clustered


def test_samples_of_a_prompt_are_drawn_together():
    """Repeating each prompt's verdict 3 times under the same id gives exactly the one-sample interval: the draws
    pick prompts, and a drawn prompt brings all its samples."""
    rng = np.random.default_rng(2)
    v = _synthetic(rng, 30, 0.4, 0.3)
    one = bootstrap_ci(v, list(range(30)), seed=9)
    triple = bootstrap_ci([x for x in v for _ in range(3)], [i for i in range(30) for _ in range(3)], seed=9)
    assert triple == pytest.approx(one, abs=1e-12)
    # the same triples under distinct ids look like 90 independent prompts: a narrower interval
    fake = bootstrap_ci([x for x in v for _ in range(3)], list(range(90)), seed=9)
    assert fake[1] - fake[0] < 0.75 * (one[1] - one[0])
    # prompt ids may be any hashable, in any order
    names = [f"p{i % 30}" for i in range(90)]
    shuffled = bootstrap_ci([v[i % 30] for i in range(90)], names, seed=9)
    assert shuffled == pytest.approx(one, abs=1e-12)


def test_bootstrap_narrows_with_more_prompts():
    rng = np.random.default_rng(4)
    widths = []
    for n in (25, 100, 400):
        v = _synthetic(rng, n, 0.4, 0.2)
        lo, hi = bootstrap_ci(v, list(range(n)), seed=0)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # ~ 1/sqrt(n): 16x the prompts, about a quarter the width
    assert 0.15 < widths[2] / widths[0] < 0.4


def test_bootstrap_input_errors():
    with pytest.raises(ValueError, match="2 values but 1 prompt ids"):
        bootstrap_ci(["win", "loss"], [0])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([], [])


def test_mean_ci():
    rng = np.random.default_rng(6)
    covered = 0
    for e in range(200):
        x = rng.integers(1, 6, size=50).astype(float)  # rubric-like scores 1..5, true mean 3
        lo, hi = mean_ci(list(x), list(range(50)), seed=e)
        assert lo <= x.mean() <= hi
        covered += lo <= 3.0 <= hi
    assert 0.90 <= covered / 200 <= 0.99, covered


# ---- Wilson -----------------------------------------------------------------------------------------------


def test_wilson_matches_hand_computation():
    # 8 wins of 10, z = 1.959964: p = 0.8, z^2 = 3.841459, denominator 1 + 0.3841459 = 1.3841459
    # centre = (0.8 + 0.1920729) / 1.3841459 = 0.716740; half = 1.959964 * sqrt(0.016 + 0.0096036) / 1.3841459
    #        = 1.959964 * 0.1600113 / 1.3841459 = 0.226577
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.716740 - 0.226577, abs=1e-5)
    assert high == pytest.approx(0.716740 + 0.226577, abs=1e-5)
    # 0 of 20: [0, z^2 / (n + z^2)]
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(3.841459 / (20 + 3.841459), abs=1e-6)
    # wider at 99% than at 95%
    assert wilson_interval(8, 10, level=0.99)[0] < wilson_interval(8, 10)[0]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


# ---- summarize --------------------------------------------------------------------------------------------


def test_summarize_overall_and_per_category():
    verdicts = ["win", "win", "tie", "loss", "win", "loss", "tie", "win"]
    ids = [0, 0, 1, 1, 2, 2, 3, 3]
    cats = ["health", "health", "health", "health", "terrorism", "terrorism", None, None]
    s = summarize(verdicts, ids, cats, n_resamples=500, seed=1)
    o = s["overall"]
    assert (o["wins"], o["ties"], o["losses"], o["n"], o["n_prompts"]) == (4, 2, 2, 8, 4)
    assert o["win_rate"] == pytest.approx(5 / 8)
    assert (o["ci_low"], o["ci_high"]) == bootstrap_ci(verdicts, ids, 500, 1)
    assert list(s["per_category"]) == ["(none)", "health", "terrorism"]
    h = s["per_category"]["health"]
    assert (h["wins"], h["ties"], h["losses"], h["n"], h["n_prompts"]) == (2, 1, 1, 4, 2)
    assert h["win_rate"] == pytest.approx(2.5 / 4)
    assert (h["ci_low"], h["ci_high"]) == bootstrap_ci(verdicts[:4], ids[:4], 500, 1)
    t = s["per_category"]["terrorism"]
    assert t["win_rate"] == 0.5 and t["ci_low"] <= 0.5 <= t["ci_high"]
    assert s["per_category"]["(none)"]["win_rate"] == pytest.approx(0.75)
    assert all(not math.isnan(r["ci_low"]) for r in s["per_category"].values())
    with pytest.raises(ValueError, match="lengths differ"):
        summarize(verdicts, ids, cats[:-1])


def test_agreement_counts_only_pairs_both_judges_decided():
    a = ["win", "win", "tie", "loss", "loss", "win"]
    b = ["win", "loss", "win", "loss", "tie", "win"]
    # decided by both: positions 0, 1, 3, 5; agree at 0, 3, 5
    assert agreement(a, b) == {"decided_by_both": 4, "agree": 3, "rate": 0.75}
    assert agreement(["tie"], ["win"])["rate"] is None
    with pytest.raises(ValueError, match="2 verdicts against 1"):
        agreement(["win", "win"], ["win"])
