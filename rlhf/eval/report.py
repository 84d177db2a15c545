"""Evaluation reports: a text table, report.md, and PNG plots (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

import os

FINISHED = "rubric_finished"  # results key: the rubric's verdicts on the pairs where both answers ended with EOS


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(results: dict) -> str:
    """Overall win rate vs the baseline per candidate and judge, with 95% intervals."""
    lines = [f"win rate against {results['baseline']} (ties count half; 95% paired bootstrap interval over prompts)"]
    lines.append(f"{'candidate':<16} {'judge':<14} {'win':>5} {'tie':>5} {'loss':>5} {'win rate':>9}  95% CI")
    for c, by_judge in results["candidates"].items():
        for j, s in by_judge.items():
            o = s["overall"]
            lines.append(f"{c:<16} {j:<14} {o['wins']:>5} {o['ties']:>5} {o['losses']:>5} {_pct(o['win_rate']):>9}  "
                         f"[{_pct(o['ci_low'])}, {_pct(o['ci_high'])}]")
    if results.get("rubric_scores"):
        lines.append("rubric score (1-5, mean [95% CI]): " + ", ".join(
            f"{m} {r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for m, r in results["rubric_scores"].items()))
    if results.get("perplexity"):
        lines.append("held-out perplexity: " + ", ".join(f"{m} {r['perplexity']:.1f}" for m, r in results["perplexity"].items()))
    if results.get("kl_to_baseline"):
        lines.append(f"KL to {results['baseline']} (nats/answer): "
                     + ", ".join(f"{m} {v:.2f}" for m, v in results["kl_to_baseline"].items()))
    return "\n".join(lines)


def plots(results: dict, out_dir: str) -> dict[str, str]:
    """Write the PNG plots; returns name -> file name (relative to out_dir)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    cands = list(results["candidates"])
    judges = sorted({j for c in cands for j in results["candidates"][c]})
    if cands and judges:
        # InstructGPT Figure 1 shape: win rate against the baseline per model, with 95% error bars
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cands), 3.6))
        width = 0.8 / len(judges)
        for k, j in enumerate(judges):
            xs, ys, lo, hi = [], [], [], []
            for i, c in enumerate(cands):
                o = results["candidates"][c].get(j, {}).get("overall")
                if not o or o["win_rate"] is None:
                    continue
                xs.append(i + (k - (len(judges) - 1) / 2) * width)
                ys.append(o["win_rate"])
                lo.append(o["win_rate"] - o["ci_low"])
                hi.append(o["ci_high"] - o["win_rate"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=j)
        ax.axhline(0.5, color="gray", lw=1, ls="--")
        ax.set_xticks(range(len(cands)), cands, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"win rate vs {results['baseline']}")
        ax.set_title("Preference win rate against the baseline (95% CI)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "winrates.png"), dpi=120)
        plt.close(fig)
        written["winrates"] = "winrates.png"
    if results.get("rubric_scores"):
        models = list(results["rubric_scores"])
        cats = sorted({c for m in models for c in results["rubric_scores"][m]["per_category"]}, key=str)
        fig, ax = plt.subplots(figsize=(2 + 1.1 * len(cats), 3.8))
        width = 0.8 / len(models)
        for k, m in enumerate(models):
            pc = results["rubric_scores"][m]["per_category"]
            xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(cats))]
            ys = [pc[c]["mean"] if c in pc else 0 for c in cats]
            err = [[pc[c]["mean"] - pc[c]["ci_low"] for c in cats], [pc[c]["ci_high"] - pc[c]["mean"] for c in cats]]
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=m)
        ax.set_xticks(range(len(cats)), [str(c).replace("_", "\n") for c in cats], fontsize=7)
        ax.set_ylim(1, 5)
        ax.set_ylabel("rubric adherence (1-5)")
        ax.set_title("Rubric score per category (95% CI)")
        ax.legend(fontsize=7, ncol=min(len(models), 3))
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "rubric_by_category.png"), dpi=120)
        plt.close(fig)
        written["rubric"] = "rubric_by_category.png"
    if results.get("perplexity"):
        models = list(results["perplexity"])
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(models), 3.2))
        ax.bar(models, [results["perplexity"][m]["perplexity"] for m in models], color="tab:gray")
        ax.set_ylabel("perplexity, held-out pretraining text")
        ax.set_title("Capability integrity (lower is better)")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "perplexity.png"), dpi=120)
        plt.close(fig)
        written["perplexity"] = "perplexity.png"
    if results.get("training"):
        # proxy (reward model) against gold stand-in (rubric) over PPO iterations: over-optimisation shows as the
        # proxy rising while the gold score stalls or falls (Gao et al. 2022)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), sharex=True)
        for name, c in results["training"].items():
            ax1.plot(c["iteration"], c["proxy_reward"], label=name)
            ax2.plot(c["iteration"], c["gold_rubric"], label=name)
        ax1.set_title("Proxy: reward-model score")
        ax1.set_ylabel("mean normalised score of the rollout")
        ax2.set_title("Gold stand-in: rubric score")
        ax2.set_ylabel("mean rubric score (1-5)")
        for ax in (ax1, ax2):
            ax.set_xlabel("PPO iteration")
            ax.grid(alpha=0.3)
        ax1.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "proxy_vs_gold.png"), dpi=120)
        plt.close(fig)
        written["training"] = "proxy_vs_gold.png"
    return written


