"""DPO: the loss at initialisation (policy == reference) is log 2 per pair, with full fine-tuning and LoRA; training
raises the test preference accuracy; a resumed run ends where a straight one does (with IPO, reached through
dpo.loss_type); the output loads with plain transformers and scores pairs as the stage did, and the reference after
training is still the SFT model; bad pairs are one error naming file and line; the config refuses what TRL would not
run."""

from __future__ import annotations

import inspect
import json
import math
import os
import typing

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.cli import main as cli_main
from rlhf.config import ConfigError, DPOConfig, DPOStageConfig, load_config
from rlhf.data.formats import Row
from rlhf.data.preference import dpo_features, encode_pair, parse_preference_row
from rlhf.data.sft import encode_prompt
from rlhf.stages import dpo

from .conftest import ROOT, TOKENIZER
from .test_faults_errors import one_error

CONFIG = os.path.join(ROOT, "configs/tiny/dpo.yaml")
TEST_PAIRS = os.path.join(ROOT, "data/preferences/test.jsonl")


def dpo_cfg(out, sft, *extra):
    return load_config(DPOStageConfig, CONFIG, [f"run.output_dir={out}", f"model.name_or_path={sft}",
                                                "run.progress=false", *extra])


def metrics(out) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f]


def summary(out) -> dict:
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def micro_dpo(tmp_path_factory, micro_sft) -> str:
    """Full fine-tuning of the micro SFT model on the first 160 training pairs (10 steps), all 104 test pairs."""
    out = str(tmp_path_factory.mktemp("micro_dpo"))
    dpo.run(dpo_cfg(out, micro_sft, "train.learning_rate=1e-3", "data.max_train_pairs=160"))
    return out


@pytest.fixture(scope="module")
def micro_dpo_lora(tmp_path_factory, micro_sft) -> str:
    """LoRA on the first 32 training pairs (4 steps of 8), 16 test pairs."""
    d = tmp_path_factory.mktemp("micro_dpo_lora")
    test = d / "test16.jsonl"
    with open(TEST_PAIRS) as f:
        test.write_text("".join(f.readlines()[:16]))
    out = str(d / "out")
    dpo.run(dpo_cfg(out, micro_sft, "lora.enabled=true", "lora.r=4", "lora.target_modules=[q_proj,v_proj]",
                    "train.learning_rate=2e-2", "train.max_steps=4", "run.logging_steps=1",
                    "data.max_train_pairs=32", "deepspeed.global_batch_size=8", f"data.test_file={test}"))
    return out


# ---- the loss at initialisation: the reference is the starting policy ------------------------------------------


def test_sigmoid_loss_at_initialisation_is_log2_full_finetuning(micro_dpo):
    first = metrics(micro_dpo)[0]  # logging_first_step: step 1's loss, all of it computed before the first update
    assert first["step"] == 1 and first["loss"] == pytest.approx(math.log(2), abs=1e-6), first
    assert first["rewards/margins"] == 0.0 and first["rewards/chosen"] == 0.0
    s = summary(micro_dpo)
    assert s["test_accuracy_start"] == 0.0 and s["test_margin_start"] == 0.0  # every implicit reward is exactly 0


def test_sigmoid_loss_at_initialisation_is_log2_with_lora(micro_dpo_lora):
    rows = metrics(micro_dpo_lora)
    assert rows[0]["step"] == 1 and rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6), rows[0]
    assert rows[0]["rewards/margins"] == 0.0
    assert any(r.get("loss", math.log(2)) < math.log(2) - 1e-3 for r in rows[1:]), rows  # and then it trained
    s = summary(micro_dpo_lora)
    assert s["test_accuracy_start"] == 0.0 and s["test_margin_start"] == 0.0


# ---- training ---------------------------------------------------------------------------------------------------


def test_dpo_raises_test_preference_accuracy(micro_dpo):
    s = summary(micro_dpo)
    assert s["test_pairs"] == 104 and s["steps"] == 10, s  # 160 pairs / global batch 16
    assert s["test_accuracy"] > s["test_accuracy_start"] + 0.5 and s["test_margin"] > s["test_margin_start"], s
    # not only relative to the reference: the policy itself now prefers the chosen response more often than SFT did
    assert s["test_logp_accuracy"] > s["test_logp_accuracy_start"], s
    assert set(s["test_accuracy_per_category"]) == set(json.loads(x)["category"] for x in open(TEST_PAIRS))
    assert s["train_loss"] < math.log(2)


def plain_logps(model, tok, pair: dict) -> tuple[float, float]:
    """Summed log-probabilities of the chosen and rejected responses with plain transformers (full logits)."""
    ex = parse_preference_row(Row("f", 1, pair), {})
    feats = dpo_features(tok, ex, encode_pair(tok, ex))
    out = []
    for side in ("chosen_ids", "rejected_ids"):
        ids = torch.tensor([feats["prompt_ids"] + feats[side]])
        with torch.no_grad():
            logp = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
        out.append(logp[len(feats["prompt_ids"]) - 1:].sum().item())
    return out[0], out[1]


