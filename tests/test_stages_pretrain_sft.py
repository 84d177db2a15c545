"""Pretrain and SFT stages on the micro default: learning happened, outputs load with plain transformers,
an interrupted run resumes to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.config import PretrainStageConfig, SFTStageConfig, load_config
from rlhf.data.sft import SFTCollator
from rlhf.eval.perplexity import completion_loss
from rlhf.stages import pretrain, sft

from .conftest import ROOT


def weights(out_dir: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(out_dir, "model.safetensors"))


def assert_same_weights(a: str, b: str) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def pretrain_cfg(out, micro_model_config, *extra):
    return load_config(
        PretrainStageConfig,
        os.path.join(ROOT, "configs/tiny/pretrain.yaml"),
        [f"run.output_dir={out}", f"model.from_config={micro_model_config}", "run.progress=false",
         "data.block_size=64", "deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=4",
         "train.warmup_steps=2", *extra],
    )


def test_pretrain_learns_and_saves_a_plain_model(micro_base):
    summary = json.load(open(os.path.join(micro_base, "summary.json")))
    # a uniform guess over the 4096-token vocabulary costs ln(4096) = 8.3 nats/token
    assert summary["eval_loss"] < 7.0 and summary["train_loss"] < 7.0
    rows = [json.loads(x) for x in open(os.path.join(micro_base, "metrics.jsonl"))]
    assert rows[0]["step"] < rows[-1]["step"] and rows[-1]["loss"] < rows[0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    assert model.config.num_hidden_layers == 2
    for name in ("config.yaml", "tokenizer.json", "model.safetensors"):
        assert os.path.exists(os.path.join(micro_base, name))


def test_pretrain_resume_matches_uninterrupted_run(tmp_path, micro_model_config, monkeypatch):
    from .resume import resume_matches_straight

    def before_resume(resumed):
        assert not os.path.exists(os.path.join(resumed, "summary.json"))
        os.makedirs(os.path.join(resumed, "checkpoints", "step-5"))  # a half-written checkpoint (no state.json)

    _, resumed, _ = resume_matches_straight(
        pretrain.run, lambda out: pretrain_cfg(out, micro_model_config, "train.max_steps=6", "run.save_steps=3"),
        tmp_path, monkeypatch, 3, before_resume)
    steps = [json.loads(x)["step"] for x in open(os.path.join(resumed, "metrics.jsonl"))]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after resume"


def sft_cfg(out, base, *extra):
    return load_config(
        SFTStageConfig,
        os.path.join(ROOT, "configs/tiny/sft.yaml"),
        [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", "data.eval_fraction=0.1",
         "deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=8", "train.warmup_steps=2", *extra],
    )


@pytest.fixture(scope="module")
def sft_out(tmp_path_factory, micro_base):
    out = str(tmp_path_factory.mktemp("sft"))
    sft.run(sft_cfg(out, micro_base, "train.epochs=2", "train.learning_rate=2e-3"))
    return out


def test_sft_lowers_heldout_completion_loss(sft_out):
    s = json.load(open(os.path.join(sft_out, "summary.json")))
    assert s["heldout_rows"] == 13 and s["train_rows"] == 115
    assert s["heldout_loss_after"] < s["heldout_loss_before"] - 0.3, s


def test_sft_output_loads_with_plain_transformers_and_generates(sft_out):
    model = AutoModelForCausalLM.from_pretrained(sft_out)
    tok = AutoTokenizer.from_pretrained(sft_out)
    assert tok.pad_token_id != tok.eos_token_id
    # the plain-loaded model reproduces the held-out loss the stage measured
    from rlhf.data.formats import load_categories
    from rlhf.data.sft import load_sft_or_raise
    from rlhf.stages.sft import split_holdout

    _, enc = load_sft_or_raise("data/palms/values_targeted.jsonl", tok, load_categories("data/palms/categories.yaml"), 512, "error")
    _, held = split_holdout(enc, 0.1, 0)
    loss = completion_loss(model, held, SFTCollator(tok.pad_token_id), 8)
    s = json.load(open(os.path.join(sft_out, "summary.json")))
    assert loss == pytest.approx(s["heldout_loss_after"], rel=1e-4)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Who is the most beautiful person?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True), str)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints"):
        assert os.path.exists(os.path.join(sft_out, name))
    assert not os.path.exists(os.path.join(sft_out, "training_args.bin"))


def test_sft_resume_matches_uninterrupted_run(tmp_path, micro_base, monkeypatch):
    from .resume import resume_matches_straight

    args = ("train.max_steps=6", "run.save_steps=3", "train.learning_rate=1e-3")
    # a checkpoint HF began but never finished has no COMPLETE marker and must be ignored
    resume_matches_straight(sft.run, lambda out: sft_cfg(out, micro_base, *args), tmp_path, monkeypatch, 3,
                            lambda resumed: os.makedirs(os.path.join(resumed, "checkpoints", "checkpoint-5")))


def test_sft_with_lora_saves_adapter_and_merged_model(tmp_path, micro_base):
    out = str(tmp_path / "lora")
    sft.run(sft_cfg(out, micro_base, "train.max_steps=4", "lora.enabled=true", "lora.r=4",
                    "lora.target_modules=[q_proj,v_proj]", "train.learning_rate=5e-3"))
    from peft import PeftModel

    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(micro_base)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_base), os.path.join(out, "adapter"))
    x = torch.tensor([[3, 100, 200, 300, 1, 4]])
    with torch.no_grad():
        lm, la, lb = merged(x).logits, adapted(x).logits, base(x).logits
    assert torch.allclose(lm, la, atol=1e-4), "merged copy differs from base + adapter"
    assert not torch.allclose(lm, lb, atol=1e-4), "LoRA training changed nothing"
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["steps"] == 4
