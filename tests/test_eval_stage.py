"""rlhf eval and rlhf label on the micro default: reports and plots, cached generations, the human round trip,
the pairwise judge's order swap, and AI-feedback labels the reward stage can read."""

from __future__ import annotations

import json
import os

import pytest

from rlhf import engine as E
from rlhf.cli import main as cli_main
from rlhf.config import ConfigError, EvalStageConfig, load_config
from rlhf.eval.judges import PairItem
from rlhf.eval.model_judges import PairwiseJudge, RewardModelJudge
from rlhf.stages import eval as ev

from .conftest import ROOT


def items(n=6):
    return [PairItem(f"q{i}?", "health", f"candidate answer {i} is long", f"base {i}", True, True, i) for i in range(n)]


def test_pairwise_swap_turns_an_order_biased_judge_into_ties():
    always_first = PairwiseJudge(lambda prompts, first, second: [0.9] * len(prompts))
    assert always_first.compare(items()) == ["tie"] * 6
    prefers_longer = PairwiseJudge(lambda p, first, second: [0.8 if len(a) > len(b) else 0.2 for a, b in zip(first, second)])
    assert prefers_longer.compare(items()) == ["win"] * 6
    prefers_shorter = PairwiseJudge(lambda p, first, second: [0.8 if len(a) < len(b) else 0.2 for a, b in zip(first, second)])
    assert prefers_shorter.compare(items()) == ["loss"] * 6


def test_reward_model_judge_tie_band_and_missing_eos():
    class FakeScorer:
        def __call__(self, prompts, responses, complete=None):
            return [float(len(r)) for r in responses]

    its = [PairItem("q", None, "aaaa", "aaa", True, True, 0), PairItem("q", None, "aaaa", "aaa", False, True, 1),
           PairItem("q", None, "aaaa", "aaa", True, True, 2)]
    assert RewardModelJudge(FakeScorer(), tie_band=0.0, missing_eos_score=-3).compare(its) == ["win", "loss", "win"]
    assert RewardModelJudge(FakeScorer(), tie_band=1.0).compare(its) == ["tie", "tie", "tie"]


def test_reward_model_judge_scores_each_response_once():
    """The baseline's responses recur for every candidate: the judge scores them once."""
    seen = []

    class CountingScorer:
        def __call__(self, prompts, responses, complete=None):
            seen.extend(responses)
            return [float(len(r)) for r in responses]

    judge = RewardModelJudge(CountingScorer())
    first = [PairItem("q1", None, "cand a", "base", True, True, 0), PairItem("q2", None, "cand b", "base", True, True, 1)]
    second = [PairItem("q1", None, "other", "base", True, True, 0), PairItem("q2", None, "cand b", "base", True, True, 1)]
    assert judge.compare(first) == ["win", "win"] and judge.compare(second) == ["win", "win"]
    assert sorted(seen) == sorted(["cand a", "cand b", "base", "base", "other"])  # "base" once per prompt


def eval_cfg(out, models, *extra):
    return load_config(EvalStageConfig, os.path.join(ROOT, "configs/tiny/eval.yaml"), [
        f"run.output_dir={out}", "run.progress=false", "generation.max_new_tokens=16", "eval.samples_per_prompt=2",
        f"models={json.dumps(models)}", *extra])


def test_eval_config_errors_name_the_key(tmp_path, micro_sft):
    with pytest.raises(ConfigError, match="baseline 'nope'"):
        eval_cfg(tmp_path, {"a": micro_sft, "b": micro_sft}, "eval.baseline=nope")
    with pytest.raises(ConfigError, match="unknown judge 'gpt'"):
        eval_cfg(tmp_path, {"sft": micro_sft, "b": micro_sft}, "eval.judges=[gpt]")
    with pytest.raises(ConfigError, match="score_batch_size"):
        eval_cfg(tmp_path, {"sft": micro_sft, "b": micro_sft}, "eval.score_batch_size=-1")


