"""What the PPO speed options change in the numbers: the LM head over response positions only
(``ppo.response_logits_only``) gives the same logits and gradients equal to rounding, and the sampling pass's logits
(``ppo.logprobs_from_generation``) agree with a recomputation to rounding (the measured gaps are printed and
documented in docs/speed.md). The bit-identical changes are tested where they live (test_algos, test_engine)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.models.policy import (
    Rollout,
    generate,
    logprobs_from_logits,
    position_ids,
    response_logits,
    takes_logits_to_keep,
)
from rlhf.stages import ppo

from .test_ppo import metrics, ppo_cfg


def _rollout(model_dir: str, keep_logits: bool = False, seed: int = 0, max_new_tokens: int = 20):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [tok.encode(t) for t in ("How should I treat my neighbours?", "Is it fair to judge people",
                                       "Tell me about", "Why do people disagree about politics so much?")]
    torch.manual_seed(seed)
    roll = generate(model, prompts, tok, max_new_tokens, temperature=0.7, keep_logits=keep_logits)
    return model, tok, roll


def _full_head_logits(model, roll: Rollout) -> torch.Tensor:
    """The response logits as computed before: the LM head over every position, then sliced."""
    am = roll.attention_mask
    out = model(input_ids=roll.input_ids, attention_mask=am, position_ids=position_ids(am), use_cache=False)
    return out.logits[:, roll.prompt_ids.shape[1] - 1 : -1]


def test_response_positions_only_give_the_full_heads_logits_and_gradients(micro_sft):
    model, _, roll = _rollout(micro_sft)
    assert takes_logits_to_keep(model)  # otherwise the comparison below compares the full head with itself
    with torch.no_grad():
        only = response_logits(model, roll, response_only=True)
        assert torch.equal(response_logits(model, roll), _full_head_logits(model, roll))  # the default: unchanged
        assert torch.equal(only, _full_head_logits(model, roll))
    grads = []
    for only in (True, False):
        model.zero_grad()
        logp = logprobs_from_logits(response_logits(model, roll, response_only=only), roll.response_ids, 0.7)
        (logp * roll.response_mask).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    gap = max(((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item() for a, b in zip(*grads))
    print(f"largest relative gradient difference, response positions only vs the full head: {gap:.1e}")
    assert gap < 1e-5


def test_response_logits_only_moves_a_ppo_run_by_rounding_only(tmp_path, micro_sft, micro_rm):
    rows = {}
    for on in (False, True):
        out = str(tmp_path / f"only{on}")
        ppo.run(ppo_cfg(out, micro_sft, micro_rm, "ppo.iterations=3", f"ppo.response_logits_only={str(on).lower()}",
                        "data.ptx_eval_file="))
        rows[on] = metrics(out)
    for a, b in zip(rows[False], rows[True]):
        for key in ("policy_loss", "value_loss", "kl", "score_mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (key, a[key], b[key])


def test_logprobs_from_the_sampling_pass_match_a_recomputation_to_rounding(micro_sft):
    model, _, roll = _rollout(micro_sft, keep_logits=True)
    assert roll.logits is not None and roll.logits.shape[:2] == roll.response_ids.shape
    mask = roll.response_mask.bool()
    with torch.no_grad():
        again = logprobs_from_logits(response_logits(model, roll), roll.response_ids, 0.7)
    sampled = logprobs_from_logits(roll.logits, roll.response_ids, 0.7)
    gap = (sampled - again)[mask].abs().max().item()
    print(f"max |log-prob from sampling - recomputed| = {gap:.2e} over {int(mask.sum())} tokens")
    assert gap < 1e-4
    # the raw logits, not the processed scores: temperature is applied once, by logprobs_from_logits
    assert not torch.allclose(sampled[mask], logprobs_from_logits(roll.logits * 0.7, roll.response_ids, 0.7)[mask])


def test_logprobs_from_generation_skips_the_actors_rollout_forward(tmp_path, micro_sft, micro_rm, monkeypatch):
    calls = []
    real = ppo.response_logits

    def counting(model, rollout, *a, **k):
        calls.append(torch.is_grad_enabled())
        return real(model, rollout, *a, **k)

    monkeypatch.setattr(ppo, "response_logits", counting)
    per_run = {}
    for on in (False, True):
        calls.clear()
        out = str(tmp_path / f"gen{on}")
        ppo.run(ppo_cfg(out, micro_sft, micro_rm, "ppo.iterations=2", f"ppo.logprobs_from_generation={str(on).lower()}",
                        "data.ptx_eval_file="))
        per_run[on] = sum(1 for grad in calls if not grad)  # forward passes without gradients: the experience
        rows = metrics(out)
        assert len(rows) == 2 and all(abs(r["policy_loss"]) < 10 for r in rows)
    assert per_run[False] == 2 * 2 and per_run[True] == 2  # actor + reference per iteration, or the reference only


@pytest.mark.parametrize("do_sample", [True, False])
def test_min_new_tokens_forces_the_response_length(micro_sft, do_sample):
    tok = AutoTokenizer.from_pretrained(micro_sft)
    model = AutoModelForCausalLM.from_pretrained(micro_sft).eval()
    kw = {"temperature": 0.7} if do_sample else {"temperature": 1.0}
    roll = generate(model, [tok.encode("Hello"), tok.encode("Why")], tok, 12, do_sample=do_sample,
                    min_new_tokens=12, **kw)
    assert roll.response_ids.shape[1] == 12 and not roll.has_eos.any() and roll.response_mask.all()


def test_bench_trl_table_and_variants():
    from rlhf.tools.bench_trl import parse_variants, table

    assert parse_variants(["fast=ppo.response_logits_only=true,ppo.logprobs_from_generation=true"]) == [
        ("fast", ["ppo.response_logits_only=true", "ppo.logprobs_from_generation=true"])]
    with pytest.raises(SystemExit, match="--variant 'fast'"):
        parse_variants(["fast"])
    jobs = {"rlhf": [{"s_per_iter": s, "peak_rss_mb": 700} for s in (1.0, 3.0, 1.2)],
            "TRL": [{"s_per_iter": 2.0, "peak_rss_mb": 800}], "TRL no gc": [{"s_per_iter": 1.5, "peak_rss_mb": 810}]}
    text = table({"h256": {"shape": {"batch": 8, "response": 32}, "jobs": jobs}})
    # the median of 1.0, 3.0, 1.2 is 1.2 s: 8 x 32 / 1.2 = 213.3 tokens/s, 1.2 / 2.0 = 0.60, 1.2 / 1.5 = 0.80
    assert "h256         b8/r32 rlhf                   1.200     213.3       700   0.60        0.80" in text
