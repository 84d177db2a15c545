"""The PPO critic: a sequence-classification model whose scalar head gives V(s_t) at every token.

It starts from the reward model (InstructGPT) or from ``critic.model``. PPO optimises the *normalised* reward
(gain x raw + bias, ``reward_normalization.json``), so a critic copied from the raw reward model starts off by
(gain - 1) x raw + bias at every token; with gamma = 1 that lands on the last token's advantage, a
position-dependent bias that whitening does not remove. :func:`load_critic` folds the normalisation into the head,
so that its first value at the last token is the normalised reward of the sequence.
"""

from __future__ import annotations

import dataclasses
import json

import torch

from rlhf.config import ModelConfig
from rlhf.models.reward import NORMALIZATION_FILE, Normalization, _head, load_reward_backbone


def fold_normalization(model: torch.nn.Module, norm: Normalization) -> float:
    """Make ``model``'s head compute gain x head(h) + bias, exactly; return the offset left outside the weights.

    The gain goes into the head's weight (and bias): exact, and a plain transformers load of the saved critic
    computes the same. The bias goes into the head's bias parameter when it has one (then nothing is left). The
    usual heads (Llama, Qwen2, GPT-2, OPT: ``score``) have none, and with a bias-free norm before them no weight
    can add a constant exactly; giving the head a bias parameter would change its state dict, which plain
    transformers would then drop on loading. So the bias stays a constant offset: a forward hook on the head adds
    it (it is not a parameter: the checkpoint, the optimizer and a resumed run never see it, so it is never applied
    twice), and the saved critic carries it as its own ``reward_normalization.json`` (gain 1, bias = the offset),
    read as for a reward model: plain output + that file = the value rlhf used, and a critic.model with that file
    starts from exactly those values again.
    """
    head = _head(model)
    with torch.no_grad():
        head.weight.mul_(norm.gain)
        if getattr(head, "bias", None) is not None:
            head.bias.mul_(norm.gain).add_(norm.bias)
            return 0.0
    offset = float(norm.bias)
    if offset:
        head.register_forward_hook(lambda _module, _inputs, output: output + offset)
    return offset


def load_critic(cfg: ModelConfig, tok, seed: int = 0) -> tuple[torch.nn.Module, float]:
    """The critic from ``cfg.name_or_path`` on the normalised reward's scale, and its value offset (see above).

    A checkpoint without ``reward_normalization.json`` (a causal LM with a new head, a hub id) is used as it is.
    """
    model = load_reward_backbone(cfg, tok, seed)
    return model, fold_normalization(model, Normalization.load(cfg.name_or_path))


def critic_files(offset: float) -> dict[str, str]:
    """Extra files of the saved critic: its value offset as ``reward_normalization.json`` (none if 0)."""
    if not offset:
        return {}
    norm = Normalization(gain=1.0, bias=offset, reference="critic value offset (the head has no bias parameter)")
    return {NORMALIZATION_FILE: json.dumps(dataclasses.asdict(norm), indent=2) + "\n"}
