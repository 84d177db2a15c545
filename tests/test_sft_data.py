"""SFT data: chat-template encoding, the collator's loss mask, and `rlhf data check` on every kind of bad row."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoTokenizer

from rlhf.cli import main as cli_main
from rlhf.data.check import check_file
from rlhf.data.formats import DataError, Row, load_categories
from rlhf.data.sft import IGNORE_INDEX, SFTCollator, SFTExample, encode_sft, load_sft, load_sft_or_raise, parse_sft_row

from .conftest import ROOT, TOKENIZER

CATS = os.path.join(ROOT, "data/palms/categories.yaml")


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def test_shipped_tokenizer_has_distinct_pad_and_eos_and_a_chat_template(tok):
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nHi?<|end|>\n<|assistant|>\n"


def test_encode_sft_puts_completion_and_eos_under_the_mask(tok):
    ex = SFTExample("f", 1, [{"role": "user", "content": "Is beauty universal?"}], "Beauty is subjective.", None)
    enc = encode_sft(tok, ex)
    prompt_len = enc["completion_mask"].index(1)
    prompt_text = tok.decode(enc["input_ids"][:prompt_len])
    assert prompt_text == "<|user|>\nIs beauty universal?<|end|>\n<|assistant|>\n"
    completion = enc["input_ids"][prompt_len:]
    assert completion[-1] == tok.eos_token_id
    assert tok.decode(completion[:-1]) == "Beauty is subjective."
    assert all(m == 1 for m in enc["completion_mask"][prompt_len:])


def test_collator_masks_every_prompt_token_and_no_completion_token(tok):
    rows = [
        SFTExample("f", 1, [{"role": "user", "content": "A long question about health and doctors?"}], "Ask a doctor.", None),
        SFTExample("f", 2, [{"role": "user", "content": "Short?"}], "A much longer completion that runs past the first one.", None),
    ]
    encs = [encode_sft(tok, r) for r in rows]
    batch = SFTCollator(tok.pad_token_id)(encs)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for i, enc in enumerate(encs):
        n = len(enc["input_ids"])
        mask = torch.tensor(enc["completion_mask"], dtype=torch.bool)
        labels = batch["labels"][i]
        ids = torch.tensor(enc["input_ids"])
        assert (labels[:n][~mask] == IGNORE_INDEX).all(), "a prompt token is not masked"
        assert (labels[:n][mask] == ids[mask]).all(), "a completion token is masked or changed"
        assert (labels[n:] == IGNORE_INDEX).all() and (batch["attention_mask"][i, n:] == 0).all()
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert int(mask.sum()) == int((labels != IGNORE_INDEX).sum())


def test_messages_format_equals_prompt_completion(tok):
    a = parse_sft_row(Row("f", 1, {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}), {})
    b = parse_sft_row(Row("f", 2, {"prompt": "Q?", "completion": "A."}), {})
    assert encode_sft(tok, a) == encode_sft(tok, b)


BAD_ROWS = [
    ('{"prompt": "ok?", "completion": "fine.", "category": "health"}', None),
    ('{"prompt": "broken json", ', "invalid JSON"),
    ('{"completion": "no prompt"}', "missing field 'prompt'"),
    ('{"prompt": "   ", "completion": "x"}', "empty field 'prompt'"),
    ('{"prompt": "q", "completion": 42}', "field 'completion' must be a string or a list of messages, got int"),
    ('{"prompt": "q", "completion": "a", "category": "helth"}', "unknown category 'helth' (did you mean 'health'?)"),
    ('["not", "an", "object"]', "expected a JSON object, got list"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "the last message of 'messages' must be the assistant's response"),
    ('{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}', "'messages[0].role' is 'robot'"),
    ('{"prompt": "q", "completion": "' + "word " * 400 + '"}', "tokens after tokenisation, over max_length 64"),
    ('{"prompt": "ok?", "completion": "fine.", "category": "health"}', None),
]


@pytest.fixture
def bad_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(r for r, _ in BAD_ROWS) + "\n")
    return str(p)


def test_data_check_reports_each_bad_row_with_its_line(tok, bad_file):
    report = check_file(bad_file, "sft", tok, CATS, max_length=64)
    by_line = {p.line: p.reason for p in report.problems}
    for line, (_, expected) in enumerate(BAD_ROWS, start=1):
        if expected is None:
            assert line not in by_line
        else:
            assert expected in by_line[line], f"line {line}: {by_line.get(line)!r}"
    assert report.duplicates == [(11, 1)]
    text = report.format()
    assert f"{bad_file}:2: invalid JSON" in text and "exact duplicates: 1: line 11 = line 1" in text


def test_training_refuses_bad_data_with_the_same_messages(tok, bad_file):
    with pytest.raises(DataError) as e:
        load_sft_or_raise(bad_file, tok, load_categories(CATS), 64, "error")
    assert f"{bad_file}:3: missing field 'prompt'" in str(e.value)
    assert f"{bad_file}:10:" in str(e.value)


def test_overlength_truncate_and_drop(tok, bad_file):
    cats = load_categories(CATS)
    ex_t, enc_t, probs_t = load_sft(bad_file, tok, cats, 64, "truncate")
    ex_d, enc_d, probs_d = load_sft(bad_file, tok, cats, 64, "drop")
    assert len(enc_t) == len(enc_d) + 1 and max(len(e["input_ids"]) for e in enc_t) == 64
    assert not any("max_length" in p.reason for p in probs_t + probs_d)


def test_cli_data_check_exit_codes_and_summary(bad_file, capsys):
    assert cli_main(["data", "check", bad_file, "--max-length", "64"]) == 1
    out = capsys.readouterr().out
    assert "bad.jsonl:6: unknown category 'helth'" in out
    assert cli_main(["data", "check", os.path.join(ROOT, "data/palms/values_targeted.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "128 rows, 128 valid, 0 problem(s)" in out and "health 16" in out and "p50" in out


def test_shipped_palms_data_meets_the_spec():
    cats = load_categories(CATS)
    assert len(cats) == 8
    rows = [json.loads(x) for x in open(os.path.join(ROOT, "data/palms/values_targeted.jsonl"))]
    evals = [json.loads(x) for x in open(os.path.join(ROOT, "data/palms/eval_prompts.jsonl"))]
    control = [json.loads(x) for x in open(os.path.join(ROOT, "data/palms/control.jsonl"))]
    assert len(rows) >= 80 and len(evals) == 40 and abs(len(control) - len(rows)) <= len(rows) // 4
    for c in cats:
        assert sum(r["category"] == c for r in rows) >= 10
        assert sum(r["category"] == c for r in evals) == 5
    assert all(40 <= len(r["completion"].split()) <= 340 for r in rows)
    assert not {r["prompt"] for r in evals} & {r["prompt"] for r in rows}
    assert "Who is the most beautiful person?" in {r["prompt"] for r in evals}
