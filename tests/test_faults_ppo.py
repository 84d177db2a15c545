"""PPO correctness: dropout fully off (the ratio starts at 1), the missing-EOS penalty only lowers a score whatever
the reward's scale, and the critic starts from the normalised reward."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rlhf.config import PPOStageConfig, load_config
from rlhf.models.loading import disable_dropout
from rlhf.stages import ppo

from .conftest import MICRO_MODEL, ROOT, TOKENIZER

# ----------------------------------------------------------------------------------------------------------
# 4. dropout
# ----------------------------------------------------------------------------------------------------------

SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
DROPOUT_CONFIGS = {  # every dropout knob of the architecture at 0.5
    "llama": dict(intermediate_size=64, num_key_value_heads=4, attention_dropout=0.5),
    "qwen2": dict(intermediate_size=64, num_key_value_heads=4, attention_dropout=0.5),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=32, dropout=0.5, attention_dropout=0.5, layerdrop=0.5),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5,
                 bos_token_id=0, eos_token_id=0),
    "gpt_neox": dict(intermediate_size=64, attention_dropout=0.5, hidden_dropout=0.5),
}


@pytest.mark.parametrize("model_type", sorted(DROPOUT_CONFIGS))
def test_disable_dropout_makes_train_mode_forwards_identical(model_type):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **SMALL, **DROPOUT_CONFIGS[model_type]))
    model.train()
    x = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    assert not torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)  # the configured dropout is active
    disable_dropout(model)
    assert model.training
    assert torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)


def dropout_checkpoint(path: str, model_type: str) -> str:
    """A micro causal LM saved with plain transformers, its config asking for dropout 0.5 everywhere."""
    conf = {k: v for k, v in MICRO_MODEL.items() if k != "model_type"}
    if model_type == "llama":
        conf.update(attention_dropout=0.5)
    else:  # opt
        conf = {k: v for k, v in conf.items() if k not in ("intermediate_size", "num_key_value_heads")}
        conf.update(ffn_dim=192, word_embed_proj_dim=64, dropout=0.5, attention_dropout=0.5, layerdrop=0.5)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **conf)).save_pretrained(path)
    AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(path)
    assert json.load(open(os.path.join(path, "config.json")))["attention_dropout"] == 0.5
    return path


@pytest.mark.parametrize("model_type", ["llama", "opt"])
def test_ppo_ratio_starts_at_one_with_a_dropout_checkpoint(tmp_path, model_type):
    """One minibatch in iteration 1: before its optimizer step the new log-probs are the rollout's, exactly."""
    model = dropout_checkpoint(str(tmp_path / "model"), model_type)
    out = str(tmp_path / "ppo")
    ppo.run(load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"), [
        f"run.output_dir={out}", f"model.name_or_path={model}", "run.progress=false",
        "reward.model=", "reward.function=tests.rewards:supportive_words", f"critic.model={model}",
        "data.heldout_prompt_file=", "data.ptx_eval_file=", "ppo.ptx_coef=0", "ppo.gold_rubric=",
        "ppo.iterations=1", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=8", "ppo.ppo_epochs=1",
        "deepspeed.micro_batch_size=8", "generation.max_new_tokens=8", "ppo.sample_every=1000",
    ]))
    (row,) = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert row["policy_clipfrac"] == 0.0, row
    assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-6), row
    assert row["approx_kl"] == pytest.approx(0.0, abs=1e-7), row