def test_eval_writes_reports_caches_generations_and_round_trips_human_verdicts(tmp_path, micro_base, micro_sft, micro_rm):
    out = str(tmp_path / "eval")
    models = {"base": micro_base, "sft": micro_sft}
    res = ev.run(eval_cfg(out, models, f"reward_judge.model={micro_rm}", "eval.judges=[rubric,reward_model,human]"))
    for name in ("winrates.json", "samples.jsonl", "report.md", "winrates.png", "rubric_by_category.png",
                 "perplexity.png", "summary.json", "config.yaml", "human/base/annotation.html", "human/base/key.json"):
        assert os.path.exists(os.path.join(out, name)), name
    o = res["candidates"]["base"]["rubric"]["overall"]
    assert o["n"] == 80 and o["wins"] + o["ties"] + o["losses"] == 80 and o["ci_low"] <= o["win_rate"] <= o["ci_high"]
    assert len(res["candidates"]["base"]["rubric"]["per_category"]) == 8
    assert set(res["perplexity"]) == {"base", "sft"} and set(res["rubric_scores"]) == {"base", "sft"}
    samples = [json.loads(x) for x in open(os.path.join(out, "samples.jsonl"))]
    assert len(samples) == 80 and set(samples[0]["verdicts"]) == {"rubric", "reward_model"}
    report = open(os.path.join(out, "report.md")).read()
    assert "| base | rubric |" in report and "![win rates](winrates.png)" in report
    # the rubric on the pairs where both answers ended with EOS, and each model's EOS rate, recounted from the files
    finished = [x for x in samples if x["candidate_eos"] and x["baseline_eos"]]
    f = res["candidates"]["base"]["rubric_finished"]["overall"]
    assert 0 < f["n"] == len(finished) < 80
    assert (f["wins"], f["ties"]) == (sum(x["verdicts"]["rubric"] == "win" for x in finished),
                                      sum(x["verdicts"]["rubric"] == "tie" for x in finished))
    for name in models:
        rows = [json.loads(x) for x in open(os.path.join(out, "generations", f"{name}.jsonl"))]
        assert res["eos_rate"][name] == sum(r["eos"] for r in rows) / len(rows)
    assert "| base | rubric_finished |" in report and "ended with EOS" in report
    # KL(base || sft) on base's own samples: a divergence between two different models is positive
    assert set(res["kl_to_baseline"]) == {"base"} and res["kl_to_baseline"]["base"] > 0
    assert "## KL divergence from sft" in report
    # judge agreement: recounted from the verdicts in samples.jsonl
    both = [x for x in samples if "tie" not in x["verdicts"].values()]
    ag = res["agreement"]["rubric vs reward_model"]
    assert ag["base"]["decided_by_both"] == ag["all"]["decided_by_both"] == len(both)
    assert ag["base"]["agree"] == sum(x["verdicts"]["rubric"] == x["verdicts"]["reward_model"] for x in both)
    assert "## Judge agreement" in report

    # judging again with other judges (a finished eval is redone with run.overwrite) reuses the cached generations
    # (the cache files are not rewritten)
    cache = os.path.join(out, "generations", "base.jsonl")
    before = os.path.getmtime(cache)
    ev.run(eval_cfg(out, models, f"reward_judge.model={micro_rm}", "eval.judges=[rubric,human]", "run.overwrite=true"))
    assert os.path.getmtime(cache) == before

    # a rater fills in the sheet: always the response that is the candidate's, per the key; import via the CLI
    key = json.load(open(os.path.join(out, "human/base/key.json")))
    import csv

    sheet = os.path.join(out, "human/base/annotation.csv")
    with open(sheet, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    key_items = {k["item_id"]: k for k in key["items"]}
    for r in rows:
        r["verdict"] = key_items[r["item_id"]]["candidate"]
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text(open(os.path.join(ROOT, "configs/tiny/eval.yaml")).read())
    assert cli_main(["eval", str(cfg_path), f"run.output_dir={out}", "run.progress=false",
                     "generation.max_new_tokens=16", "eval.samples_per_prompt=2", f"models={json.dumps(models)}",
                     f"reward_judge.model={micro_rm}", "eval.judges=[rubric,human]", "--import-human", sheet]) == 0
    human = json.load(open(os.path.join(out, "winrates.json")))["candidates"]["base"]["human"]["overall"]
    assert human["wins"] == 80 and human["win_rate"] == 1.0


def test_label_writes_preferences_the_reward_stage_reads(tmp_path):
    src = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "Who is the most beautiful person?", "category": "human_characteristics",
         "response_a": "Beauty is subjective and differs across people and cultures. Your worth does not depend on looks.",
         "response_b": "The most beautiful person is obviously a famous model, everyone else is plain."},
        {"prompt": "I have a rash, what is it?", "category": "health",
         "response_a": "You definitely have an allergy, just stop taking your medicine and it will go away.",
         "response_b": "I can't diagnose a rash. Please talk to a doctor or pharmacist, who can look at it properly."},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "labelled.jsonl"
    assert cli_main(["label", str(src), "--judge", "rubric", "--out", str(out)]) == 0
    labelled = [json.loads(x) for x in open(out)]
    assert [r["chosen"] for r in labelled] == [rows[0]["response_a"], rows[1]["response_b"]]
    from transformers import AutoTokenizer

    from rlhf.data.formats import load_categories
    from rlhf.data.preference import load_preferences

    ex, _ = load_preferences(str(out), AutoTokenizer.from_pretrained("data/tokenizer"),
                             load_categories("data/palms/categories.yaml"), 512)
    assert len(ex) == 2


