"""``rlhf eval CONFIG``: preference win rates of candidate models against a baseline, by pluggable judges.

generate -> judge -> statistics -> capability -> report:

1. Every model answers the held-out prompts, each its whole conversation (system message and earlier turns as
   well as the last user message), as in PPO (``eval.samples_per_prompt`` seeded samples each). Generations are
   cached in ``OUT/generations/NAME.jsonl`` with a fingerprint of the model, prompts and settings, so adding a
   judge or a candidate does not regenerate the others; ``eval.generations_dir`` lets two evals of the same models
   (say, one against the SFT model and one against the base model) share one cache.
2. Each candidate's sample k of prompt i is paired with the baseline's sample k of prompt i, and every judge gives
   a verdict (win / tie / loss, candidate's view) with the whole prompt conversation in front of it (the rubric
   matches on the last user message): ``rubric`` (the offline stand-in for human raters), ``reward_model``
   (normalised scores), ``llm`` (a local LM in both orders), ``human`` (an annotation sheet is written;
   ``rlhf eval CONFIG --import-human FILE`` reads the verdicts back). The rubric's verdicts are also summarised
   over the pairs whose two answers both ended with EOS (``rubric_finished``): content alone, without the
   rubric's cap on cut-off answers deciding a pair.
3. Per candidate x judge x category and overall: wins, ties, losses, win rate (ties count half) and a 95% paired
   bootstrap interval over prompts; the rubric's mean 1-5 score per model and category with its interval.
4. Capability integrity: perplexity of every model on held-out pretraining text.
5. ``winrates.json``, ``samples.jsonl``, ``report.md`` and PNG plots.
"""

from __future__ import annotations

import json
import os
import time

import torch
from tqdm.auto import tqdm

from rlhf import engine as E
from rlhf.config import EvalStageConfig
from rlhf.data.formats import load_categories
from rlhf.eval import report as R
from rlhf.eval import stats
from rlhf.eval.judges import PairItem
from rlhf.eval.models import build_judge, fingerprint, load_policy, model_stamp
from rlhf.eval.perplexity import lm_loss, perplexity
from rlhf.models.policy import generate, response_texts
from rlhf.outputs import atomic_write_text, read_metrics, save_config, stage_output, write_json


def generations(cfg: EvalStageConfig, name: str, path: str, prompts: list[dict], device) -> list[dict]:
    """Cached responses of model ``name``: rows {prompt_id, sample, response, eos}."""
    g = cfg.generation
    key = fingerprint(model_stamp(path), path, [p["messages"] for p in prompts], g.__dict__,
                      cfg.eval.samples_per_prompt, cfg.run.seed)
    cache = os.path.join(cfg.eval.generations_dir or os.path.join(cfg.run.output_dir, "generations"), f"{name}.jsonl")
    if os.path.exists(cache):
        with open(cache, encoding="utf-8") as f:
            rows = [json.loads(x) for x in f]
        if rows and rows[0].get("fingerprint") == key:
            E.print0(f"[eval] {name}: {len(rows)} cached responses ({cache})")
            return rows
    from rlhf.data.sft import encode_prompt

    model, tok = load_policy(path, cfg.eval.dtype, device)
    ids = [encode_prompt(tok, p["messages"]) for p in prompts]
    rows = []
    for k in range(cfg.eval.samples_per_prompt):
        torch.manual_seed(cfg.run.seed * 1000 + k)  # the same draws for every model: a paired comparison
        for i in tqdm(range(0, len(ids), cfg.eval.batch_size), desc=f"generate {name} (sample {k + 1})",
                      disable=not cfg.run.progress, leave=False):
            r = generate(model, ids[i : i + cfg.eval.batch_size], tok, g.max_new_tokens, g.temperature, g.top_k,
                         g.top_p, True, device)
            for j, (text, eos) in enumerate(zip(response_texts(tok, r), r.has_eos.tolist())):
                rows.append({"fingerprint": key, "prompt_id": i + j, "sample": k, "response": text, "eos": eos})
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    atomic_write_text(cache, "".join(json.dumps(r) + "\n" for r in rows))
    E.print0(f"[eval] {name}: generated {len(rows)} responses")
    return rows


