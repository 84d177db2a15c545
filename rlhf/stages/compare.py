"""``rlhf compare CONFIG``: comparison data the InstructGPT way, from a model's own samples, for ``rlhf rm``.

sample -> rank -> pairs:

1. Sample ``compare.responses_per_prompt`` (K) responses to every prompt from the model (the SFT model), in
   batches; each batch is appended to ``OUT/samples.partial.jsonl`` as it finishes, so an interrupted run
   resumes after the last finished batch (the file is keyed by model weights, prompts and generation settings:
   a mismatch starts over). Batches are seeded by their position, so a resumed run draws the same responses.
2. A labeller judge compares every pair of a prompt's responses (K choose 2, as InstructGPT's labellers ranked
   K = 4..9 responses): ``rubric`` (the offline stand-in for human raters), ``reward_model`` or ``llm``.
3. Every decided pair becomes a preference row ``{prompt, chosen, rejected, category, judge}`` in
   ``OUT/pairs.jsonl``; ties are dropped, and so are pairs with an empty response or one cut off before EOS
   (the reward model reads every response with an EOS appended, so it could not see why a truncated one lost;
   PPO penalises truncation on its own, ``ppo.missing_eos_penalty``). ``rlhf rm`` trains on them through
   ``data.extra_train_files``.

Why: a reward model trained only on hand-written pairs has never seen the policy's own text, and on it may agree
with the raters no better than chance; InstructGPT's labellers compared samples of the models being trained.
Every rank computes the same rows; rank 0 writes them.
"""

from __future__ import annotations

import itertools
import json
import os
import time

import torch
from tqdm.auto import tqdm

from rlhf import engine as E
from rlhf.config import CompareStageConfig
from rlhf.data.formats import load_categories
from rlhf.errors import TrainingError
from rlhf.eval.judges import PairItem
from rlhf.eval.models import build_judge, fingerprint, load_policy, model_stamp
from rlhf.models.policy import generate, response_texts
from rlhf.outputs import atomic_write_text, save_config, stage_output, write_json


