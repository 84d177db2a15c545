"""A dense rule-based reward for the PPO learning tests (used as reward.function: tests.rewards:supportive_words)."""

from __future__ import annotations

import re

from rlhf.rewards import position_words

SUPPORTIVE = frozenset("you your help can talk people support safe someone trust please doctor".split())


def supportive_words(prompts: list[str], responses: list[str], categories: list[str | None]) -> list[float]:
    """min(1, 3 x the fraction of response words that are supportive or from the category's position)."""
    vocab = position_words()
    out = []
    for resp, cat in zip(responses, categories):
        words = re.findall(r"[a-z]+", resp.lower())
        target = SUPPORTIVE | vocab.get(cat or "", frozenset())
        frac = sum(w in target for w in words) / len(words) if words else 0.0
        out.append(min(1.0, 3.0 * frac))
    return out


def length_rule(prompts: list[str], responses: list[str], categories: list[str | None]) -> list[float]:
    """-4 - words / 10: a reward on another scale than a normalised reward model (about -5 for a typical
    response, never above -4), where a longer response scores lower."""
    return [-4.0 - len(re.findall(r"\S+", resp)) / 10 for resp in responses]