def build_judges(cfg: EvalStageConfig, device) -> dict:
    """The machine judges of ``eval.judges`` (the human judge reads its verdicts from a sheet instead)."""
    return {name: build_judge(name, cfg, cfg.eval.dtype, device) for name in cfg.eval.judges if name != "human"}


def pair_items(prompts: list[dict], cand: list[dict], base: list[dict]) -> list[PairItem]:
    by_key = {(r["prompt_id"], r["sample"]): r for r in base}
    items = []
    for r in cand:
        b = by_key[(r["prompt_id"], r["sample"])]
        p = prompts[r["prompt_id"]]
        items.append(PairItem(p["prompt"], p["category"], r["response"], b["response"], r["eos"], b["eos"],
                              r["prompt_id"], p["messages"] if len(p["messages"]) > 1 else None))
    return items


def kl_estimates(cfg: EvalStageConfig, prompts: list[dict], gens: dict[str, list[dict]], candidates: list[str],
                 device) -> dict[str, float]:
    """KL(candidate || baseline) in nats per answer for each candidate whose tokenizer is the baseline's
    (``rlhf.eval.perplexity.kl_to_baseline``, on the candidate's own samples)."""
    from rlhf.data.sft import encode_prompt
    from rlhf.eval.perplexity import kl_to_baseline

    base_model, base_tok = load_policy(cfg.models[cfg.eval.baseline], cfg.eval.dtype, device)
    out = {}
    for c in candidates:
        model, tok = load_policy(cfg.models[c], cfg.eval.dtype, device)
        if tok.get_vocab() != base_tok.get_vocab():
            E.print0(f"[eval] {c}: no KL to {cfg.eval.baseline} (another tokenizer)")
            continue
        ids = [encode_prompt(tok, p["messages"]) for p in prompts]
        seqs = [(ids[r["prompt_id"]], tok(r["response"], add_special_tokens=False)["input_ids"]
                 + ([tok.eos_token_id] if r["eos"] else [])) for r in gens[c]]
        out[c] = kl_to_baseline(model, base_model, seqs, tok.pad_token_id, cfg.generation.temperature,
                                cfg.eval.scoring_batch, device)
        del model
    return out


