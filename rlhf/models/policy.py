"""Policy-side model operations shared by PPO and evaluation: batched generation, log-probs, values, responses.

Layout of a rollout batch: prompts left-padded to width P, responses right-padded to width R, so the response
logits of every row sit at positions P-1 .. P+R-2. Position ids come from the attention mask (N+ detail 2), so
left padding does not shift positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Rollout:
    """Generated responses; B rows, P prompt columns (left-padded), R response columns (right-padded).

    prompt_ids: (B, P)   prompt tokens, PAD on the left
    prompt_mask: (B, P)  1 on real prompt tokens
    response_ids: (B, R) response tokens, PAD after the first EOS
    response_mask: (B, R) 1 on response tokens up to and including the first EOS
    has_eos: (B,)        whether the response ended with EOS (else it hit max_new_tokens)
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    has_eos: torch.Tensor
    logits: torch.Tensor | None = None  # (B, R, V) raw logits of the sampling pass, when asked for; not carried on

    @property
    def input_ids(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def select(self, rows: list[int]) -> Rollout:
        """The rollout of episodes ``rows`` (in that order)."""
        return Rollout(self.prompt_ids[rows], self.prompt_mask[rows], self.response_ids[rows],
                       self.response_mask[rows], self.has_eos[rows])


def left_pad(seqs: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, n - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, n - len(s) :] = 1
    return ids.to(device), mask.to(device)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def truncate_after_eos(response: torch.Tensor, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep tokens up to and including the first EOS; PAD after it (N+ detail 4).

    response: (B, R). Returns (response, mask, has_eos).
    """
    is_eos = response == eos_id
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.float().argmax(1), torch.full_like(has_eos, response.shape[1], dtype=torch.long))
    idx = torch.arange(response.shape[1], device=response.device)[None, :]
    mask = (idx <= first[:, None]).long()
    if not has_eos.all():  # generation already pads after EOS; without EOS every token up to R is real
        mask = torch.where(has_eos[:, None], mask, torch.ones_like(mask))
    return torch.where(mask.bool(), response, torch.full_like(response, pad_id)), mask, has_eos


@torch.no_grad()
def generate(model, prompt_ids: list[list[int]], tok, max_new_tokens: int, temperature: float, top_k: int = 0,
             top_p: float = 1.0, do_sample: bool = True, device=None, synced_gpus: bool = False,
             min_new_tokens: int = 0, keep_logits: bool = False) -> Rollout:
    """Sample responses with the KV cache for a batch of tokenised prompts (left padding).

    ``synced_gpus``: keep decoding until every rank is done (needed when a ZeRO-3 model gathers its parameters
    layer by layer, a collective at every step; see ``rlhf.engine.gathered_for_generation``). ``min_new_tokens``:
    suppress EOS until a response has that many tokens (benchmarks at a fixed length). ``keep_logits``: keep the
    raw logits (before temperature and any other processor) of every decoding step in ``Rollout.logits``."""
    ids, mask = left_pad(prompt_ids, tok.pad_token_id, device)
    kw = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, use_cache=True, synced_gpus=synced_gpus)
    if min_new_tokens:
        kw["min_new_tokens"] = min_new_tokens
    if do_sample:
        kw.update(temperature=temperature, top_k=top_k, top_p=top_p)
    else:
        kw.update(temperature=None, top_k=None, top_p=None)
    if keep_logits:
        kw.update(output_logits=True, return_dict_in_generate=True)
    out = model.generate(input_ids=ids, attention_mask=mask, **kw)
    logits = None
    if keep_logits:
        logits = torch.stack(out.logits, dim=1) if out.logits else None
        out = out.sequences
    response = out[:, ids.shape[1] :]
    if response.shape[1] == 0:
        response = torch.full((ids.shape[0], 1), tok.eos_token_id, dtype=torch.long, device=ids.device)
        logits = None
    response, rmask, has_eos = truncate_after_eos(response, tok.eos_token_id, tok.pad_token_id)
    return Rollout(ids, mask, response, rmask, has_eos, logits)


def response_logits(model, rollout_or_ids, attention_mask=None, prompt_width: int | None = None,
                    response_only: bool = False) -> torch.Tensor:
    """Logits predicting each response token: (B, R, V).

    ``response_only`` (``ppo.response_logits_only``): only the R + 1 last positions go through the LM head
    (transformers' ``logits_to_keep``, where the model takes it). The prompt's logits are never used, and on a small
    model the head over the vocabulary is a large share of a forward and backward pass. The logits are the same
    numbers; the head's weight gradient, a sum over fewer positions, may differ in the last bits (tested)."""
    if isinstance(rollout_or_ids, Rollout):
        input_ids, attention_mask, prompt_width = (
            rollout_or_ids.input_ids, rollout_or_ids.attention_mask, rollout_or_ids.prompt_ids.shape[1]
        )
    else:
        input_ids = rollout_or_ids
    keep = input_ids.shape[1] - prompt_width + 1
    kw = {"logits_to_keep": keep} if response_only and takes_logits_to_keep(model) else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                use_cache=False, **kw)
    return out.logits[:, -keep:-1]


_KEEPS: dict[type, bool] = {}


def takes_logits_to_keep(model) -> bool:
    """Whether the causal LM under ``model`` (a DeepSpeed engine, a peft model, or the model) takes
    ``logits_to_keep``."""
    import inspect

    m = getattr(model, "module", model)
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    if type(m) not in _KEEPS:
        _KEEPS[type(m)] = "logits_to_keep" in inspect.signature(m.forward).parameters
    return _KEEPS[type(m)]


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token) under logits / temperature: (B, R). Dividing by the sampling temperature keeps the PPO
    ratio consistent with how tokens were sampled (N+ detail 3)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Token entropy (B, R) of softmax(logits / temperature)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_values(critic, rollout: Rollout) -> torch.Tensor:
    """Per-token values V(s_t) for every response position: (B, R).

    The critic is a sequence-classification model (initialised from the reward model); its scalar head is applied
    to every hidden state, and V_t is read at the state that predicts response token t (position P-1+t).
    """
    base = getattr(critic, critic.base_model_prefix)
    head = critic.score if hasattr(critic, "score") else critic.classifier
    am = rollout.attention_mask
    hidden = base(input_ids=rollout.input_ids, attention_mask=am, position_ids=position_ids(am),
                  use_cache=False).last_hidden_state
    values = head(hidden).squeeze(-1).float()  # (B, P + R)
    P = rollout.prompt_ids.shape[1]
    return values[:, P - 1 : -1]


def response_texts(tok, rollout: Rollout) -> list[str]:
    """The responses as every stage records them: decoded, special tokens (EOS, PAD) skipped, whitespace stripped.
    The reward model and reward functions score these texts in their conversation (``rlhf.models.reward``)."""
    return [t.strip() for t in tok.batch_decode(rollout.response_ids, skip_special_tokens=True)]