def _read_partial(path: str, key: str) -> list[dict]:
    """Rows of earlier finished batches (a torn last line from a crash is ignored); [] when the key differs."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    if not rows or rows[0].get("fingerprint") != key:
        return []
    return rows


def sample_responses(cfg: CompareStageConfig, prompt_ids: list[list[int]], out: str, device) -> list[dict]:
    """K responses per prompt: rows {fingerprint, batch, prompt_id, sample, response, eos}, resumable by batch."""
    g, c = cfg.generation, cfg.compare
    path = cfg.model.name_or_path
    key = fingerprint(model_stamp(path), path, prompt_ids, g.__dict__, c.responses_per_prompt, cfg.run.seed)
    partial = os.path.join(out, "samples.partial.jsonl")
    # batch b covers jobs [b * bs, (b + 1) * bs) of the (prompt, sample) pairs
    jobs = [(p, k) for p in range(len(prompt_ids)) for k in range(c.responses_per_prompt)]
    n_batches = -(-len(jobs) // c.batch_size)
    rows = _read_partial(partial, key) if cfg.run.resume != "never" else []
    per_batch: dict[int, int] = {}
    for r in rows:
        per_batch[r["batch"]] = per_batch.get(r["batch"], 0) + 1
    # done: every row of the batch on disk (a crash while writing one can leave only some of its rows)
    done = {b for b, n in per_batch.items() if n == len(jobs[b * c.batch_size : (b + 1) * c.batch_size])}
    rows = [r for r in rows if r["batch"] in done]
    if done:
        E.print0(f"[compare] resuming: {len(done)}/{n_batches} batches of responses already in {partial}")
    model, tok = load_policy(path, cfg.model.dtype, device)
    if E.is_main():  # start the file over with the finished batches only: new batches never follow a torn line
        atomic_write_text(partial, "".join(json.dumps(x) + "\n" for x in rows))
        f = open(partial, "a", encoding="utf-8")
    try:
        for b in tqdm(range(n_batches), desc="sample", disable=not cfg.run.progress or not E.is_main()):
            if b in done:
                continue
            torch.manual_seed(cfg.run.seed * 100_003 + b)  # by position: a resumed run draws the same responses
            batch = jobs[b * c.batch_size : (b + 1) * c.batch_size]
            with torch.no_grad():
                r = generate(model, [prompt_ids[p] for p, _ in batch], tok, g.max_new_tokens, g.temperature,
                             g.top_k, g.top_p, g.do_sample, device)
            new = [{"fingerprint": key, "batch": b, "prompt_id": p, "sample": k, "response": text, "eos": eos}
                   for (p, k), text, eos in zip(batch, response_texts(tok, r), r.has_eos.tolist())]
            rows += new
            if E.is_main():
                f.write("".join(json.dumps(x) + "\n" for x in new))
                f.flush()
                os.fsync(f.fileno())
            E.report_progress(b + 1, n_batches, "batch")
    finally:
        if E.is_main():
            f.close()
    del model
    return sorted(rows, key=lambda x: (x["prompt_id"], x["sample"]))


def make_pairs(prompts: list[dict], rows: list[dict], judge, keep_incomplete: bool = False) -> tuple[list[dict], dict]:
    """All K-choose-2 pairs of each prompt's responses judged; decided ones as preference rows. Returns
    (rows, counts) with counts of ``pairs`` considered, ``decided``, ``ties``, ``incomplete`` (dropped: an answer
    cut off before EOS) and ``empty`` (dropped: an empty answer, which a preference file cannot hold)."""
    by_prompt: dict[int, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    items: list[PairItem] = []
    counts = {"pairs": 0, "decided": 0, "ties": 0, "incomplete": 0, "empty": 0}
    for pid in sorted(by_prompt):
        p = prompts[pid]
        for a, b in itertools.combinations(by_prompt[pid], 2):
            counts["pairs"] += 1
            if not (a["response"].strip() and b["response"].strip()):
                counts["empty"] += 1
                continue
            if not keep_incomplete and not (a["eos"] and b["eos"]):
                counts["incomplete"] += 1
                continue
            items.append(PairItem(p["prompt"], p["category"], a["response"], b["response"], a["eos"], b["eos"], pid,
                                  p["messages"] if len(p["messages"]) > 1 else None))
    verdicts = judge.compare(items) if items else []
    out = []
    for it, v in zip(items, verdicts):
        if v == "tie":
            counts["ties"] += 1
            continue
        chosen, rejected = (it.candidate, it.baseline) if v == "win" else (it.baseline, it.candidate)
        msgs = prompts[it.prompt_id]["messages"]
        row = {"prompt": msgs if len(msgs) > 1 else it.prompt, "chosen": chosen, "rejected": rejected,
               "judge": judge.name}
        if it.category is not None:
            row["category"] = it.category
        out.append(row)
    counts["decided"] = len(out)
    return out, counts


@stage_output("compare")
def run(cfg: CompareStageConfig) -> dict:
    t_start = time.time()
    E.init_env()
    out = cfg.run.output_dir
    E.seed_everything(cfg.run.seed)
    device = E.device()
    from transformers import AutoTokenizer

    from rlhf.data.sft import load_prompts

    tok = AutoTokenizer.from_pretrained(cfg.model.tokenizer_path)
    categories = load_categories(cfg.data.categories_file)
    prompt_ids, prompts = load_prompts(cfg.data.prompt_file, tok, categories, cfg.data.max_prompt_length)
    if cfg.data.max_prompts:
        prompt_ids, prompts = prompt_ids[: cfg.data.max_prompts], prompts[: cfg.data.max_prompts]
    k = cfg.compare.responses_per_prompt
    E.print0(f"[compare] {len(prompts)} prompts from {cfg.data.prompt_file} x {k} responses of "
             f"{cfg.model.name_or_path}; labeller judge: {cfg.compare.judge}; writing to {os.path.abspath(out)}")
    save_config(out, cfg)
    rows = sample_responses(cfg, prompt_ids, out, device)
    judge = build_judge(cfg.compare.judge, cfg, cfg.model.dtype, device)
    pairs, counts = make_pairs(prompts, rows, judge, cfg.compare.keep_incomplete)
    if not pairs:
        hint = ("most answers were cut off: raise generation.max_new_tokens (or set compare.keep_incomplete)"
                if counts["incomplete"] > counts["pairs"] // 2 else
                "sample more responses per prompt or at a higher temperature")
        raise TrainingError(f"[compare] the judge decided none of {counts['pairs']} pairs ({counts}); nothing to "
                            f"train a reward model on: {hint}")
    summary = {
        "stage": "compare", "prompts": len(prompts), "responses": len(rows),
        "eos_rate": sum(r["eos"] for r in rows) / len(rows), "judge": judge.name, **counts,
        "wall_time_s": round(time.time() - t_start, 1),
    }
    if E.is_main():
        strip = ("fingerprint", "batch")
        atomic_write_text(os.path.join(out, "samples.jsonl"),
                          "".join(json.dumps({k2: v for k2, v in r.items() if k2 not in strip}) + "\n" for r in rows))
        atomic_write_text(os.path.join(out, "pairs.jsonl"), "".join(json.dumps(r) + "\n" for r in pairs))
        write_json(os.path.join(out, "summary.json"), summary)  # last: its presence marks the stage finished
        os.remove(os.path.join(out, "samples.partial.jsonl"))
    E.barrier()
    E.print0(f"[compare] done: {len(rows)} responses, {counts['pairs']} pairs -> {counts['decided']} decided, "
             f"{counts['ties']} ties, {counts['incomplete']} dropped (a response cut off before EOS), "
             f"{counts['empty']} dropped (an empty response); wrote {os.path.join(out, 'pairs.jsonl')}")
    return summary