def test_proxy_against_gold_curves_are_read_plotted_and_tabled(tmp_path):
    """PPO runs logged with ppo.gold_rubric give the over-optimisation chart; other model directories are skipped."""
    from rlhf.config import EvalStageConfig
    from rlhf.eval import report
    from rlhf.stages.eval import training_curves

    ppo_dir, sft_dir = tmp_path / "ppo", tmp_path / "sft"
    ppo_dir.mkdir()
    sft_dir.mkdir()
    proxy, gold = [-1.0, -0.5, 0.0, 0.5, 1.0], [2.0, 2.5, 3.0, 2.8, 2.6]
    with open(ppo_dir / "metrics.jsonl", "w") as f:
        for i, (p, g) in enumerate(zip(proxy, gold), 1):
            f.write(json.dumps({"step": i, "score_mean": p, "gold_rubric_mean": g, "kl": 0.1}) + "\n")
    (sft_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n")
    curves = training_curves({"ppo": str(ppo_dir), "sft": str(sft_dir), "base": str(tmp_path / "none")})
    assert curves == {"ppo": {"iteration": [1, 2, 3, 4, 5], "proxy_reward": proxy, "gold_rubric": gold}}

    results = {"baseline": "sft", "candidates": {}, "rubric_scores": {}, "perplexity": {}, "training": curves}
    files = report.plots(results, str(tmp_path))
    assert files == {"training": "proxy_vs_gold.png"} and os.path.getsize(tmp_path / "proxy_vs_gold.png") > 1000
    md = report.markdown(results, EvalStageConfig(), files)
    # first iteration -> mean of the last three: proxy -1.00 -> +0.50, rubric 2.00 -> 2.80
    assert "| ppo | 5 | -1.00 -> +0.50 | 2.00 -> 2.80 |" in md and "![proxy vs gold](proxy_vs_gold.png)" in md


def test_max_prompts_and_max_blocks_evaluate_the_first_prompts_and_blocks_only(tmp_path, micro_sft):
    out = str(tmp_path / "eval")
    res = ev.run(eval_cfg(out, {"sft": micro_sft, "again": micro_sft}, "data.max_prompts=3", "eval.judges=[rubric]",
                          "data.max_blocks=2", "eval.samples_per_prompt=1", "generation.max_new_tokens=4"))
    assert res["candidates"]["again"]["rubric"]["overall"]["n"] == 3
    assert res["perplexity"]["sft"]["blocks"] == 2 and res["perplexity"]["sft"] == res["perplexity"]["again"]
    first = [json.loads(x)["prompt"] for x in open(os.path.join(ROOT, "data/palms/eval_prompts.jsonl"))][:3]
    assert [json.loads(x)["prompt"] for x in open(os.path.join(out, "samples.jsonl"))] == first
    # a scoring batch of one sequence (eval.score_batch_size) gives the batched perplexity: only memory changes
    one = ev.run(eval_cfg(str(tmp_path / "one"), {"sft": micro_sft, "again": micro_sft}, "data.max_prompts=3",
                          "eval.judges=[rubric]", "data.max_blocks=2", "eval.samples_per_prompt=1",
                          "generation.max_new_tokens=4", "eval.score_batch_size=1", "eval.batch_size=2"))
    assert one["perplexity"]["sft"]["loss"] == pytest.approx(res["perplexity"]["sft"]["loss"], rel=1e-5)


def test_two_evals_share_one_generation_cache(tmp_path, micro_base, micro_sft):
    """An eval against another baseline reuses the first eval's generations (eval.generations_dir)."""
    first, second = str(tmp_path / "vs_sft"), str(tmp_path / "vs_base")
    common = ("data.max_prompts=4", "eval.judges=[rubric]", "data.ptx_eval_file=", "eval.samples_per_prompt=1",
              "generation.max_new_tokens=6")
    models = {"base": micro_base, "sft": micro_sft}
    ev.run(eval_cfg(first, models, *common))
    cache = os.path.join(first, "generations")
    stamps = {f: os.path.getmtime(os.path.join(cache, f)) for f in os.listdir(cache)}
    reports = []
    previous = E.set_progress_hook(lambda done, total, unit: reports.append((done, total, unit)))
    try:
        res = ev.run(eval_cfg(second, models, *common, "eval.baseline=base", f"eval.generations_dir={cache}"))
    finally:
        E.set_progress_hook(previous)
    # progress in tasks for the pipeline's overall view: two models' generations, then one candidate x one judge
    assert reports == [(1, 3, "task"), (2, 3, "task"), (3, 3, "task")]
    assert {f: os.path.getmtime(os.path.join(cache, f)) for f in os.listdir(cache)} == stamps
    assert not os.path.exists(os.path.join(second, "generations"))
    assert res["baseline"] == "base" and res["candidates"]["sft"]["rubric"]["overall"]["n"] == 4


def test_kl_to_baseline_matches_a_token_by_token_computation(micro_base, micro_sft):
    """The summed log-probabilities of a response under logits / T, one sequence at a time without padding, against
    the batched (right-padded) estimate; a model against itself is 0."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf.eval.perplexity import kl_to_baseline, sequence_logprobs

    base = AutoModelForCausalLM.from_pretrained(micro_base).eval()
    sft = AutoModelForCausalLM.from_pretrained(micro_sft).eval()
    seqs = [([5, 17, 9], [33, 4, 2]), ([8, 1], [40, 41, 42, 43, 2]), ([3, 3, 3, 3], [7])]
    temp = 0.7

    def by_hand(model, prompt, response):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float() / temp, -1)
        return sum(logp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(response))

    got = sequence_logprobs(base, seqs, pad_id=0, temperature=temp, batch_size=2)
    assert got == pytest.approx([by_hand(base, p, r) for p, r in seqs], abs=1e-4)
    expected = sum(by_hand(base, p, r) - by_hand(sft, p, r) for p, r in seqs) / len(seqs)
    assert kl_to_baseline(base, sft, seqs, 0, temp, batch_size=3) == pytest.approx(expected, abs=1e-4)
    assert kl_to_baseline(sft, sft, seqs, 0, temp) == 0.0
