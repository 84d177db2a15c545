"""PPO correctness: dropout fully off (the ratio starts at 1), the missing-EOS penalty only lowers a score whatever
the reward's scale, and the critic starts from the normalised reward."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import rlhf.engine as E
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


# ----------------------------------------------------------------------------------------------------------
# 5. the missing-EOS penalty on any reward scale
# ----------------------------------------------------------------------------------------------------------


def test_shape_scores_by_hand():
    from rlhf.algos.scores import missing_eos_gain, shape_scores

    s = torch.tensor([2.0, -5.0, 0.5, 7.0])
    eos = torch.tensor([True, False, False, True])
    assert shape_scores(s, eos).tolist() == [2.0, -5.0, 0.5, 7.0]
    assert shape_scores(s, eos, penalty=1.0).tolist() == [2.0, -6.0, -0.5, 7.0]  # TRL: subtract
    assert shape_scores(s, eos, penalty=1.0, clip=3.0).tolist() == [2.0, -4.0, -0.5, 3.0]  # clip, then subtract
    assert shape_scores(s, eos, penalty=1.0, replace_with=-1.0).tolist() == [2.0, -1.0, -1.0, 7.0]  # N+: replace
    assert shape_scores(s, eos, replace_with=-10.0, clip=3.0).tolist() == [2.0, -3.0, -3.0, 3.0]
    with pytest.raises(ValueError, match="must be >= 0"):
        shape_scores(s, eos, penalty=-1.0)
    # -1 replaces -5 (+4) and 0.5 (-1.5): on average it raised them by 1.25
    assert missing_eos_gain(s, eos, shape_scores(s, eos, replace_with=-1.0)) == (1.25, 2)
    assert missing_eos_gain(s, eos, shape_scores(s, eos, penalty=1.0)) == (-1.0, 2)
    assert missing_eos_gain(s, eos, shape_scores(s, eos, penalty=1.0, clip=3.0), clip=3.0) == (-1.0, 2)
    assert missing_eos_gain(s, torch.ones(4, dtype=torch.bool), s) == (0.0, 0)


def length_rule_cfg(out, sft, rm, *extra):
    return load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"), [
        f"run.output_dir={out}", f"model.name_or_path={sft}", "run.progress=false",
        "reward.model=", "reward.function=tests.rewards:length_rule", f"critic.model={rm}",
        "data.heldout_prompt_file=", "data.ptx_eval_file=", "ppo.ptx_coef=0", "ppo.gold_rubric=",
        "ppo.rollout_batch_size=16", "ppo.mini_batch_size=8", "ppo.ppo_epochs=1", "deepspeed.micro_batch_size=8",
        "generation.max_new_tokens=12", "ppo.sample_every=1000", "run.save_steps=1000", *extra,
    ])


def test_a_negative_penalty_is_refused_with_the_replacement_key_named(tmp_path, micro_sft, micro_rm):
    from rlhf.config import ConfigError

    with pytest.raises(ConfigError, match=r"ppo\.missing_eos_penalty.*ppo\.missing_eos_score=-3"):
        length_rule_cfg(str(tmp_path), micro_sft, micro_rm, "ppo.missing_eos_penalty=-3")


def test_missing_eos_penalty_only_lowers_a_score_on_another_scale(tmp_path, micro_sft, micro_rm, monkeypatch):
    """A reward of about -5 (the RM's normalised scores are about 0): not ending with EOS must not pay."""
    calls = []
    real = getattr(ppo, "shape_scores", None)

    def spy(scores, has_eos, *a, **k):
        shaped = real(scores, has_eos, *a, **k)
        calls.append((scores.clone(), has_eos.clone(), shaped.clone()))
        return shaped

    monkeypatch.setattr(ppo, "shape_scores", spy, raising=False)
    out = str(tmp_path / "ppo")
    ppo.run(length_rule_cfg(out, micro_sft, micro_rm, "ppo.iterations=3", "ppo.missing_eos_penalty=1.0"))
    rows = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert all(-6.5 < r["score_mean"] < -4 for r in rows), rows  # the rule's own scale
    assert all(r["eos_rate"] < 1 for r in rows), rows  # some responses hit the limit
    for r in rows:  # the shaped reward is the score lowered by 1.0 x the fraction of responses without EOS
        assert r["reward_mean"] == pytest.approx(r["score_mean"] - (1 - r["eos_rate"]), abs=1e-4), r
    assert len(calls) == 3
    for raw, eos, shaped in calls:
        assert torch.equal(shaped[eos], raw[eos])
        assert torch.equal(shaped[~eos], raw[~eos] - 1.0)


def test_a_replacement_score_above_the_rewards_it_replaces_warns(tmp_path, micro_sft, micro_rm, capsys):
    out = str(tmp_path / "ppo")
    ppo.run(length_rule_cfg(out, micro_sft, micro_rm, "ppo.iterations=1", "ppo.missing_eos_score=-3"))
    (row,) = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert row["eos_rate"] < 1 and row["reward_mean"] > row["score_mean"]  # -3 replaced scores of at most -4
    err = capsys.readouterr().err
    assert "warning: iteration 1: ppo.missing_eos_score -3 sits above the mean score" in err, err
    # a replacement below every score it replaces stays quiet
    ppo.run(length_rule_cfg(str(tmp_path / "quiet"), micro_sft, micro_rm, "ppo.iterations=1",
                            "ppo.missing_eos_score=-20"))
    assert "missing_eos_score" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# 19. the critic starts on the normalised reward's scale
# ----------------------------------------------------------------------------------------------------------

TEXTS = ["Please talk to someone you trust.", "No.", "You can ask a doctor for help, and people do support you."]


def batch(tok):
    from rlhf.models.reward import pad_right

    return pad_right([tok(t)["input_ids"] + [tok.eos_token_id] for t in TEXTS], tok.pad_token_id)


def normalised_rm_scores(rm_dir, tok, ids, mask):
    from rlhf.config import ModelConfig
    from rlhf.models.reward import Normalization, load_reward_backbone, raw_rewards

    rm = load_reward_backbone(ModelConfig(name_or_path=rm_dir), tok).eval()
    norm = Normalization.load(rm_dir)
    assert norm.gain != 1.0 and norm.bias != 0.0  # the fold has something to do
    return norm(raw_rewards(rm, ids, mask))


@pytest.mark.parametrize("source", ["reward.model", "critic.model"])
def test_initial_critic_value_at_the_last_token_is_the_normalised_reward(tmp_path, micro_sft, micro_rm, monkeypatch,
                                                                         source):
    """The critic PPO builds, from the reward model or from a critic.model with a reward_normalization.json."""
    built = []
    real = E.wrap_trainable

    def capture(model, *a, **k):
        built.append(model)
        if len(built) == 2:  # actor, then critic: stop before any training
            raise KeyboardInterrupt("critic built")
        return real(model, *a, **k)

    monkeypatch.setattr(E, "wrap_trainable", capture)
    reward = ["reward.function=", f"reward.model={micro_rm}", "critic.model="] if source == "reward.model" else []
    with pytest.raises(KeyboardInterrupt, match="critic built"):
        ppo.run(length_rule_cfg(str(tmp_path / "ppo"), micro_sft, micro_rm, "ppo.iterations=1", *reward))
    critic = built[1].eval()
    tok = AutoTokenizer.from_pretrained(micro_rm)
    ids, mask = batch(tok)
    with torch.no_grad():
        values = critic(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()  # read at the last token
    torch.testing.assert_close(values, normalised_rm_scores(micro_rm, tok, ids, mask), rtol=1e-5, atol=1e-5)


def test_fold_into_a_head_with_a_bias_parameter_is_exact():
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.critic import fold_normalization
    from rlhf.models.reward import Normalization

    conf = AutoConfig.for_model("llama", **SMALL, intermediate_size=64, num_key_value_heads=4, num_labels=1,
                                pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(conf).eval()
    model.score = torch.nn.Linear(32, 1, bias=True)
    x = torch.randint(1, 64, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        raw = model(input_ids=x).logits
        assert fold_normalization(model, Normalization(gain=2.5, bias=-0.75)) == 0.0  # all of it in the weights
        torch.testing.assert_close(model(input_ids=x).logits, 2.5 * raw - 0.75)
        model.score = torch.nn.Linear(32, 1, bias=False)
        raw = model(input_ids=x).logits
        assert fold_normalization(model, Normalization(gain=2.5, bias=-0.75)) == -0.75  # the offset is left over
        torch.testing.assert_close(model(input_ids=x).logits, 2.5 * raw - 0.75)


def test_resumed_run_folds_once_and_the_saved_critic_keeps_its_values(tmp_path, micro_sft, micro_rm, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from rlhf.config import ModelConfig
    from rlhf.models.critic import load_critic
    from rlhf.models.reward import Normalization, raw_rewards

    from .test_stages_pretrain_sft import assert_same_weights

    args = ("ppo.iterations=2", "run.save_steps=1", "reward.function=", f"reward.model={micro_rm}", "critic.model=")
    from .resume import resume_matches_straight

    straight, resumed, _ = resume_matches_straight(
        ppo.run, lambda out: length_rule_cfg(out, micro_sft, micro_rm, *args), tmp_path, monkeypatch, 1)
    metrics = [[json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))] for d in (straight, resumed)]
    assert [r["value_loss"] for r in metrics[0]] == pytest.approx([r["value_loss"] for r in metrics[1]], rel=1e-6)
    assert_same_weights(os.path.join(straight, "critic"), os.path.join(resumed, "critic"))
    saved = os.path.join(resumed, "critic")
    offset = Normalization.load(saved)
    assert offset.gain == 1.0 and offset.bias == pytest.approx(Normalization.load(micro_rm).bias)
    # read plainly, the saved critic + its file gives the values rlhf builds from it as critic.model (no second fold)
    tok = AutoTokenizer.from_pretrained(saved)
    ids, mask = batch(tok)
    plain = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    again, _ = load_critic(ModelConfig(name_or_path=saved), tok)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=ids, attention_mask=mask).logits.squeeze(-1),
                                   offset(raw_rewards(plain, ids, mask)))
