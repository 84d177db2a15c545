"""Loading what ``rlhf eval`` and ``rlhf compare`` evaluate: the policies, their cache keys and the machine judges
(``rubric_judge``, ``reward_judge``, ``llm_judge`` config sections, shared by both stages)."""

from __future__ import annotations

import hashlib
import json
import os

from rlhf.models.loading import DTYPES, from_pretrained


def load_policy(path: str, dtype: str, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = from_pretrained(AutoModelForCausalLM, path, dtype=DTYPES[dtype]).to(device).eval()
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        raise ValueError(f"models: {path} has no PAD token distinct from EOS (train it with rlhf, or add one)")
    return model, tok


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_stamp(path: str) -> str:
    """Changes when the model's weights change (size + mtime of its safetensors files)."""
    if not os.path.isdir(path):
        return path
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    return ";".join(f"{f}:{os.path.getsize(os.path.join(path, f))}:{os.path.getmtime(os.path.join(path, f))}" for f in files)


def build_judge(name: str, cfg, dtype: str, device):
    """A machine judge from the ``rubric_judge`` / ``reward_judge`` / ``llm_judge`` sections of a stage config
    (``rlhf eval`` and ``rlhf compare`` share them)."""
    if name == "rubric":
        from rlhf.eval.rubric import RubricJudge

        return RubricJudge(cfg.rubric_judge.file, cfg.rubric_judge.tie_band)
    if name == "reward_model":
        from rlhf.eval.model_judges import RewardModelJudge
        from rlhf.models.reward import RewardScorer

        scorer = RewardScorer.from_dir(cfg.reward_judge.model, device=device, dtype=dtype)
        return RewardModelJudge(scorer, cfg.reward_judge.tie_band, cfg.reward_judge.missing_eos_score)
    if name == "llm":
        from rlhf.eval.model_judges import LLMJudge

        model, tok = load_policy(cfg.llm_judge.model, dtype, device)
        return LLMJudge(model, tok, cfg.llm_judge.template, device)
    raise ValueError(f"unknown machine judge {name!r}; choose from rubric, reward_model, llm")