@pytest.mark.parametrize("run", ["micro_dpo", "micro_dpo_lora"])
def test_output_loads_plainly_and_scores_like_the_stage_against_the_sft_reference(run, request, micro_sft):
    out = request.getfixturevalue(run)
    tok = AutoTokenizer.from_pretrained(out)
    policy, sft = AutoModelForCausalLM.from_pretrained(out), AutoModelForCausalLM.from_pretrained(micro_sft)
    pairs = [json.loads(x) for x in open(TEST_PAIRS)]
    saved = [json.loads(x) for x in open(os.path.join(out, "test_logps.jsonl"))]
    for s in saved[:4]:
        pair = pairs[s["line"] - 1]
        c, r = plain_logps(policy, tok, pair)
        assert (c, r) == (pytest.approx(s["chosen_logp"], abs=1e-3), pytest.approx(s["rejected_logp"], abs=1e-3))
        c, r = plain_logps(sft, tok, pair)  # after training, the reference is still the SFT model
        assert (c, r) == (pytest.approx(s["ref_chosen_logp"], abs=1e-3),
                          pytest.approx(s["ref_rejected_logp"], abs=1e-3))
        assert abs(s["chosen_logp"] - s["ref_chosen_logp"]) > 1e-2  # training moved the policy off the reference
    if run == "micro_dpo_lora":
        from peft import PeftModel

        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_sft),
                                            os.path.join(out, "adapter"))
        x = torch.tensor([[3, 100, 200, 300, 1, 4]])
        with torch.no_grad():
            assert torch.allclose(adapted(x).logits, policy(x).logits, atol=1e-4), "merged copy != SFT + adapter"
    assert not os.path.exists(os.path.join(out, "training_args.bin"))


def test_dpo_features_split_each_conversation_at_the_prompt():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    for line in open(TEST_PAIRS).readlines()[:8]:
        ex = parse_preference_row(Row("f", 1, json.loads(line)), {})
        enc = encode_pair(tok, ex)
        f = dpo_features(tok, ex, enc)
        assert f["prompt_ids"] == encode_prompt(tok, ex.prompt)  # the prompt with its generation prompt
        assert f["prompt_ids"] + f["chosen_ids"] == enc["chosen_ids"]  # the conversation the reward model scores
        assert f["prompt_ids"] + f["rejected_ids"] == enc["rejected_ids"]
        assert tok.decode(f["chosen_ids"]).startswith(ex.chosen[:20])


def test_dpo_resume_matches_uninterrupted_run_with_ipo(tmp_path, micro_sft, monkeypatch):
    from .resume import resume_matches_straight

    # IPO (Azar et al. 2023 eq. 17) through dpo.loss_type: (h - 1/(2 tau))^2 with h = 0 at initialisation, so
    # with tau = dpo.beta = 0.25 the first loss is 4
    args = ("dpo.loss_type=ipo", "dpo.beta=0.25", "train.max_steps=6", "run.save_steps=3", "run.logging_steps=1",
            "data.max_train_pairs=48", "deepspeed.global_batch_size=8", "data.test_file=")
    straight, resumed, result = resume_matches_straight(dpo.run, lambda out: dpo_cfg(out, micro_sft, *args),
                                                        tmp_path, monkeypatch, 3)
    rows = metrics(straight)
    assert rows[0]["step"] == 1 and rows[0]["loss"] == pytest.approx(4.0, abs=1e-5), rows[0]
    # the resumed run's log reads as one run: the same loss at every step (the last line is the Trainer's end line)
    assert [(r["step"], r.get("loss")) for r in metrics(resumed)] == [(r["step"], r.get("loss")) for r in rows]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 6]
    assert result["steps"] == 6 and result["loss_type"] == "ipo" and "test_accuracy" not in result
    assert result["train_loss"] == pytest.approx(summary(straight)["train_loss"], abs=1e-6)


# ---- bad input and config ------------------------------------------------------------------------------------


def test_identical_chosen_and_rejected_is_one_error_naming_file_and_line(tmp_path, micro_sft, capsys):
    rows = [json.loads(x) for x in open(os.path.join(ROOT, "data/preferences/train.jsonl")).readlines()[:6]]
    rows[3]["rejected"] = rows[3]["chosen"]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dpo"
    rc = cli_main(["dpo", CONFIG, f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false",
                   f"data.train_file={path}", "data.test_file="])
    err = capsys.readouterr().err
    line = one_error(rc, err, "data.on_invalid=drop")
    assert line.startswith(f"error: {path}:4: chosen and rejected responses are identical"), line
    assert not out.exists()


def test_config_keys_documented_and_checked(capsys):
    assert cli_main(["config", "dpo"]) == 0
    listing = capsys.readouterr().out
    assert "dpo.beta (float, default 0.1)" in listing and "dpo.loss_type" in listing
    cfg = load_config(DPOStageConfig, CONFIG)
    assert cfg.dpo.loss_type == "sigmoid" and cfg.model.name_or_path == "runs/tiny/sft"
    bad = {"dpo.loss_type=ipoo": "did you mean 'ipo'", "dpo.beta=0": "key 'dpo.beta'",
           "dpo.label_smoothing=0.1": "key 'dpo.label_smoothing'", "dpo.label_smoothing=0.5": "[0, 0.5)",
           "dpo.loss_type=exo_pair": "needs label_smoothing > 0", "train.eval_steps=5": "data.test_file",
           "lora.target_modules=[lm_head]": "lm_head"}
    for override, message in bad.items():
        extra = ["data.test_file="] if override.startswith("train.eval") else []
        extra += ["lora.enabled=true"] if override.startswith("lora") else []
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            load_config(DPOStageConfig, CONFIG, [override, *extra])
    load_config(DPOStageConfig, CONFIG, ["dpo.loss_type=robust", "dpo.label_smoothing=0.1"])


def test_every_loss_type_is_one_trl_computes():
    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer._compute_loss)
    names = typing.get_args(typing.get_type_hints(DPOConfig)["loss_type"])
    assert "sigmoid" in names and "ipo" in names
    for name in names:
        assert f'loss_type == "{name}"' in source, name
