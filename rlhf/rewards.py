"""Rule-based rewards usable as ``reward.function`` in a PPO config (``rlhf.rewards:position_keywords``).

A reward function is any callable ``f(prompts, responses, categories) -> list[float]`` named by its import path;
write your own in your package and point ``reward.function`` at it. Per episode of the rollout:

- ``prompts[i]``: the last user message of the prompt (a string);
- ``responses[i]``: the policy's response as every stage records it (decoded, special tokens skipped, whitespace
  stripped);
- ``categories[i]``: the prompt's category id or None.

A function that also wants the system message and the earlier turns declares a ``messages`` parameter (or
``**kwargs``) and is called ``f(prompts, responses, categories, messages=...)``, ``messages[i]`` being the whole
prompt conversation as ``[{"role", "content"}]`` dicts, the last one the user message of ``prompts[i]``. Functions
without it are called with the three lists as before. See docs/conversations.md.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re

from rlhf.data.formats import load_categories


def load_reward_function(spec: str):
    """'package.module:function' -> the callable (user code only by an explicit import path, never eval)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"reward.function: cannot import module {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AttributeError(f"reward.function: {module_name!r} has no callable {attr!r}")
    return fn


def takes_messages(fn) -> bool:
    """Whether a reward function accepts the prompt conversations (a ``messages`` parameter or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(q.name == "messages" or q.kind is inspect.Parameter.VAR_KEYWORD for q in params)

STOPWORDS = set(
    "about after again against being below between both could does doing during each from further having into itself "
    "just more most other over same should some such than that their theirs them themselves then there these they "
    "this those through under until very what when where which while whom will with would your yours anyone anything "
    "including especially never always every".split()
)


@functools.lru_cache(maxsize=4)
def position_words(categories_file: str = "data/palms/categories.yaml") -> dict[str, frozenset[str]]:
    """Content words (5+ letters, no stopwords) of each category's desired-behaviour position."""
    out = {}
    for cid, cat in load_categories(categories_file).items():
        words = {w for w in re.findall(r"[a-z]+", cat["position"].lower()) if len(w) >= 5 and w not in STOPWORDS}
        out[cid] = frozenset(words)
    return out


def position_keywords(prompts: list[str], responses: list[str], categories: list[str | None]) -> list[float]:
    """min(1, distinct words of the category's position used in the response / 3); 0 without a category.

    A transparent stand-in reward for tests and demonstrations: it rewards talking about what the position
    talks about, nothing more.
    """
    words = position_words()
    scores = []
    for resp, cat in zip(responses, categories):
        vocab = words.get(cat or "", frozenset())
        hits = len(vocab & set(re.findall(r"[a-z]+", resp.lower())))
        scores.append(min(1.0, hits / 3.0))
    return scores
