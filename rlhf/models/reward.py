"""Reward models: a causal LM backbone with a scalar head (``AutoModelForSequenceClassification``, 1 label).

The reward is read at the last non-pad token of ``prompt + response + EOS`` (transformers' sequence
classification heads pick that token from ``pad_token_id``; PAD differs from EOS, so it is the EOS).

Normalisation (InstructGPT: a bias so that demonstrations score 0 on average before RL; N+ detail 12: gain and
bias so the reference samples have mean 0 and std 1) is saved beside the model in ``reward_normalization.json``;
every consumer (PPO, eval judges) goes through :class:`RewardScorer`, which applies it.
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
from rlhf.data.sft import encode_completion, encode_prompt
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

    def encode(self, prompt: Messages, response: str) -> list[int]:
        return encode_prompt(self.tok, prompt) + encode_completion(self.tok, response)

    def raw(self, prompts: list[Messages], responses: list[str]) -> list[float]:
        seqs = [self.encode(p, r) for p, r in zip(prompts, responses)]
        return score_sequences(self.model, seqs, self.tok.pad_token_id, self.batch_size, self.device)

    def __call__(self, prompts: list[Messages], responses: list[str]) -> list[float]:
        """Normalised rewards of ``responses`` to ``prompts``."""
        return [self.norm(r) for r in self.raw(prompts, responses)]
