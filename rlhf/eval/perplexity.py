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


@torch.no_grad()
def sequence_logprobs(model, sequences: list[tuple[list[int], list[int]]], pad_id: int, temperature: float = 1.0,
                      batch_size: int = 8, device="cpu") -> list[float]:
    """Summed log-probability of each response under ``model``'s ``softmax(logits / temperature)``, given its
    prompt: ``sequences`` are (prompt ids, response ids) pairs; one float per pair."""
    from rlhf.models.policy import logprobs_from_logits

    was_training = model.training
    model.eval()
    out: list[float] = []
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i : i + batch_size]
        width = max(len(p) + len(r) for p, r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        resp = torch.zeros((len(chunk), width), dtype=torch.bool)
        for j, (p, r) in enumerate(chunk):
            ids[j, : len(p) + len(r)] = torch.tensor(p + r)
            attn[j, : len(p) + len(r)] = 1
            resp[j, len(p) : len(p) + len(r)] = True
        ids, attn, resp = ids.to(device), attn.to(device), resp.to(device)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]  # position t predicts token t+1
        logp = logprobs_from_logits(logits, ids[:, 1:], temperature) * resp[:, 1:]
        out += logp.sum(1).tolist()
    if was_training:
        model.train()
    return out


def kl_to_baseline(model, baseline, sequences: list[tuple[list[int], list[int]]], pad_id: int, temperature: float,
                   batch_size: int = 8, device="cpu") -> float:
    """Monte Carlo estimate of KL(pi || pi_baseline) per response, in nats: the mean over responses sampled from
    ``model`` of sum_t [log pi(y_t) - log pi_baseline(y_t)] (the k1 estimator, unbiased for samples from pi), both
    at the sampling temperature. ``sequences`` are (prompt ids, response ids) of ``model``'s own samples."""
    own = sequence_logprobs(model, sequences, pad_id, temperature, batch_size, device)
    base = sequence_logprobs(baseline, sequences, pad_id, temperature, batch_size, device)
    return sum(a - b for a, b in zip(own, base)) / max(len(own), 1)
