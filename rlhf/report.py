"""``rlhf report RUN_DIR... --out FILE``: the tables README and docs quote, generated from run directories.

A figure in the documentation is only as good as the run behind it, so every quoted table is written by this
command from what the stages saved (``summary.json``, ``config.yaml``, ``metrics.jsonl``, the evaluation's
``winrates.json`` and the pipeline's ``pipeline_summary.json``), never typed by hand. The output names the run
directories, the code version that produced them (recorded by ``rlhf pipeline`` in ``pipeline_summary.json``)
and the command that regenerates it.

Tables, for each run directory:

1. the stages: what ran (from the resolved config), wall time and peak memory (from the pipeline), the result
   (from the stage's summary);
2. win rates against the evaluation's baseline: per judge the win rate (ties count half) with its 95% interval
   and the wins / ties / losses, the mean rubric score and the held-out perplexity;
3. judge agreement (where the evaluation compared judges);
4. the ``ptx_coef`` sweep of ``launch/ptx_sweep.sh``, when the run holds one (``RUN_DIR/ptx_sweep``).

With several run directories (e.g. seeds) a last table sets the win rates of every run side by side.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import yaml

from rlhf.errors import RlhfError


class ReportError(RlhfError, ValueError):
    """A run directory the report cannot read (missing or unfinished files); the message names the file."""


def code_version() -> dict:
    """The code that is running: the package version and, in a git checkout, the commit and whether the working
    tree had changes to tracked files (recorded with every pipeline run so a report can name the code)."""
    from rlhf import __version__

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    info: dict = {"version": __version__}
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            info["dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ----------------------------------------------------------------------------------------------------------
# Reading a run directory
# ----------------------------------------------------------------------------------------------------------


def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (has the stage finished?)") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _yaml(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _metrics(path: str) -> list[dict]:
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line of an interrupted run
    return rows


def _stage_names(run_dir: str) -> list[tuple[str, str]]:
    """(name, command) of the stages, in pipeline order (from the saved pipeline config)."""
    cfg = _yaml(os.path.join(run_dir, "config.yaml"))
    stages = cfg.get("stages")
    if not stages:
        raise ReportError(f"{os.path.join(run_dir, 'config.yaml')}: no pipeline stages (is {run_dir} the run "
                          "directory of `rlhf pipeline`?)")
    return [(s["name"], s["command"]) for s in stages]


def mean_kl_last(out_dir: str, n: int = 3) -> float | None:
    """Mean over the last ``n`` PPO iterations of the summed per-episode KL to the reference (metrics.jsonl)."""
    kl = [r["kl"] for r in _metrics(os.path.join(out_dir, "metrics.jsonl")) if "kl" in r]
    return sum(kl[-n:]) / len(kl[-n:]) if kl else None


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _what_and_result(command: str, cfg: dict, summary: dict, out_dir: str) -> tuple[str, str]:
    d = cfg.get("derived", {})
    if command == "pretrain":
        what = (f"{summary.get('parameters', d.get('parameters', 0)) / 1e6:.2f}M-parameter model, "
                f"{summary.get('steps')} steps of {d.get('global_batch')} x {cfg.get('data', {}).get('block_size')} "
                "tokens")
        result = (f"held-out loss {summary['eval_loss']:.2f} nats/token (perplexity {summary['eval_perplexity']:.1f})"
                  if "eval_loss" in summary else f"train loss {summary.get('train_loss', float('nan')):.2f}")
        return what, result
    if command == "sft":
        what = f"{summary.get('steps')} steps over {summary.get('train_rows')} rows of `{cfg['data']['train_file']}`"
        result = (f"held-out completion loss {summary['heldout_loss_before']:.2f} -> {summary['heldout_loss_after']:.2f}"
                  f" ({summary['heldout_rows']} rows)" if "heldout_loss_after" in summary else "-")
        return what, result
    if command == "compare":
        per = summary["responses"] // max(1, summary["prompts"])
        what = f"{per} samples for each of {summary['prompts']} prompts, every pair judged by the {summary['judge']}"
        result = (f"{summary['pairs']} pairs: {summary['decided']} decided, {summary['ties']} ties, "
                  f"{summary['incomplete']} dropped (cut off), {summary['empty']} dropped (empty)")
        return what, result
    if command == "rm":
        what = f"{summary.get('steps')} steps"
        extra = cfg.get("data", {}).get("extra_train_files") or []
        what += f" on `{cfg['data']['train_file']}`" + "".join(f" + `{os.path.basename(x)}`" for x in extra)
        def baselines(x: dict) -> str:
            bow = x.get("bag_of_words_baseline_accuracy")  # summaries before it was added have none
            return (f"(longer response wins: {x['length_baseline_accuracy']:.3f}"
                    + (f", bag of words: {bow:.3f})" if bow is not None else ")"))

        if "test_accuracy" in summary:
            test = {k[len("test_"):]: v for k, v in summary.items() if k.startswith("test_")}
            result = f"test accuracy {summary['test_accuracy']:.3f} on {summary['test_pairs']} pairs {baselines(test)}"
        else:
            result = f"train accuracy {summary.get('train_accuracy', float('nan')):.3f}"
        for path, x in summary.get("extra_test", {}).items():
            result += f"; `{os.path.basename(path)}`: {x['accuracy']:.3f} on {x['pairs']} pairs {baselines(x)}"
        return what, result
    if command == "dpo":
        what = f"{summary.get('steps')} steps"
        extra = cfg.get("data", {}).get("extra_train_files") or []
        what += f" on `{cfg['data']['train_file']}`" + "".join(f" + `{os.path.basename(x)}`" for x in extra)
        what += f", loss {summary.get('loss_type')}, beta {summary.get('beta')}"
        if "test_accuracy" in summary:
            result = (f"test accuracy of the implicit reward {summary['test_accuracy']:.3f} (margin "
                      f"{summary['test_margin']:+.2f}) on {summary['test_pairs']} pairs; the policy prefers the chosen "
                      f"response on {summary['test_logp_accuracy_start']:.3f} -> {summary['test_logp_accuracy']:.3f}")
        else:
            result = f"train loss {summary.get('train_loss', float('nan')):.3f}"
        return what, result
    if command == "ppo":
        ppo = cfg.get("ppo", {})
        what = (f"{summary['iterations']} iterations of {d.get('rollout_batch')} episodes, up to "
                f"{cfg.get('generation', {}).get('max_new_tokens')} new tokens, {ppo.get('ppo_epochs')} PPO epoch(s), "
                f"beta {summary['kl_coef']}, ptx_coef {summary['ptx_coef']}")
        if ppo.get("advantage_estimator", "gae") != "gae":
            what += f", {ppo['advantage_estimator']} over {ppo.get('samples_per_prompt')} samples per prompt (no critic)"
        parts = []
        if "heldout_reward_final" in summary and "heldout_reward_start" in summary:
            parts.append(f"held-out reward {summary['heldout_reward_start']:+.2f} -> {summary['heldout_reward_final']:+.2f}")
        if "ptx_heldout_loss_end" in summary and "ptx_heldout_loss_start" in summary:
            parts.append(f"held-out pretraining loss {summary['ptx_heldout_loss_start']:.2f} -> "
                         f"{summary['ptx_heldout_loss_end']:.2f}")
        kl = mean_kl_last(out_dir)
        if kl is not None:
            parts.append(f"KL to SFT {kl:.1f} nats (last 3 iterations)")
        return what, "; ".join(parts) or "-"
    if command == "eval":
        e = cfg.get("eval", {})
        what = (f"{len(summary.get('models', []))} models x {e.get('samples_per_prompt')} sample(s) per prompt of "
                f"`{cfg.get('data', {}).get('prompt_file')}`, judges: {', '.join(summary.get('judges', []))}")
        return what, "the win-rate table"
    return "-", "-"


def stage_table(run_dir: str) -> str:
    pipe = _json(os.path.join(run_dir, "pipeline_summary.json"))
    lines = ["| stage | command | what ran | wall time | peak RSS | result |", "|---|---|---|---|---|---|"]
    for name, command in _stage_names(run_dir):
        out = os.path.join(run_dir, name)
        summary = _json(os.path.join(out, "summary.json"))
        cfg = _yaml(os.path.join(out, "config.yaml"))
        t = pipe.get("stages", {}).get(name, {})
        t = t.get("earlier", t)
        seconds = t.get("seconds", summary.get("wall_time_s"))
        rss = f"{t['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in t else "-"
        what, result = _what_and_result(command, cfg, summary, out)
        lines.append(f"| {name} | {command} | {what} | {_minutes(seconds)} | {rss} | {result} |")
    total = pipe.get("wall_time_s")
    lines.append("")
    lines.append(f"Pipeline wall time: {_minutes(total)}" + ("" if pipe.get("complete") else " (not complete)") + ".")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rate(o: dict) -> str:
    if o["win_rate"] is None:
        return "- (no pairs)"
    return f"{_pct(o['win_rate'])} [{100 * o['ci_low']:.1f}, {100 * o['ci_high']:.1f}]"


def _eval_stages(run_dir: str) -> list[str]:
    """Names of the pipeline's eval stages, in order; a run without one is refused."""
    evals = [n for n, c in _stage_names(run_dir) if c == "eval"]
    if not evals:
        raise ReportError(f"{run_dir}: the pipeline has no eval stage")
    return evals