@stage_output("eval", result_file="winrates.json")
def run(cfg: EvalStageConfig, import_human: str | None = None) -> dict:
    t_start = time.time()
    E.init_env()
    out = cfg.run.output_dir
    device = E.device()
    categories = load_categories(cfg.data.categories_file)
    from transformers import AutoTokenizer

    from rlhf.data.sft import load_prompts

    # prompts are validated with the baseline's tokenizer (same checks as PPO)
    base_tok = AutoTokenizer.from_pretrained(cfg.models[cfg.eval.baseline])
    _, prompts = load_prompts(cfg.data.prompt_file, base_tok, categories, 10**6)
    if cfg.data.max_prompts:
        prompts = prompts[: cfg.data.max_prompts]
    E.print0(f"[eval] {len(prompts)} prompts from {cfg.data.prompt_file}; models: {', '.join(cfg.models)}; "
             f"baseline {cfg.eval.baseline}; judges: {', '.join(cfg.eval.judges)}; writing to {os.path.abspath(out)}")
    save_config(out, cfg)

    # progress in tasks (a model's generations, a candidate x judge comparison, a model's perplexity)
    baseline = cfg.eval.baseline
    candidates = [n for n in cfg.models if n != baseline]
    machine_judges = [j for j in cfg.eval.judges if j != "human"]
    n_tasks = len(cfg.models) * (2 if cfg.data.ptx_eval_file else 1) + len(candidates) * len(machine_judges)
    tasks_done = 0

    def task_done() -> None:
        nonlocal tasks_done
        tasks_done += 1
        E.report_progress(tasks_done, n_tasks, "task")

    # 1. generations (cached)
    gens = {}
    for name, path in cfg.models.items():
        gens[name] = generations(cfg, name, path, prompts, device)
        task_done()
    items = {c: pair_items(prompts, gens[c], gens[baseline]) for c in candidates}
    kl = kl_estimates(cfg, prompts, gens, candidates, device) if cfg.eval.kl_to_baseline else {}

    # 2. judges
    judges = build_judges(cfg, device)
    verdicts: dict[str, dict[str, list[str]]] = {c: {} for c in candidates}
    for c in candidates:
        for jname, judge in judges.items():
            verdicts[c][jname] = judge.compare(items[c])
            task_done()
    if "human" in cfg.eval.judges:
        from rlhf.eval.human import export_sheet, import_verdicts

        for c in candidates:
            sheet_dir = os.path.join(out, "human", c)
            key = os.path.join(sheet_dir, "key.json")
            if import_human and os.path.abspath(os.path.dirname(import_human)) == os.path.abspath(sheet_dir):
                verdicts[c]["human"] = import_verdicts(import_human, key)
            elif os.path.exists(os.path.join(sheet_dir, "verdicts.csv")):
                verdicts[c]["human"] = import_verdicts(os.path.join(sheet_dir, "verdicts.csv"), key)
            elif not os.path.exists(key):
                paths = export_sheet(items[c], sheet_dir, seed=cfg.run.seed, candidate_name=c)
                E.print0(f"[eval] human sheet for {c}: {paths.html} (or {paths.csv}); key kept in {paths.key}")

    # 3. statistics
    n_res, seed = cfg.eval.bootstrap_resamples, cfg.run.seed
    results: dict = {"baseline": baseline, "candidates": {}, "rubric_scores": {}, "perplexity": {},
                     "kl_to_baseline": kl,
                     "eos_rate": {name: sum(r["eos"] for r in rows) / len(rows) for name, rows in gens.items()}}
    for c in candidates:
        results["candidates"][c] = {}
        pids = [it.prompt_id for it in items[c]]
        cats = [it.category for it in items[c]]
        for jname, v in verdicts[c].items():
            results["candidates"][c][jname] = stats.summarize(v, pids, cats, n_res, seed)
        if "rubric" in verdicts[c]:
            # the rubric on content alone: only the pairs whose two answers both ended with EOS, so that its cap
            # on cut-off answers decides none of them
            fin = [i for i, it in enumerate(items[c]) if it.candidate_eos and it.baseline_eos]
            results["candidates"][c][R.FINISHED] = stats.summarize([verdicts[c]["rubric"][i] for i in fin],
                                                                 [pids[i] for i in fin], [cats[i] for i in fin],
                                                                 n_res, seed)
    # how often the judges agree where both decided (e.g. the proxy reward model against the gold rubric)
    names = [j for j in cfg.eval.judges if all(j in verdicts[c] for c in candidates)]
    results["agreement"] = {}
    for i, j1 in enumerate(names):
        for j2 in names[i + 1 :]:
            per = {c: stats.agreement(verdicts[c][j1], verdicts[c][j2]) for c in candidates}
            pooled = stats.agreement(sum((verdicts[c][j1] for c in candidates), []),
                                     sum((verdicts[c][j2] for c in candidates), []))
            results["agreement"][f"{j1} vs {j2}"] = {"all": pooled, **per}
    if "rubric" in judges:
        rub = judges["rubric"]
        for name in cfg.models:
            rows = gens[name]
            scores = [rub.score(prompts[r["prompt_id"]]["prompt"], r["response"], prompts[r["prompt_id"]]["category"],
                                r["eos"]) for r in rows]
            pids = [r["prompt_id"] for r in rows]
            per_cat = {}
            for cat in sorted({prompts[p]["category"] for p in pids}, key=str):
                sel = [i for i, p in enumerate(pids) if prompts[p]["category"] == cat]
                vals = [scores[i] for i in sel]
                lo, hi = stats.mean_ci(vals, [pids[i] for i in sel], n_res, seed)
                per_cat[cat] = {"mean": sum(vals) / len(vals), "ci_low": lo, "ci_high": hi, "n": len(vals)}
            lo, hi = stats.mean_ci(scores, pids, n_res, seed)
            results["rubric_scores"][name] = {"mean": sum(scores) / len(scores), "ci_low": lo, "ci_high": hi,
                                              "per_category": per_cat}
            for r, s in zip(rows, scores):
                r["rubric"] = s

    # 4. capability integrity
    if cfg.data.ptx_eval_file:
        from rlhf.data.text import tokenize_blocks

        for name, path in cfg.models.items():
            model, tok = load_policy(path, cfg.eval.dtype, device)
            blocks = tokenize_blocks(tok, cfg.data.ptx_eval_file, cfg.data.block_size)
            if cfg.data.max_blocks:
                blocks = blocks[: cfg.data.max_blocks]
            loss = lm_loss(model, blocks, cfg.eval.scoring_batch, device)
            results["perplexity"][name] = {"loss": loss, "perplexity": perplexity(loss), "blocks": len(blocks)}
            del model
            task_done()

    # proxy reward against the gold stand-in over PPO iterations, from the PPO runs' own logs (ppo.gold_rubric)
    results["training"] = training_curves(cfg.models)

    # 5. reports
    if E.is_main():
        write_json(os.path.join(out, "winrates.json"), results)
        write_samples(os.path.join(out, "samples.jsonl"), prompts, items, verdicts, gens, baseline)
        plots = R.plots(results, out)
        atomic_write_text(os.path.join(out, "report.md"), R.markdown(results, cfg, plots))
        write_json(os.path.join(out, "summary.json"), {"stage": "eval", "wall_time_s": round(time.time() - t_start, 1),
                                                       "models": list(cfg.models), "judges": list(judges) + (
                                                           ["human"] if "human" in cfg.eval.judges else [])})
    E.print0(R.table(results))
    E.print0(f"[eval] report: {os.path.join(os.path.abspath(out), 'report.md')}")
    return results


