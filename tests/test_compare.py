"""``rlhf compare``: K samples per prompt, every pair judged, decided pairs as preference rows; resumable."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from rlhf.config import CompareStageConfig, ConfigError, RMStageConfig, load_config
from rlhf.eval.rubric import RubricJudge
from rlhf.stages import compare


class ScoreJudge:
    """A judge that scores by a lookup table: higher wins, equal ties."""

    name = "table"

    def __init__(self, scores):
        self.scores = scores

    def compare(self, items):
        out = []
        for it in items:
            a, b = self.scores[it.candidate], self.scores[it.baseline]
            out.append("tie" if a == b else "win" if a > b else "loss")
        return out


def test_every_pair_of_a_prompt_is_judged_and_ties_and_cut_off_pairs_are_dropped():
    prompts = [{"messages": [{"role": "user", "content": "p0"}], "prompt": "p0", "category": "health"},
               {"messages": [{"role": "user", "content": "p1"}], "prompt": "p1", "category": None}]
    rows = [
        {"prompt_id": 0, "sample": 0, "response": "a", "eos": True},
        {"prompt_id": 0, "sample": 1, "response": "b", "eos": True},
        {"prompt_id": 0, "sample": 2, "response": "c", "eos": True},
        {"prompt_id": 0, "sample": 3, "response": "d", "eos": False},  # cut off: its 3 pairs are dropped
        {"prompt_id": 1, "sample": 0, "response": "e", "eos": True},
        {"prompt_id": 1, "sample": 1, "response": "f", "eos": True},
        {"prompt_id": 1, "sample": 2, "response": " ", "eos": True},  # empty: its 2 pairs are dropped
    ]
    judge = ScoreJudge({"a": 3, "b": 4, "c": 3, "d": 5, "e": 2, "f": 1, " ": 0})
    pairs, counts = compare.make_pairs(prompts, rows, judge)
    # prompt 0: C(4,2) = 6 pairs, 3 with d dropped; (a,b) b wins, (a,c) tie, (b,c) b wins;
    # prompt 1: C(3,2) = 3 pairs, 2 with the empty answer dropped; (e,f) e wins
    assert counts == {"pairs": 9, "decided": 3, "ties": 1, "incomplete": 3, "empty": 2}
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("b", "a"), ("b", "c"), ("e", "f")]
    assert pairs[0]["category"] == "health" and "category" not in pairs[2]
    assert pairs[0]["prompt"] == "p0" and pairs[0]["judge"] == "table"
    kept, counts = compare.make_pairs(prompts, rows, judge, keep_incomplete=True)
    assert counts["incomplete"] == 0 and ("d", "a") in [(p["chosen"], p["rejected"]) for p in kept]


def test_config_errors_name_the_key(tmp_path, micro_sft):
    with pytest.raises(ConfigError, match="responses_per_prompt"):
        load_config(CompareStageConfig, "configs/tiny/compare.yaml", [f"model.name_or_path={micro_sft}",
                                                                      "compare.responses_per_prompt=1"])
    with pytest.raises(ConfigError, match="reward_judge.model|judge is reward_model"):
        load_config(CompareStageConfig, "configs/tiny/compare.yaml", [f"model.name_or_path={micro_sft}",
                                                                      "compare.judge=reward_model"])


def _cfg(out, micro_sft, *extra):
    return load_config(CompareStageConfig, "configs/tiny/compare.yaml", [
        f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false", "data.max_prompts=6",
        "compare.responses_per_prompt=3", "compare.batch_size=5", "generation.max_new_tokens=24",
        "generation.temperature=1.0", "compare.keep_incomplete=true", *extra])


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f]


def test_compare_labels_samples_with_the_rubric_and_the_reward_stage_trains_on_them(tmp_path, micro_sft):
    out = tmp_path / "compare"
    # the micro model rarely stops within 24 tokens: keep cut-off pairs (the rubric caps their scores)
    summary = compare.run(_cfg(out, micro_sft))
    samples = _read(out / "samples.jsonl")
    assert len(samples) == 18 and {(r["prompt_id"], r["sample"]) for r in samples} == {
        (p, k) for p in range(6) for k in range(3)}
    assert not os.path.exists(out / "samples.partial.jsonl")
    # the verdicts agree with the rubric's scores computed here, pair by pair
    prompts = [json.loads(x) for x in open("data/prompts/train.jsonl")][:6]
    judge = RubricJudge("data/palms/rubric.yaml")
    expected = []
    for pid, p in enumerate(prompts):
        mine = [r for r in samples if r["prompt_id"] == pid]
        for i in range(3):
            for j in range(i + 1, 3):
                a, b = mine[i], mine[j]
                if not (a["response"] and b["response"]):
                    continue
                sa = judge.score(p["prompt"], a["response"], p.get("category"), a["eos"])
                sb = judge.score(p["prompt"], b["response"], p.get("category"), b["eos"])
                if sa != sb:
                    expected.append((a, b) if sa > sb else (b, a))
    pairs = _read(out / "pairs.jsonl")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(a["response"], b["response"]) for a, b in expected]
    assert summary["pairs"] == 18 and summary["decided"] == len(pairs)
    assert summary["decided"] + summary["ties"] + summary["empty"] == 18 and summary["incomplete"] == 0
    assert all(p["chosen"].strip() and p["rejected"].strip() for p in pairs)
    assert pairs  # seeded: the micro model's samples give decided pairs
    from rlhf.stages import rm

    rm_out = tmp_path / "rm"
    cfg = load_config(RMStageConfig, "configs/tiny/rm.yaml", [
        f"run.output_dir={rm_out}", f"model.name_or_path={micro_sft}", "run.progress=false", "train.max_steps=1",
        "data.max_train_pairs=8", f"data.extra_train_files=[{out / 'pairs.jsonl'}]", "data.test_file="])
    rm.run(cfg)
    derived = __import__("yaml").safe_load(open(rm_out / "config.yaml"))["derived"]
    assert derived["train_pairs"] == 8 + len(pairs) and derived["extra_train_pairs"] == len(pairs)


def _count_generate(monkeypatch, real, calls: list, interrupt_at: int = 0) -> None:
    """Patch compare.generate to record each call in ``calls`` and, at call ``interrupt_at``, raise Ctrl-C."""

    def generate(*a, **kw):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(compare, "generate", generate)


def test_an_interrupted_compare_resumes_after_its_last_batch_and_draws_the_same_responses(
        tmp_path, micro_sft, monkeypatch):
    full = tmp_path / "full"
    compare.run(_cfg(full, micro_sft))
    real, calls = compare.generate, []
    out = tmp_path / "resumed"
    _count_generate(monkeypatch, real, calls, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        compare.run(_cfg(out, micro_sft))
    assert len({r["batch"] for r in _read(out / "samples.partial.jsonl")}) == 2 and not (out / "summary.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(out / "samples.partial.jsonl", other / "samples.partial.jsonl")
    calls.clear()
    _count_generate(monkeypatch, real, calls)
    compare.run(_cfg(out, micro_sft))
    assert len(calls) == 4 - 2  # 18 responses in batches of 5: 4 batches, 2 were done
    assert _read(out / "samples.jsonl") == _read(full / "samples.jsonl")
    assert _read(out / "pairs.jsonl") == _read(full / "pairs.jsonl")
    # another generation setting does not reuse the partial file: every batch is drawn again (the directory holds
    # no run of rlhf's own beside the copied file, so it takes run.overwrite, which starts it over)
    calls.clear()
    compare.run(_cfg(other, micro_sft, "generation.max_new_tokens=20", "run.overwrite=true"))
    assert len(calls) == 4


def test_a_batch_torn_by_a_crash_is_drawn_again_and_the_rest_resume(tmp_path, micro_sft, monkeypatch):
    full = tmp_path / "full"
    compare.run(_cfg(full, micro_sft))
    real, calls = compare.generate, []
    out = tmp_path / "torn"
    _count_generate(monkeypatch, real, calls, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        compare.run(_cfg(out, micro_sft))
    partial = out / "samples.partial.jsonl"
    lines = partial.read_text().splitlines(keepends=True)
    assert len(lines) == 15  # batches 0-2 of 5 rows each
    # a crash in the middle of writing batch 2: two of its rows complete, the third torn
    partial.write_text("".join(lines[:12]) + lines[12][:20])
    calls.clear()
    _count_generate(monkeypatch, real, calls)
    compare.run(_cfg(out, micro_sft))
    assert len(calls) == 2  # batches 2 (torn) and 3
    assert _read(out / "samples.jsonl") == _read(full / "samples.jsonl")
    assert _read(out / "pairs.jsonl") == _read(full / "pairs.jsonl")
