"""Types shared by the evaluation judges: one pairwise comparison and the judge protocol.

A judge sees a candidate policy's response and the baseline's response to the same prompt and says, from the
candidate's point of view, "win", "tie" or "loss". Win rates count ties as half a win and are reported with a
paired bootstrap interval over prompts (docs/references.md, "Win rates"; ``rlhf.eval.stats``). Judges:
the reward model, the rubric (``rlhf.eval.rubric``, the offline stand-in for human raters), a pairwise LLM
judge and human raters (``rlhf.eval.human``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Messages = list[dict[str, str]]


@dataclass
class PairItem:
    """One comparison: a candidate's response vs the baseline's to the same prompt."""

    prompt: str
    """the user prompt text"""
    category: str | None
    """PALMS category id (a key of data/palms/categories.yaml) or None"""
    candidate: str
    """candidate response text"""
    baseline: str
    """baseline response text"""
    candidate_eos: bool = True
    """whether the candidate's response ended with EOS (a complete answer)"""
    baseline_eos: bool = True
    """whether the baseline's response ended with EOS"""
    prompt_id: int = 0
    """index of the prompt (the bootstrap resamples over prompts, so samples of one prompt share it)"""
    messages: Messages | None = None
    """the whole prompt conversation as [{role, content}] (system message, earlier turns, the last user message,
    whose text is ``prompt``); None for a single user message"""

    @property
    def conversation(self) -> Messages:
        """The prompt conversation the responses answer: what generation saw, and what the reward model judge,
        the LLM judge and the human sheet show (the rubric matches on ``prompt``, the question itself)."""
        return self.messages or [{"role": "user", "content": self.prompt}]


def transcript(messages: Messages) -> str:
    """A conversation as readable text, one ``Role: content`` paragraph per message (``User: ...`` for a single
    user message)."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


VERDICTS = ("win", "tie", "loss")
"""Judge verdicts, from the candidate's point of view."""


class Judge(Protocol):
    """A pairwise judge: ``compare`` returns one verdict (an element of VERDICTS) per item, in order."""

    name: str

    def compare(self, items: list[PairItem]) -> list[str]: ...
