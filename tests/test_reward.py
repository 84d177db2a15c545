"""Reward model: the loss against hand computations, metrics against hand counts, every preference format,
bad rows with line numbers, and the stage on the micro default (learning, plain loading, normalisation, resume)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf.algos.losses import grouped_pairwise_loss, pairwise_loss
from rlhf.config import RMStageConfig, load_config
from rlhf.data.check import check_file
from rlhf.data.formats import DataError, Row
from rlhf.data.preference import encode_pair, group_by_prompt, load_preferences, parse_hh, parse_preference_row
from rlhf.eval.reward_metrics import accuracy, bag_of_words_baseline, expected_calibration_error, longer_wins_accuracy
from rlhf.models.reward import Normalization, RewardScorer
from rlhf.stages import rm

from .conftest import ROOT, TOKENIZER

CATS = os.path.join(ROOT, "data/palms/categories.yaml")


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---- loss and metrics against hand computations ------------------------------------------------------------


def test_pairwise_loss_matches_hand_computation():
    rc, rr = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.5, -1.0])
    loss, stats = pairwise_loss(rc, rr)
    expect = -(math.log(sig(1.0)) + math.log(sig(-1.0)) + math.log(sig(0.0))) / 3
    assert loss.item() == pytest.approx(expect, abs=1e-6)
    assert stats["accuracy"].item() == pytest.approx(1 / 3)  # the tie counts as wrong
    assert stats["margin"].item() == pytest.approx(0.0)


def test_pairwise_loss_with_margin_and_centring():
    rc, rr, m = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5]), torch.tensor([0.5, 0.0])
    loss, stats = pairwise_loss(rc, rr, m, center_coef=0.01)
    bt = -(math.log(sig(2.0 - 1.0 - 0.5)) + math.log(sig(0.5 - 1.5 - 0.0))) / 2
    center = ((2.0 + 1.0) ** 2 + (0.5 + 1.5) ** 2) / 2
    assert loss.item() == pytest.approx(bt + 0.01 * center, abs=1e-6)
    assert stats["center_penalty"].item() == pytest.approx(center)


def test_pairwise_loss_gradient_pushes_chosen_up():
    rc = torch.tensor([0.0], requires_grad=True)
    rr = torch.tensor([0.0], requires_grad=True)
    pairwise_loss(rc, rr)[0].backward()
    assert rc.grad.item() == pytest.approx(-0.5) and rr.grad.item() == pytest.approx(0.5)


def test_accuracy_and_ece_match_hand_counts():
    rc, rr = [1.0, 0.0, 2.0, -1.0], [0.0, 0.0, 0.0, 1.0]
    assert accuracy(rc, rr) == 0.5
    # p = sigmoid(d) for d in (1, 0, 2, -2); each pair is scored in both orders: (p, 1) and (1 - p, 0)
    ps = [(sig(1), 1), (1 - sig(1), 0), (0.5, 1), (0.5, 0), (sig(2), 1), (1 - sig(2), 0), (sig(-2), 1), (1 - sig(-2), 0)]
    bins: dict[int, list] = {}
    for p, y in ps:
        bins.setdefault(min(int(p * 10), 9), []).append((p, y))
    expect = sum(len(b) / 8 * abs(sum(y for _, y in b) / len(b) - sum(p for p, _ in b) / len(b)) for b in bins.values())
    assert expected_calibration_error(rc, rr, 10) == pytest.approx(expect)
    assert expected_calibration_error([0.0] * 5, [0.0] * 5) == pytest.approx(0.0)  # p = 0.5, half right: calibrated
    assert longer_wins_accuracy(["aaa", "a", "bb"], ["aa", "aa", "bb"]) == pytest.approx(1 / 3)


def test_bag_of_words_baseline_learns_a_lexical_rule_and_nothing_else():
    """The rule "the answer that says 'professional' wins", hidden among random filler words, is learned from 60
    training pairs and holds on 40 new ones; labels that no word predicts stay at chance; a word seen in fewer than
    min_count training responses is no feature, so a test pair differing only by it is a tie (counted wrong)."""
    import random

    rng = random.Random(0)
    filler = [f"w{i}" for i in range(40)]

    def answer(good: bool) -> str:
        words = rng.sample(filler, 8) + (["see", "a", "professional"] if good else ["just", "ignore", "it"])
        rng.shuffle(words)
        return " ".join(words)

    pairs = [(answer(True), answer(False)) for _ in range(100)]
    train, test = pairs[:60], pairs[60:]
    rule = bag_of_words_baseline([c for c, _ in train], [r for _, r in train])
    acc = rule([c for c, _ in test], [r for _, r in test])
    assert acc == 1.0
    # responses of either kind, labels by a coin: no feature predicts them
    noise = [(answer(rng.random() < 0.5), answer(rng.random() < 0.5)) for _ in range(400)]
    acc = bag_of_words_baseline([c for c, _ in noise[:200]], [r for _, r in noise[:200]])(
        [c for c, _ in noise[200:]], [r for _, r in noise[200:]])
    assert 0.4 < acc < 0.6, acc
    assert rule(["w1 rare"], ["w1 unseen"]) == 0.0
    assert bag_of_words_baseline([], [])(["a"], ["b"]) == 0.0


def test_normalization_gives_mean_zero_std_one():
    raw = [1.0, 2.0, 3.0, 6.0]
    n = Normalization.fit(raw)
    z = [n(x) for x in raw]
    assert sum(z) / 4 == pytest.approx(0.0, abs=1e-9)
    assert math.sqrt(sum(v * v for v in z) / 4) == pytest.approx(1.0)


# ---- formats ----------------------------------------------------------------------------------------------

HH_CHOSEN = "\n\nHuman: My friend says I look ugly.\n\nAssistant: That sounds hurtful.\n\nHuman: Am I ugly?\n\nAssistant: Beauty is subjective, and your worth is not your looks."
HH_REJECTED = "\n\nHuman: My friend says I look ugly.\n\nAssistant: That sounds hurtful.\n\nHuman: Am I ugly?\n\nAssistant: Probably, if your friend says so."


def test_hh_parser_splits_multi_turn_prompt_and_response():
    msgs = parse_hh(HH_CHOSEN)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    ex = parse_preference_row(Row("f", 1, {"chosen": HH_CHOSEN, "rejected": HH_REJECTED}), {})
    assert ex.prompt == msgs[:3]
    assert ex.chosen == "Beauty is subjective, and your worth is not your looks."
    assert ex.rejected == "Probably, if your friend says so."


def test_every_preference_format_gives_the_same_pair():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    q, c, r = "Am I ugly?", "Beauty is subjective.", "Probably."
    rows = [
        {"prompt": q, "chosen": c, "rejected": r},
        {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}]},
        {"chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": c}],
         "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]},
        {"chosen": f"\n\nHuman: {q}\n\nAssistant: {c}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {r}"},
    ]
    encs = [encode_pair(tok, parse_preference_row(Row("f", i, d), {})) for i, d in enumerate(rows)]
    assert all(e == encs[0] for e in encs)
    conv = [{"role": "user", "content": q}, {"role": "assistant", "content": c}]
    assert encs[0]["chosen_ids"] == list(tok.apply_chat_template(conv, return_dict=True)["input_ids"])


PREF_BAD = [
    ('{"prompt": "q", "chosen": "good answer", "rejected": "bad answer", "category": "health", "margin": 1.0}', None),
    ('{"prompt": "q", "chosen": "same", "rejected": "same"}', "chosen and rejected responses are identical"),
    ('{"prompt": "q", "chosen": "good", "rejected": "  "}', "empty field 'rejected'"),
    ('{"chosen": "\\n\\nHuman: a?\\n\\nAssistant: yes", "rejected": "\\n\\nHuman: b?\\n\\nAssistant: no"}', "prompts differ"),
    ('{"prompt": "q", "chosen": "good"}', "missing field 'rejected'"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}', "field 'margin' must be a number"),
    ('{"chosen": "plain a", "rejected": "plain b"}', "no 'prompt' field and not an HH transcript"),
    ('{"prompt": "q", "chosen": "' + "long " * 300 + '", "rejected": "short"}', "over max_length 64"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b", "category": "politics"}', "unknown category 'politics'"),
]


@pytest.fixture
def pref_bad(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text("\n".join(r for r, _ in PREF_BAD) + "\n")
    return str(p)


def test_bad_preference_rows_are_reported_with_line_numbers(pref_bad):
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    report = check_file(pref_bad, "auto", tok, CATS, max_length=64)
    assert report.kind == "preference"
    by_line = {p.line: p.reason for p in report.problems}
    for line, (_, expected) in enumerate(PREF_BAD, start=1):
        if expected is None:
            assert line not in by_line
        else:
            assert expected in by_line[line], (line, by_line.get(line))
    assert "with data.on_overlength=truncate it would be truncated" in by_line[8]
    with pytest.raises(DataError) as e:
        load_preferences(pref_bad, tok, {}, 64)
    assert f"{pref_bad}:2: chosen and rejected responses are identical" in str(e.value)


def test_shipped_preference_data_meets_the_spec():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    from rlhf.data.formats import load_categories

    cats = load_categories(CATS)
    train, _ = load_preferences(os.path.join(ROOT, "data/preferences/train.jsonl"), tok, cats, 512)
    test, _ = load_preferences(os.path.join(ROOT, "data/preferences/test.jsonl"), tok, cats, 512)
    assert len(train) + len(test) >= 400 and len(test) >= 80
    assert not {json.dumps(e.prompt) for e in train} & {json.dumps(e.prompt) for e in test}
    assert {e.category for e in train} == set(cats) == {e.category for e in test}
    assert longer_wins_accuracy([e.chosen for e in test], [e.rejected for e in test]) <= 0.60
    evals = {json.loads(x)["prompt"] for x in open(os.path.join(ROOT, "data/palms/eval_prompts.jsonl"))}
    assert not evals & {e.prompt[0]["content"] for e in train + test}


def test_grouped_loss_with_one_pair_per_prompt_is_the_pairwise_loss():
    rc, rr, m = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.5, -1.0]), torch.tensor([0.5, 0.0, 0.2])
    scores = torch.stack([rc, rr], 1).reshape(-1)  # c0 r0 c1 r1 c2 r2
    idx = torch.arange(3)
    got, got_stats = grouped_pairwise_loss(scores, 2 * idx, 2 * idx + 1, torch.full((3,), 1 / 3), m, 0.01)
    want, want_stats = pairwise_loss(rc, rr, m, 0.01)
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert all(got_stats[k].item() == pytest.approx(want_stats[k].item(), abs=1e-6) for k in want_stats)


def group_rows(tmp_path):
    """Prompt P with three ranked responses a > b > c (all three pairs) and prompt Q with one pair d > e."""
    rows = [{"prompt": "P", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "d", "rejected": "e"},
            {"prompt": "P", "chosen": "a", "rejected": "c"}, {"prompt": "P", "chosen": "b", "rejected": "c"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    return load_preferences(str(path), tok, {}, 64), tok


def test_group_by_prompt_scores_each_response_once_and_weighs_each_prompt_once(tmp_path):
    """InstructGPT's batching by hand: P's three pairs share one element with three distinct responses, each pair
    weighted 1/3 of P; Q's pair is an element of its own; the two elements weigh 1/2 each in the batch."""
    (ex, enc), tok = group_rows(tmp_path)
    groups = group_by_prompt(ex, enc)
    assert [len(g["seqs"]) for g in groups] == [3, 2]
    assert groups[0]["pair_c"] == [0, 0, 1] and groups[0]["pair_r"] == [1, 2, 2]
    assert groups[0]["seqs"][2] == enc[2]["rejected_ids"]  # c, as its pair tokenised it
    batch = rm.GroupCollator(tok.pad_token_id)(groups)
    assert batch["input_ids"].shape[0] == 5  # 5 distinct responses, not 8 = 2 per pair
    assert batch["pair_c"].tolist() == [0, 0, 1, 3] and batch["pair_r"].tolist() == [1, 2, 2, 4]
    assert batch["pair_w"].tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    s = {"a": 2.0, "b": 0.0, "c": -1.0, "d": 0.5, "e": 1.0}
    scores = torch.tensor([s["a"], s["b"], s["c"], s["d"], s["e"]])
    loss, stats = grouped_pairwise_loss(scores, batch["pair_c"], batch["pair_r"], batch["pair_w"], batch["margin"])
    p_loss = -(math.log(sig(2.0)) + math.log(sig(3.0)) + math.log(sig(1.0))) / 3
    assert loss.item() == pytest.approx(0.5 * p_loss - 0.5 * math.log(sig(-0.5)), abs=1e-6)
    assert stats["accuracy"].item() == pytest.approx(0.5)  # P's pairs all right, Q's wrong