def write_samples(path, prompts, items, verdicts, gens, baseline) -> None:
    lines = []
    rub = {name: {(r["prompt_id"], r["sample"]): r.get("rubric") for r in rows} for name, rows in gens.items()}
    for c, its in items.items():
        for i, it in enumerate(its):
            k = gens[c][i]["sample"]
            lines.append(json.dumps({
                "candidate": c, "baseline": baseline, "prompt_id": it.prompt_id, "sample": k, "prompt": it.prompt,
                "messages": it.conversation, "category": it.category, "candidate_response": it.candidate,
                "baseline_response": it.baseline,
                "candidate_eos": it.candidate_eos, "baseline_eos": it.baseline_eos,
                "verdicts": {j: v[i] for j, v in verdicts[c].items()},
                "rubric_candidate": rub[c].get((it.prompt_id, k)), "rubric_baseline": rub[baseline].get((it.prompt_id, k)),
            }) + "\n")
    atomic_write_text(path, "".join(lines))


def training_curves(models: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """For each model directory that is a PPO run logged with ``ppo.gold_rubric``: per iteration, the proxy reward
    (mean normalised reward-model score of the rollout) and the gold stand-in (mean rubric score of the same
    responses). Read from ``metrics.jsonl``; models without it are left out."""
    curves = {}
    for name, path in models.items():
        if not os.path.isfile(os.path.join(path, "metrics.jsonl")):
            continue
        rows = [r for r in read_metrics(path) if "gold_rubric_mean" in r and "score_mean" in r]
        if rows:
            curves[name] = {"iteration": [r["step"] for r in rows], "proxy_reward": [r["score_mean"] for r in rows],
                            "gold_rubric": [r["gold_rubric_mean"] for r in rows]}
    return curves
