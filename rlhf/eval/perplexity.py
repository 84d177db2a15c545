"""Capability integrity: token-level loss and perplexity of a causal LM on held-out text blocks."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def lm_loss(model, blocks: torch.Tensor, batch_size: int = 8, device: torch.device | str = "cpu") -> float:
    """Mean next-token cross-entropy (nats/token) of ``model`` over ``blocks`` (N, T)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i : i + batch_size].to(device)  # (b, T)
        logits = model(input_ids=x).logits[:, :-1].float()  # (b, T-1, V)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += x[:, 1:].numel()
    if was_training:
        model.train()
    return total / max(count, 1)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


@torch.no_grad()
def completion_loss(model, encodings: list[dict], collator, batch_size: int = 8, device="cpu") -> float:
    """Mean cross-entropy per completion token (labels != -100), token-weighted over ``encodings``.

    Every rank runs every batch (under ZeRO-3 each forward is a collective), so the result is identical on all.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(encodings), batch_size):
        batch = {k: v.to(device) for k, v in collator(encodings[i : i + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at position t
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += nll.item()
        count += int((labels != -100).sum())
    if was_training:
        model.train()
    return total / max(count, 1)
