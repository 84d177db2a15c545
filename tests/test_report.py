"""``rlhf report``: the quoted tables come from the run directories, with the numbers the stages saved.

The end-to-end pipeline test (tests/test_pipeline.py) also runs the generator on a real short run; here a run
directory is written by hand so every cell can be checked against a hand-formatted value.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from rlhf import cli
from rlhf.report import build, code_version, winrate_table


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        if path.endswith(".yaml"):
            yaml.safe_dump(data, f)
        else:
            json.dump(data, f)


def _overall(w, t, lo, hi):
    n = sum(w)
    return {"overall": {"wins": w[0], "ties": w[1], "losses": w[2], "win_rate": (w[0] + 0.5 * w[1]) / n,
                        "ci_low": lo, "ci_high": hi}}


@pytest.fixture
def run_dir(tmp_path):
    r = str(tmp_path / "run")
    _write(f"{r}/config.yaml", {"run_dir": r, "stages": [
        {"name": "sft", "command": "sft"}, {"name": "rm", "command": "rm"}, {"name": "ppo", "command": "ppo"},
        {"name": "eval", "command": "eval"}]})
    code = {"version": "0.1.0", "commit": "0123456789abcdef0123", "dirty": False}
    _write(f"{r}/pipeline_summary.json", {"stage": "pipeline", "complete": True, "wall_time_s": 725.0, "stages": {
        "sft": {"seconds": 56.4, "peak_rss_gib": 1.234, "code": code},
        "rm": {"skipped": True, "earlier": {"seconds": 61.0, "peak_rss_gib": 2.0, "code": code}},
        "ppo": {"seconds": 155.0, "peak_rss_gib": 3.5, "code": code},
        "eval": {"seconds": 37.0, "peak_rss_gib": 1.0, "code": code}}})
    _write(f"{r}/sft/summary.json", {"stage": "sft", "steps": 64, "train_rows": 115, "heldout_rows": 13,
                                     "heldout_loss_before": 6.551, "heldout_loss_after": 5.4649})
    _write(f"{r}/sft/config.yaml", {"data": {"train_file": "data/palms/values_targeted.jsonl"}})
    _write(f"{r}/rm/summary.json", {"stage": "rm", "steps": 27, "test_accuracy": 0.8461, "test_pairs": 104,
                                    "test_length_baseline_accuracy": 0.5865})
    _write(f"{r}/rm/config.yaml", {"data": {"train_file": "data/preferences/train.jsonl",
                                            "extra_train_files": [f"{r}/compare/pairs.jsonl"]}})
    _write(f"{r}/ppo/summary.json", {"stage": "ppo", "iterations": 18, "ptx_coef": 0.05, "kl_coef": 0.02,
                                     "heldout_reward_start": -0.456, "heldout_reward_final": 0.291,
                                     "ptx_heldout_loss_start": 6.111, "ptx_heldout_loss_end": 5.749})
    _write(f"{r}/ppo/config.yaml", {"derived": {"rollout_batch": 32}, "generation": {"max_new_tokens": 160},
                                    "ppo": {"ppo_epochs": 2}})
    with open(f"{r}/ppo/metrics.jsonl", "w") as f:
        for step, kl in enumerate([1.0, 9.0, 10.0, 11.0, 12.5], 1):
            f.write(json.dumps({"step": step, "kl": kl}) + "\n")
        f.write('{"step": 6, "kl"')  # a torn last line, as a killed run leaves it
    _write(f"{r}/eval/summary.json", {"stage": "eval", "models": ["sft", "ppo"], "judges": ["rubric", "reward_model"]})
    _write(f"{r}/eval/config.yaml", {"eval": {"samples_per_prompt": 2}, "data": {"prompt_file": "p.jsonl"}})
    _write(f"{r}/eval/winrates.json", {
        "baseline": "sft",
        "candidates": {"ppo": {"rubric": _overall((14, 62, 4), 0, 0.51875, 0.61875),
                               "reward_model": _overall((63, 0, 17), 0, 0.6875, 0.875)}},
        "rubric_scores": {"sft": {"mean": 3.075}, "ppo": {"mean": 3.1875}},
        "perplexity": {"sft": {"perplexity": 448.31}, "ppo": {"perplexity": 314.77}},
        "agreement": {"rubric vs reward_model": {"all": {"rate": 0.831, "decided_by_both": 59},
                                                 "ppo": {"rate": 0.831, "decided_by_both": 59}}},
    })
    return r


def test_report_tables_carry_the_saved_numbers(run_dir):
    text = build([run_dir])
    # stage rows: wall time from the pipeline (a skipped stage keeps its earlier figures), results from summaries
    assert "| sft | sft | 64 steps over 115 rows of `data/palms/values_targeted.jsonl` | 56 s | 1.23 GiB | " \
           "held-out completion loss 6.55 -> 5.46 (13 rows) |" in text
    assert "| rm | rm | 27 steps on `data/preferences/train.jsonl` + `pairs.jsonl` | 1 min 01 s | 2.00 GiB | " \
           "test accuracy 0.846 on 104 pairs (longer response wins: 0.587) |" in text
    # KL: the mean of the last three complete iterations (11.0, 12.5 and 10.0), the torn line skipped
    assert "held-out reward -0.46 -> +0.29; held-out pretraining loss 6.11 -> 5.75; KL to SFT 11.2 nats" in text
    # a reward model with the bag-of-words baseline and an extra test file (rubric agreement) shows both
    _write(f"{run_dir}/rm/summary.json", {
        "stage": "rm", "steps": 27, "test_accuracy": 0.8461, "test_pairs": 104, "test_length_baseline_accuracy": 0.5865,
        "test_bag_of_words_baseline_accuracy": 0.7019, "extra_test": {"runs/x/compare_test/pairs.jsonl": {
            "pairs": 94, "accuracy": 0.5638, "length_baseline_accuracy": 0.5319, "bag_of_words_baseline_accuracy": 0.6489}}})
    assert "test accuracy 0.846 on 104 pairs (longer response wins: 0.587, bag of words: 0.702); `pairs.jsonl`: " \
           "0.564 on 94 pairs (longer response wins: 0.532, bag of words: 0.649) |" in build([run_dir])
    assert "Pipeline wall time: 12 min 05 s." in text
    # win rates: (14 + 62/2) / 80 = 56.25% -> "56.2%" ("56.25" rounds half to even); intervals in percent
    assert "| ppo | 56.2% [51.9, 61.9] | 14 / 62 / 4 | 78.8% [68.8, 87.5] | 63 / 0 / 17 | 3.19 | 314.8 |" in text
    assert "| sft (the baseline) | - | - | - | - | 3.08 | 448.3 |" in text
    assert "| rubric vs reward_model | 83.1% of 59 | 83.1% of 59 |" in text
    assert "code commit `0123456789ab`" in text
    assert f"rlhf report {run_dir}" in text


def test_winrate_table_has_one_column_pair_per_judge(run_dir):
    wr = json.load(open(os.path.join(run_dir, "eval", "winrates.json")))
    head = winrate_table(wr).splitlines()[0]
    assert head == ("| candidate vs sft | rubric win rate [95% CI] | rubric W / T / L | reward_model win rate [95% CI] "
                    "| reward_model W / T / L | mean rubric score (1-5) | held-out perplexity |")


def test_report_cli_writes_the_file_and_names_a_missing_summary(run_dir, tmp_path, capsys):
    out = tmp_path / "docs" / "results.md"
    assert cli.main(["report", run_dir, "--out", str(out)]) == 0
    assert out.read_text() == build([run_dir])
    os.remove(os.path.join(run_dir, "rm", "summary.json"))
    assert cli.main(["report", run_dir]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {os.path.join(run_dir, 'rm', 'summary.json')}: not found (has the stage finished?)"]


def test_code_version_names_this_checkout():
    info = code_version()
    assert info["version"]
    if os.path.isdir(os.path.join(os.path.dirname(os.path.dirname(__file__)), ".git")):
        assert len(info["commit"]) == 40 and isinstance(info["dirty"], bool)


def test_report_stage_row_of_dpo(run_dir):
    # a DPO stage in the same run directory: its row names the pairs, loss and beta, and the test numbers it saved
    cfg_path = os.path.join(run_dir, "config.yaml")
    cfg = yaml.safe_load(open(cfg_path))
    cfg["stages"].insert(2, {"name": "dpo", "command": "dpo"})
    _write(cfg_path, cfg)
    _write(f"{run_dir}/dpo/summary.json", {"stage": "dpo", "steps": 26, "loss_type": "sigmoid", "beta": 0.1,
                                           "test_pairs": 104, "test_accuracy": 0.9231, "test_margin": 1.2593,
                                           "test_logp_accuracy_start": 0.3173, "test_logp_accuracy": 0.4135,
                                           "wall_time_s": 140.9})
    _write(f"{run_dir}/dpo/config.yaml", {"data": {"train_file": "data/preferences/train.jsonl"}})
    assert ("| dpo | dpo | 26 steps on `data/preferences/train.jsonl`, loss sigmoid, beta 0.1 | 2 min 21 s | - | "
            "test accuracy of the implicit reward 0.923 (margin +1.26) on 104 pairs; the policy prefers the chosen "
            "response on 0.317 -> 0.413 |") in build([run_dir])


def test_report_covers_every_eval_stage_with_eos_rates(run_dir):
    """A pipeline with two evaluations (against SFT and against the base model) gets a table for each; a judge with
    no pairs (the rubric on finished pairs when none finished) shows as such; EOS rates get a column."""
    cfg = yaml.safe_load(open(f"{run_dir}/config.yaml"))
    cfg["stages"].append({"name": "eval_vs_base", "command": "eval"})
    _write(f"{run_dir}/config.yaml", cfg)
    summary = json.load(open(f"{run_dir}/pipeline_summary.json"))
    summary["stages"]["eval_vs_base"] = {"seconds": 5.0, "peak_rss_gib": 1.0}
    _write(f"{run_dir}/pipeline_summary.json", summary)
    _write(f"{run_dir}/eval_vs_base/summary.json", {"stage": "eval", "models": ["base", "ppo"], "judges": ["rubric"]})
    _write(f"{run_dir}/eval_vs_base/config.yaml", {"eval": {"samples_per_prompt": 2}, "data": {"prompt_file": "p"}})
    none = {"wins": 0, "ties": 0, "losses": 0, "win_rate": None, "ci_low": None, "ci_high": None}
    _write(f"{run_dir}/eval_vs_base/winrates.json", {
        "baseline": "base", "eos_rate": {"ppo": 0.9125, "base": 0.4},
        "candidates": {"ppo": {"rubric": _overall((50, 20, 10), 0, 0.62, 0.8), "rubric_finished": {"overall": none}}}})
    text = build([run_dir])
    assert "### Win rates against sft (stage `eval`)" in text
    assert "### Win rates against base (stage `eval_vs_base`)" in text
    # (50 + 20/2) / 80 = 75.0%; 0.9125 -> "91.2%" (half to even)
    assert "| ppo | 75.0% [62.0, 80.0] | 50 / 20 / 10 | - (no pairs) | 0 / 0 / 0 | 91.2% |" in text
    assert "| base (the baseline) | - | - | - | - | 40.0% |" in text
