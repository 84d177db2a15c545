"""Reward models: a causal LM backbone with a scalar head (``AutoModelForSequenceClassification``, 1 label).

What is scored: the whole conversation, the prompt messages + the assistant's response, exactly as the chat
template renders and tokenises it with no generation prompt (``tokenizer.apply_chat_template(conversation)``, the
TRL and RewardBench convention; :func:`rlhf.data.preference.encode_conversation`). The reward is read at the last
token (transformers' sequence classification heads pick the last non-pad token; PAD differs from every real
token), which with the shipped template is the newline the template writes after ``<|end|>``. So a user scoring
the saved model with plain transformers and ``apply_chat_template`` gets the scores ``rlhf rm`` reports.

Every consumer scores those tokens: RM training and test accuracy (``rlhf rm``), the normalisation statistics,
:class:`RewardScorer` (eval's reward_model judge, compare, label) and PPO's scoring of rollouts
(:func:`conversation_scores`). PPO does not append a template suffix to the generated token ids; it decodes each
response to text (as eval and compare record it: special tokens skipped, whitespace stripped) and renders the
conversation again. Why: the generated ids need not be the template's tokenisation of that conversation. A policy
can sample a non-canonical split of a word; a template may rewrite the content (``| trim``) or end the turn with
a token other than EOS; and where the end of turn is not a special token it can merge with the response's last
token (``.`` + ``\n`` is one token in some BPE vocabularies), so "ids + suffix" differs from what
``apply_chat_template`` gives. Rendering the text gives the template's tokens in every case, costs one
tokenisation per episode on the CPU, and makes PPO's score of a response the eval judge's score of it. (The
critic still reads values per token on the generated ids.) A response cut off before EOS is rendered with its
turn left open (``continue_final_message``), so it is not scored as if it had ended.

Normalisation (InstructGPT: a bias so that demonstrations score 0 on average before RL; N+ detail 12: gain and
bias so the reference samples have mean 0 and std 1) is saved beside the model in ``reward_normalization.json``;
every consumer (PPO, eval judges) applies it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch
from transformers import AutoModelForSequenceClassification

from rlhf.config import ModelConfig
from rlhf.data.formats import Messages
from rlhf.data.preference import encode_conversation
from rlhf.models.loading import DTYPES, _finish, _hub_kwargs, from_pretrained

NORMALIZATION_FILE = "reward_normalization.json"


def load_reward_backbone(cfg: ModelConfig, tok, seed: int = 0, head_std: float = 0.0) -> torch.nn.Module:
    """A 1-label sequence classifier from a causal LM (or reward model) checkpoint.

    A newly created head is initialised N(0, std) with std = 1/sqrt(d + 1) (N+ detail 12; lm-human-preferences)
    unless ``head_std`` is given; a head that exists in the checkpoint is kept.
    """
    kw = _hub_kwargs(cfg)
    if cfg.gguf_file:
        kw["gguf_file"] = cfg.gguf_file
    model, info = from_pretrained(
        AutoModelForSequenceClassification, cfg.name_or_path, num_labels=1, dtype=DTYPES[cfg.dtype],
        output_loading_info=True, attn_implementation=cfg.attn_implementation, **kw,
    )
    head = _head(model)
    if any(k.split(".")[0] in ("score", "classifier") for k in info.get("missing_keys", [])):
        d = head.weight.shape[-1]
        std = head_std or 1.0 / math.sqrt(d + 1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * std)
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()
    return _finish(model, tok)


def _head(model) -> torch.nn.Linear:
    for name in ("score", "classifier"):
        if hasattr(model, name):
            return getattr(model, name)
    raise ValueError(f"{type(model).__name__} has no 'score' or 'classifier' head")


@torch.no_grad()
def raw_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) rewards of right-padded sequences (B, T), read at the last non-pad token."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()


def pad_right(seqs: list[list[int]], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def score_sequences(model, seqs: list[list[int]], pad_id: int, batch_size: int = 16, device="cpu") -> list[float]:
    model.eval()
    out: list[float] = []
    for i in range(0, len(seqs), batch_size):
        ids, mask = pad_right(seqs[i : i + batch_size], pad_id, device)
        out += raw_rewards(model, ids, mask).tolist()
    return out


@torch.no_grad()
def conversation_scores(model, tok, prompts: list[Messages], responses: list[str], complete: list[bool] | None = None,
                        device="cpu") -> torch.Tensor:
    """Raw scores (B,) of ``responses`` to ``prompts`` in one forward pass (one collective per call under ZeRO-3,
    whatever the texts), on the tokens of :func:`encode_conversation`."""
    complete = complete if complete is not None else [True] * len(prompts)
    seqs = [encode_conversation(tok, p, r, c) for p, r, c in zip(prompts, responses, complete)]
    ids, mask = pad_right(seqs, tok.pad_token_id, device)
    return raw_rewards(model, ids, mask)


@dataclass
class Normalization:
    """normalised = gain * raw + bias."""

    gain: float = 1.0
    bias: float = 0.0
    reference: str = ""
    count: int = 0
    raw_mean: float = 0.0
    raw_std: float = 1.0

    @classmethod
    def fit(cls, raw: list[float], reference: str = "") -> Normalization:
        """Gain and bias that give ``raw`` mean 0 and standard deviation 1."""
        n = len(raw)
        mean = sum(raw) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in raw) / n) or 1.0
        return cls(gain=1.0 / std, bias=-mean / std, reference=reference, count=n, raw_mean=mean, raw_std=std)

    def save(self, model_dir: str) -> None:
        from rlhf.outputs import write_json

        write_json(os.path.join(model_dir, NORMALIZATION_FILE), self.__dict__)

    @classmethod
    def load(cls, model_dir: str) -> Normalization:
        path = os.path.join(model_dir, NORMALIZATION_FILE)
        if not os.path.exists(path):
            return cls()
        with open(path) as f:
            return cls(**json.load(f))

    def __call__(self, raw: torch.Tensor | float):
        return raw * self.gain + self.bias


class RewardScorer:
    """The one way later stages score text with a trained reward model: normalised rewards."""

    def __init__(self, model, tokenizer, normalization: Normalization, device="cpu", batch_size: int = 16):
        self.model, self.tok, self.norm, self.device, self.batch_size = model, tokenizer, normalization, device, batch_size

    @classmethod
    def from_dir(cls, path: str, tokenizer=None, device="cpu", dtype: str = "float32", batch_size: int = 16):
        from transformers import AutoTokenizer

        tok = tokenizer or AutoTokenizer.from_pretrained(path)
        model = from_pretrained(AutoModelForSequenceClassification, path, dtype=DTYPES[dtype])
        model.to(device).eval()
        return cls(model, tok, Normalization.load(path), device, batch_size)

    def encode(self, prompt: Messages, response: str, complete: bool = True) -> list[int]:
        return encode_conversation(self.tok, prompt, response, complete)

    def raw(self, prompts: list[Messages], responses: list[str], complete: list[bool] | None = None) -> list[float]:
        complete = complete if complete is not None else [True] * len(prompts)
        seqs = [self.encode(p, r, c) for p, r, c in zip(prompts, responses, complete)]
        return score_sequences(self.model, seqs, self.tok.pad_token_id, self.batch_size, self.device)

    def __call__(self, prompts: list[Messages], responses: list[str], complete: list[bool] | None = None) -> list[float]:
        """Normalised rewards of ``responses`` to the prompt conversations ``prompts`` (system message, earlier
        turns, the last user message); ``complete[i]=False`` for a response cut off before EOS."""
        return [self.norm(r) for r in self.raw(prompts, responses, complete)]