def markdown(results: dict, cfg, plot_files: dict[str, str]) -> str:
    lines = ["# Evaluation report", ""]
    lines.append(f"Prompts: `{cfg.data.prompt_file}`, {cfg.eval.samples_per_prompt} sample(s) per prompt, "
                 f"temperature {cfg.generation.temperature}, seed {cfg.run.seed}. Baseline: **{results['baseline']}**. "
                 "Ties count half; intervals are 95% paired bootstrap intervals over prompts "
                 f"({cfg.eval.bootstrap_resamples} resamples).")
    lines.append("")
    lines.append("The rubric judge is the offline stand-in for human raters (lexical rules written from the "
                 "category positions, `data/palms/rubric.yaml`); read it beside the reward-model judge and the samples.")
    lines += ["", "## Win rates against the baseline", "",
              "| candidate | judge | wins | ties | losses | win rate | 95% CI |", "|---|---|---|---|---|---|---|"]
    for c, by_judge in results["candidates"].items():
        for j, s in by_judge.items():
            o = s["overall"]
            lines.append(f"| {c} | {j} | {o['wins']} | {o['ties']} | {o['losses']} | {_pct(o['win_rate'])} | "
                         f"{_pct(o['ci_low'])} - {_pct(o['ci_high'])} |")
    if any(FINISHED in by_judge for by_judge in results["candidates"].values()):
        lines += ["", "`rubric_finished`: the rubric's verdicts on the pairs whose two answers both ended with EOS "
                  "(content alone: the rubric's cap on cut-off answers decides none of them)."]
    if results.get("eos_rate"):
        lines += ["", "Answers that ended with EOS (not cut off at `generation.max_new_tokens`): " + ", ".join(
            f"{m} {_pct(r)}" for m, r in results["eos_rate"].items()) + "."]
    if "winrates" in plot_files:
        lines += ["", f"![win rates]({plot_files['winrates']})"]
    if results.get("agreement"):
        lines += ["", "## Judge agreement", "",
                  "Of the pairs both judges decided (neither called a tie), the share where they chose the same "
                  "answer; 50% is chance. For the reward model against the rubric, this is how well the proxy PPO "
                  "optimises tracks the gold stand-in on these models' answers.", "",
                  "| judges | candidate | decided by both | agree |", "|---|---|---|---|"]
        for pair, by_cand in results["agreement"].items():
            for c, a in by_cand.items():
                lines.append(f"| {pair} | {c} | {a['decided_by_both']} | {_pct(a['rate'])} |")
    lines += ["", "## Per category", "",
              "Indicative only: a category has few prompts (5 in the PALMS evaluation set), and a bootstrap interval "
              "over so few prompts covers less often than its nominal 95%.", ""]
    for c, by_judge in results["candidates"].items():
        for j, s in by_judge.items():
            lines += [f"**{c}, {j} judge**", "", "| category | n | win rate | 95% CI |", "|---|---|---|---|"]
            for cat, row in s["per_category"].items():
                lines.append(f"| {cat} | {row['n']} | {_pct(row['win_rate'])} | {_pct(row['ci_low'])} - {_pct(row['ci_high'])} |")
            lines.append("")
    if results.get("rubric_scores"):
        lines += ["## Rubric scores (1-5)", "", "| model | mean | 95% CI |", "|---|---|---|"]
        for m, r in results["rubric_scores"].items():
            lines.append(f"| {m} | {r['mean']:.2f} | {r['ci_low']:.2f} - {r['ci_high']:.2f} |")
        if "rubric" in plot_files:
            lines += ["", f"![rubric by category]({plot_files['rubric']})"]
        lines.append("")
    if results.get("perplexity"):
        lines += ["## Capability integrity", "", "| model | held-out loss | perplexity |", "|---|---|---|"]
        for m, r in results["perplexity"].items():
            lines.append(f"| {m} | {r['loss']:.3f} | {r['perplexity']:.1f} |")
        if "perplexity" in plot_files:
            lines += ["", f"![perplexity]({plot_files['perplexity']})"]
    if results.get("kl_to_baseline"):
        lines += ["", f"## KL divergence from {results['baseline']}", "",
                  f"KL(model || {results['baseline']}) per answer in nats, estimated on each model's own eval samples "
                  "(the mean of their summed log-ratio, both models at the sampling temperature): how far the model "
                  "moved from the baseline where it answers these prompts.", "", "| model | KL (nats/answer) |",
                  "|---|---|"]
        for m, v in results["kl_to_baseline"].items():
            lines.append(f"| {m} | {v:.2f} |")
    if results.get("training"):
        lines += ["", "## Proxy reward against the gold stand-in over PPO iterations", "",
                  "Mean reward-model score (the proxy PPO optimises) and mean rubric score (the gold stand-in) of each "
                  "iteration's rollout, from the PPO runs' `metrics.jsonl` (`ppo.gold_rubric`). Over-optimisation "
                  "shows as the proxy rising while the rubric score stalls or falls.", "",
                  "| model | iterations | proxy first -> last 3 | rubric first -> last 3 |", "|---|---|---|---|"]
        for name, c in results["training"].items():
            k = min(3, len(c["iteration"]))
            p0, p1 = c["proxy_reward"][0], sum(c["proxy_reward"][-k:]) / k
            g0, g1 = c["gold_rubric"][0], sum(c["gold_rubric"][-k:]) / k
            lines.append(f"| {name} | {c['iteration'][-1]} | {p0:+.2f} -> {p1:+.2f} | {g0:.2f} -> {g1:.2f} |")
        if "training" in plot_files:
            lines += ["", f"![proxy vs gold]({plot_files['training']})"]
    lines += ["", "Samples with every judge's verdict: `samples.jsonl`."]
    return "\n".join(lines) + "\n"