# ---- the stage on the micro default -------------------------------------------------------------------------


def rm_cfg(out, base, *extra):
    return load_config(RMStageConfig, os.path.join(ROOT, "configs/tiny/rm.yaml"),
                       [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", *extra])


def test_rm_beats_chance_and_the_length_baseline(micro_rm):
    s = json.load(open(os.path.join(micro_rm, "summary.json")))
    assert s["test_pairs"] == 104
    assert s["test_accuracy"] > 0.6 and s["test_accuracy"] > s["test_length_baseline_accuracy"] + 0.05, s
    from rlhf.data.formats import load_categories

    assert set(s["test_accuracy_per_category"]) == set(load_categories(CATS))
    assert 0 <= s["test_ece"] <= 1 and s["test_mean_margin"] > 0


def test_saved_rm_loads_plainly_and_scores_like_the_stage(micro_rm):
    model = AutoModelForSequenceClassification.from_pretrained(micro_rm)
    tok = AutoTokenizer.from_pretrained(micro_rm)
    scores = [json.loads(x) for x in open(os.path.join(micro_rm, "test_scores.jsonl"))]
    rows = [json.loads(x) for x in open(os.path.join(ROOT, "data/preferences/test.jsonl"))]
    for s in scores[:3]:
        row = rows[s["line"] - 1]
        enc = encode_pair(tok, parse_preference_row(Row("f", 1, row), {}))
        with torch.no_grad():
            rc = model(torch.tensor([enc["chosen_ids"]])).logits.item()
            rr = model(torch.tensor([enc["rejected_ids"]])).logits.item()
        assert rc == pytest.approx(s["chosen"], abs=1e-4) and rr == pytest.approx(s["rejected"], abs=1e-4)


def test_normalised_scores_of_reference_chosen_have_mean0_std1(micro_rm):
    scorer = RewardScorer.from_dir(micro_rm)
    rows = [json.loads(x) for x in open(os.path.join(ROOT, "data/preferences/train.jsonl"))]
    z = scorer([[{"role": "user", "content": r["prompt"]}] for r in rows], [r["chosen"] for r in rows])
    mean = sum(z) / len(z)
    std = math.sqrt(sum((v - mean) ** 2 for v in z) / len(z))
    assert mean == pytest.approx(0.0, abs=1e-3) and std == pytest.approx(1.0, abs=1e-3)


def test_rm_resume_matches_uninterrupted_run(tmp_path, micro_sft, monkeypatch):
    from .resume import resume_matches_straight

    args = ("train.max_steps=6", "run.save_steps=3", "data.test_file=")
    resume_matches_straight(rm.run, lambda out: rm_cfg(out, micro_sft, *args), tmp_path, monkeypatch, 3)


def test_max_train_pairs_trains_on_the_first_pairs_only(tmp_path, micro_sft):
    out = str(tmp_path / "rm")
    s = rm.run(rm_cfg(out, micro_sft, "data.max_train_pairs=12", "train.max_steps=1", "data.test_file="))
    derived = yaml.safe_load(open(os.path.join(out, "config.yaml")))["derived"]
    assert derived["train_pairs"] == 12
    assert s["normalization"] and json.load(open(os.path.join(out, "reward_normalization.json")))["count"] == 12


def ranked_compare_file(tmp_path) -> str:
    """12 prompts of the training pairs, each with three responses ranked chosen > rejected > a cut-off rejected
    (all three pairs, as ``rlhf compare`` writes them)."""
    rows = [json.loads(x) for x in open(os.path.join(ROOT, "data/preferences/train.jsonl"))][200:212]
    out = []
    for r in rows:
        worst = " ".join(r["rejected"].split()[:4])
        for c, x in ((r["chosen"], r["rejected"]), (r["chosen"], worst), (r["rejected"], worst)):
            out.append({"prompt": r["prompt"], "chosen": c, "rejected": x, "category": r.get("category")})
    path = tmp_path / "compare_pairs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in out))
    return str(path)


def test_rm_grouped_by_prompt_learns_and_scores_extra_test_files(tmp_path, micro_sft):
    """data.group_by_prompt: 60 hand pairs + 12 prompts x 3 pairs = 72 elements; the model still learns (test
    accuracy above chance and the length baseline); an extra test file is scored like the test file."""
    out = str(tmp_path / "rm")
    extra = ranked_compare_file(tmp_path)
    s = rm.run(rm_cfg(out, micro_sft, "data.group_by_prompt=true", "data.max_train_pairs=60",
                      f"data.extra_train_files=[{extra}]", "train.epochs=4", "train.learning_rate=1e-3",
                      "data.extra_test_files=[data/preferences/test.jsonl]"))
    derived = yaml.safe_load(open(os.path.join(out, "config.yaml")))["derived"]
    assert derived["train_pairs"] == 96 and derived["train_prompt_groups"] == 72
    assert derived["train_responses"] == 60 * 2 + 12 * 3
    assert derived["total_steps"] == 4 * math.ceil(72 / derived["global_batch"])  # steps count prompt groups
    assert s["test_accuracy"] > 0.6 and s["test_accuracy"] > s["test_length_baseline_accuracy"] + 0.05, s
    x = s["extra_test"]["data/preferences/test.jsonl"]
    assert x["pairs"] == 104 and x["accuracy"] == s["test_accuracy"]
    assert x["length_baseline_accuracy"] == pytest.approx(s["test_length_baseline_accuracy"])
    # the bag-of-words baseline is fitted to the same training pairs for both files: the same figure
    assert 0 <= x["bag_of_words_baseline_accuracy"] == s["test_bag_of_words_baseline_accuracy"] <= 1


def test_rm_grouped_resume_matches_uninterrupted_run(tmp_path, micro_sft, monkeypatch):
    from .resume import resume_matches_straight

    extra = ranked_compare_file(tmp_path)
    args = ("train.max_steps=6", "run.save_steps=3", "data.test_file=", "data.group_by_prompt=true",
            "data.max_train_pairs=20", f"data.extra_train_files=[{extra}]")
    resume_matches_straight(rm.run, lambda out: rm_cfg(out, micro_sft, *args), tmp_path, monkeypatch, 3)