def winrate_table(winrates: dict) -> str:
    """Candidates against the baseline: per judge win rate [95% CI] and W / T / L; mean rubric score; perplexity;
    KL to the baseline."""
    judges = []
    for by_judge in winrates["candidates"].values():
        judges += [j for j in by_judge if j not in judges]
    base = winrates["baseline"]
    head = [f"candidate vs {base}"]
    for j in judges:
        head += [f"{j} win rate [95% CI]", f"{j} W / T / L"]
    head += ["mean rubric score (1-5)"] if winrates.get("rubric_scores") else []
    head += ["ended with EOS"] if winrates.get("eos_rate") else []
    head += ["held-out perplexity"] if winrates.get("perplexity") else []
    head += [f"KL to {base} (nats/answer)"] if winrates.get("kl_to_baseline") else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in [*winrates["candidates"], base]:
        row = [m if m != base else f"{m} (the baseline)"]
        by_judge = winrates["candidates"].get(m, {})
        for j in judges:
            o = by_judge.get(j, {}).get("overall")
            row += [_rate(o), f"{o['wins']} / {o['ties']} / {o['losses']}"] if o else ["-", "-"]
        if winrates.get("rubric_scores"):
            r = winrates["rubric_scores"].get(m)
            row.append(f"{r['mean']:.2f}" if r else "-")
        if winrates.get("eos_rate"):
            e = winrates["eos_rate"].get(m)
            row.append("-" if e is None else _pct(e))
        if winrates.get("perplexity"):
            p = winrates["perplexity"].get(m)
            row.append(f"{p['perplexity']:.1f}" if p else "-")
        if winrates.get("kl_to_baseline"):
            kl = winrates["kl_to_baseline"].get(m)
            row.append("0 (itself)" if m == base else "-" if kl is None else f"{kl:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def agreement_table(winrates: dict) -> str:
    agreement = winrates.get("agreement") or {}
    if not agreement:
        return ""
    lines = ["| judges | all candidates | " + " | ".join(winrates["candidates"]) + " |",
             "|" + "---|" * (2 + len(winrates["candidates"]))]
    for pair, per in agreement.items():
        cells = []
        for k in ["all", *winrates["candidates"]]:
            a = per.get(k) or {}
            rate, n = a.get("rate"), a.get("decided_by_both")
            cells.append("-" if rate is None else f"{_pct(rate)} of {n}")
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(run_dir: str) -> str:
    """``launch/ptx_sweep.sh``'s runs: one row per ptx coefficient (plus plain PPO and the run's PPO-ptx)."""
    sweep = os.path.join(run_dir, "ptx_sweep")
    wr_path = os.path.join(sweep, "eval", "winrates.json")
    if not os.path.exists(wr_path):
        return ""
    wr = _json(wr_path)
    models = _yaml(os.path.join(sweep, "eval", "config.yaml")).get("models", {})
    base = wr["baseline"]
    base_ppl = wr.get("perplexity", {}).get(base, {}).get("perplexity")
    rows = []
    for m, path in models.items():
        if m == base:
            continue
        summary = _json(os.path.join(path, "summary.json"))
        rows.append((summary.get("ptx_coef"), m, path))
    rows.sort(key=lambda r: (r[0] is None, r[0]))
    judges = [j for j in ("rubric", "reward_model") if any(j in wr["candidates"].get(m, {}) for _, m, _ in rows)]
    head = ["`ppo.ptx_coef`", "model", f"held-out perplexity ({base} {base_ppl:.1f})" if base_ppl else "perplexity"]
    head += [f"{j} win rate vs {base} [95% CI]" for j in judges] + ["summed KL to SFT, last 3 iterations"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for coef, m, path in rows:
        p = wr.get("perplexity", {}).get(m, {}).get("perplexity")
        ppl = "-" if p is None else (f"{p:.1f} ({p - base_ppl:+.1f})" if base_ppl else f"{p:.1f}")
        cells = [f"{coef:g}" if coef is not None else "-", m, ppl]
        for j in judges:
            o = wr["candidates"].get(m, {}).get(j, {}).get("overall")
            cells.append(_rate(o) if o else "-")
        kl = mean_kl_last(path)
        cells.append("-" if kl is None else f"{kl:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_side_by_side(run_dirs: list[str]) -> str:
    wrs = [_json(os.path.join(r, _eval_stages(r)[-1], "winrates.json")) for r in run_dirs]
    cands = [c for c in wrs[0]["candidates"]]
    judges = [j for j in wrs[0]["candidates"][cands[0]]] if cands else []
    head = ["candidate", "judge"] + [f"`{r}`" for r in run_dirs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cands:
        for j in judges:
            cells = []
            for wr in wrs:
                o = wr["candidates"].get(c, {}).get(j, {}).get("overall")
                cells.append(_rate(o) if o else "-")
            lines.append(f"| {c} | {j} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _provenance(run_dir: str) -> str:
    """Which code ran the stages (a resumed or partly re-run pipeline may name several commits)."""
    pipe = _json(os.path.join(run_dir, "pipeline_summary.json"))
    seen: dict[str, list[str]] = {}
    for name, t in pipe.get("stages", {}).items():
        code = t.get("earlier", t).get("code") or {}
        key = (f"`{code['commit'][:12]}`" + (" with uncommitted changes" if code.get("dirty") else "")
               if "commit" in code else "an unrecorded code version")
        seen.setdefault(key, []).append(name)
    if not seen:
        return "an unrecorded code version"
    if len(seen) == 1:
        only = next(iter(seen))
        return only if only.startswith("an ") else f"code commit {only}"
    return "code commits " + "; ".join(f"{k} ({', '.join(v)})" for k, v in seen.items())


def build(run_dirs: list[str], title: str = "") -> str:
    command = "rlhf report " + " ".join(shlex.quote(r) for r in run_dirs)
    parts = [f"# {title or 'Results'}", "",
             f"Generated by `{command}` from what the stages saved; do not edit by hand, run the command again.", ""]
    for run_dir in run_dirs:
        evals = _eval_stages(run_dir)
        parts += [f"## `{run_dir}`", "", f"Run of {_provenance(run_dir)}; its configs are saved in each stage's "
                  "`config.yaml`.", "", "### Stages", "", stage_table(run_dir), ""]
        for name in evals:
            wr = _json(os.path.join(run_dir, name, "winrates.json"))
            stage = f" (stage `{name}`)" if len(evals) > 1 else ""
            parts += [f"### Win rates against {wr['baseline']}{stage}", "",
                      "Ties count half; 95% paired bootstrap intervals over prompts.", "", winrate_table(wr), ""]
            agreement = agreement_table(wr)
            if agreement:
                parts += [f"### Judge agreement (where both judges decided a pair){stage}", "", agreement, ""]
        sweep = sweep_table(run_dir)
        if sweep:
            parts += ["### `ppo.ptx_coef` sweep (`launch/ptx_sweep.sh`)", "", sweep, ""]
    if len(run_dirs) > 1:
        parts += ["## Every run side by side", "", runs_side_by_side(run_dirs), ""]
    return "\n".join(parts)


def main(args) -> int:
    for r in args.runs:
        if not os.path.isdir(r):
            raise ReportError(f"{r}: not a directory")
    text = build(args.runs, args.title)
    if args.out:
        from rlhf.outputs import atomic_write_text

        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write_text(args.out, text)
        print(f"[report] wrote {args.out}")
    else:
        print(text)
    return 0
