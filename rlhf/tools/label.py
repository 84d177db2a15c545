"""``rlhf label INPUT --judge J --out PAIRS.jsonl``: preference data from pairs of responses, labelled by a judge.

AI feedback in the format ``rlhf rm`` reads: each input row holds a prompt and two responses; the judge's verdict
makes one the chosen and the other the rejected response; ties are dropped (and counted). With a "gold" judge
labelling and a proxy reward model trained on its labels, this reproduces the gold/proxy set-up of Gao, Schulman
and Hilton (2022) for studying reward over-optimisation without humans.

Input rows: ``{prompt, response_a, response_b}`` (optional ``category``, ``eos_a``, ``eos_b``), or the rows of an
``rlhf eval`` ``samples.jsonl`` (``candidate_response`` / ``baseline_response``). An optional ``messages`` field
(as eval writes it) holds the whole prompt conversation (system message, earlier turns, the last user message);
the judge sees it, and the preference row keeps it as its ``prompt``.
"""

from __future__ import annotations

import json

from rlhf.data.formats import DataError, Problem, as_messages, read_table, text_error
from rlhf.eval.judges import PairItem
from rlhf.outputs import atomic_write_text


def read_pairs(path: str) -> list[PairItem]:
    table = read_table(path)
    problems = list(table.problems)
    items = []
    for row in table.rows:
        d = row.data
        a = d.get("response_a", d.get("candidate_response"))
        b = d.get("response_b", d.get("baseline_response"))
        if not isinstance(d.get("prompt"), str) or not d["prompt"].strip():
            problems.append(Problem(row.path, row.line, "missing or empty field 'prompt'"))
            continue
        if not isinstance(a, str) or not isinstance(b, str):
            problems.append(Problem(row.path, row.line, "need 'response_a' and 'response_b' (or an rlhf eval sample row)"))
            continue
        msgs = d.get("messages")
        if msgs is not None:
            err = text_error(d, "messages")
            if err or not isinstance(msgs, list):
                problems.append(Problem(row.path, row.line, err or "field 'messages' must be a list of messages"))
                continue
        items.append(PairItem(d["prompt"], d.get("category"), a, b, bool(d.get("eos_a", d.get("candidate_eos", True))),
                              bool(d.get("eos_b", d.get("baseline_eos", True))), row.line,
                              as_messages(msgs) if msgs and len(msgs) > 1 else None))
    if problems:
        raise DataError(problems)
    return items


def label(items: list[PairItem], judge) -> tuple[list[dict], dict]:
    """Preference rows from the judge's verdicts (A = ``candidate``); ties dropped. Returns (rows, counts)."""
    verdicts = judge.compare(items)
    rows, counts = [], {"win": 0, "tie": 0, "loss": 0}
    for it, v in zip(items, verdicts):
        counts[v] += 1
        if v == "tie":
            continue
        chosen, rejected = (it.candidate, it.baseline) if v == "win" else (it.baseline, it.candidate)
        row = {"prompt": it.messages or it.prompt, "chosen": chosen, "rejected": rejected, "judge": judge.name}
        if it.category is not None:
            row["category"] = it.category
        rows.append(row)
    return rows, counts


def make_judge(args):
    if args.judge == "rubric":
        from rlhf.eval.rubric import RubricJudge

        return RubricJudge(args.rubric)
    if args.judge == "reward_model":
        from rlhf.eval.model_judges import RewardModelJudge
        from rlhf.models.reward import RewardScorer

        if not args.model:
            raise ValueError("--model: the reward model directory is required with --judge reward_model")
        return RewardModelJudge(RewardScorer.from_dir(args.model))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.eval.model_judges import LLMJudge

    if not args.model:
        raise ValueError("--model: the judge LM is required with --judge llm")
    from rlhf.models.loading import from_pretrained

    return LLMJudge(from_pretrained(AutoModelForCausalLM, args.model),
                    AutoTokenizer.from_pretrained(args.model))


def main(args) -> int:
    items = read_pairs(args.input)
    judge = make_judge(args)
    rows, counts = label(items, judge)
    atomic_write_text(args.out, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"[label] {len(items)} pairs judged by {judge.name}: {counts['win']} A preferred, {counts['loss']} B "
          f"preferred, {counts['tie']} ties (dropped); wrote {len(rows)} preference rows to {args.out}")
    return 0
