"""``rlhf analyze linearity|prune``: how linear the map between consecutive decoder layers is, per model and stage.

Razzhigaev et al., "Your Transformer is Secretly Linear" (ACL 2024): the score of each consecutive pair of layers,
LS = 1 - min_A ||X~ A - Y~||_F^2 on a fixed sample of held-out text (math in :mod:`rlhf.algos.linearity`), with and
without the residual stream; and the replacement experiment: swap the K most linear blocks for fitted linear maps,
or drop them, and measure held-out perplexity.

``rlhf analyze linearity MODEL_OR_RUN_DIR ...``
    Each argument is a model directory (causal LM or reward model: the backbone's residual stream is read) or a run
    directory, whose model sub-directories (base, sft, sft_control, rm, ppo, ppo_ptx, ...) are compared side by side.
    Writes OUT/linearity.json, OUT/linearity.md (the tables) and OUT/linearity.png (score per block per model).
``rlhf analyze prune MODEL --replace K [K ...]``
    Ranks blocks by their score on a fitting sample, fits h_i ~ h_{i-1} W + b for each (least squares, float64),
    and reports held-out perplexity on a disjoint evaluation sample: original, K most linear blocks removed, K
    replaced. Writes OUT/prune.json and OUT/prune.md.

Samples: the held-out text is tokenised with EOS between documents and cut into blocks of ``--block-size`` tokens;
a permutation seeded by ``--seed`` orders the blocks, and each sample takes the next whole blocks of it, so every
model is scored on the same tokens and the prune fitting and evaluation samples never overlap.
"""

from __future__ import annotations

import math
import os
import re
import time

import torch

from rlhf.algos.linearity import chance_level, fit_linear_map, layer_scores
from rlhf.data.text import tokenize_blocks
from rlhf.errors import RlhfError
from rlhf.eval.perplexity import lm_loss, perplexity
from rlhf.models.layers import LinearBlock, SkipBlock, decoder_layers, residual_stream
from rlhf.models.loading import disable_dropout, from_pretrained, is_model_dir
from rlhf.outputs import atomic_write_text, write_json


class AnalysisError(RlhfError, ValueError):
    """A bad request (sample larger than the text, K out of range, too few tokens): printed without a traceback."""


STAGE_ORDER = ("base", "sft", "sft_control", "rm", "ppo", "ppo_ptx")
"""run-directory sub-directories in pipeline order; others follow alphabetically"""


# ----------------------------------------------------------------------------------------------------------
# Models and samples
# ----------------------------------------------------------------------------------------------------------


def find_models(paths: list[str]) -> list[tuple[str, str]]:
    """(name, path) of every model to analyse: model directories as given, run directories expanded."""
    found: list[tuple[str, str]] = []
    for path in paths:
        if is_model_dir(path):
            found.append((os.path.basename(os.path.normpath(path)), path))
            continue
        if not os.path.isdir(path):
            if not os.path.exists(path) and re.fullmatch(r"[\w.-]+/[\w.-]+", path):
                found.append((path, path))  # a hub id
                continue
            raise FileNotFoundError(f"{path}: no such model or run directory")
        subs = sorted(os.listdir(path), key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
        models = []
        for sub in subs:
            full = os.path.join(path, sub)
            if not os.path.isdir(full):
                continue
            if is_model_dir(full):
                models.append((sub, full))
            elif os.path.isdir(os.path.join(full, "checkpoints")):
                print(f"[analyze] skipping {full}: no model saved (config.json missing; an unfinished stage?)")
        if not models:
            raise FileNotFoundError(f"{path}: not a model directory (no config.json) and holds no model directories")
        found += models
    names: set[str] = set()
    out = []
    for name, path in found:
        if name in names:
            name = f"{os.path.basename(os.path.dirname(os.path.normpath(path)))}/{name}"
        names.add(name)
        out.append((name, path))
    return out


def load_model(path: str, device: str, trust_remote_code: bool = False, causal_lm: bool = False):
    """(model, tokenizer, kind) of a model directory; kind is 'causal_lm' or 'reward_model' (sequence classifier).

    Weights from safetensors only; dropout off; eval mode. The samples are full blocks, so no padding is needed. ``causal_lm``: refuse anything else (perplexity needs it).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    try:
        conf = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read the model config ({e})") from None
    archs = getattr(conf, "architectures", None) or []
    kind = "reward_model" if any(a.endswith("ForSequenceClassification") for a in archs) else "causal_lm"
    if causal_lm and kind != "causal_lm":
        raise AnalysisError(f"{path}: a sequence-classification model ({archs[0]}); prune measures perplexity "
                            "and needs a causal LM")
    cls = AutoModelForSequenceClassification if kind == "reward_model" else AutoModelForCausalLM
    model = from_pretrained(cls, path, dtype=torch.float32, trust_remote_code=trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{path}: no tokenizer found beside the model ({e})") from None
    disable_dropout(model)
    return model.to(device).eval(), tok, kind


def sample_blocks(tok, text: str, block_size: int, seed: int, counts: list[int]) -> list[torch.Tensor]:
    """Disjoint samples of whole blocks of ``text``: the first counts[0] blocks of a seeded permutation, the next
    counts[1], ... Each sample is (n_k, block_size). A request beyond the text is an error naming the file."""
    blocks = tokenize_blocks(tok, text, block_size)  # (N, T)
    need = sum(counts)
    if need > len(blocks):
        raise AnalysisError(f"{text}: {len(blocks)} blocks of {block_size} tokens, fewer than the {need} asked for "
                            f"({' + '.join(str(c) for c in counts)}); ask for fewer tokens or give more text")
    perm = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for c in counts:
        out.append(blocks[perm[start : start + c]])
        start += c
    return out


def blocks_for(tokens: int, block_size: int) -> int:
    return max(1, math.ceil(tokens / block_size))


@torch.no_grad()
def residual_states(model, blocks: torch.Tensor, batch_size: int, device: str) -> list[torch.Tensor]:
    """The residual stream h_0 .. h_L of ``model`` over ``blocks`` (N, T): L + 1 tensors (N * T, d), float32 on CPU.

    Runs only the backbone (``model.base_model``): the causal LM's head and the reward model's score are not needed.
    """
    backbone = model.base_model
    chunks: list[list[torch.Tensor]] = []  # per state, per batch: (b * T, d)
    with residual_stream(model) as hidden:
        for i in range(0, len(blocks), batch_size):
            backbone(input_ids=blocks[i : i + batch_size].to(device), use_cache=False)
            chunks = chunks or [[] for _ in hidden]
            for c, h in zip(chunks, hidden):
                c.append(h.reshape(-1, h.shape[-1]).float().cpu())
    return [torch.cat(c) for c in chunks]


def check_tokens(n: int, d: int, what: str) -> None:
    """A least-squares fit with n <= d + 1 tokens is exact (score 1): refuse it; warn below 10 tokens per dimension."""
    if n <= d + 1:
        raise AnalysisError(f"{what}: {n} tokens for hidden size {d}; the fit would be exact and the score "
                            f"trivially 1. Use many more tokens than {d}")
    if n < 10 * d:
        print(f"[analyze] warning: {what}: only {n} tokens for hidden size {d}; unrelated data would already score "
              f"~{chance_level(n, d):.3f}. Use at least {10 * d} tokens for a clear reading")


# ----------------------------------------------------------------------------------------------------------
# rlhf analyze linearity
# ----------------------------------------------------------------------------------------------------------


def linearity_table(results: dict, key: str) -> str:
    """Markdown table: one row per block, one column per model, then the mean."""
    names = list(results["models"])
    depth = max(len(r[key]) for r in results["models"].values())
    lines = ["| block (h_{i-1} -> h_i) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i in range(depth):
        cells = [f"{r[key][i]:.4f}" if i < len(r[key]) else "" for r in results["models"].values()]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(f"{r['mean_' + key]:.4f}" for r in results["models"].values()) + " |")
    return "\n".join(lines)


def linearity_report(results: dict) -> str:
    return "\n".join([
        f"# Layer linearity ({results['tokens']} tokens of {results['text']}, seed {results['seed']})",
        "",
        "Linearity score LS = 1 - min_A ||X~ A - Y~||_F^2 of consecutive residual-stream states (Razzhigaev et al. "
        f"2024). Unrelated data of this size would score about {results['chance_level']:.4f}.",
        "",
        "## With the residual stream: LS(h_{i-1}, h_i)",
        "",
        linearity_table(results, "linearity"),
        "",
        "## Block contribution only: LS(h_{i-1}, h_i - h_{i-1})",
        "",
        linearity_table(results, "residual"),
        "",
    ])


def plot_linearity(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("linearity", "with residual stream: LS(h$_{i-1}$, h$_i$)"),
              ("residual", "block contribution: LS(h$_{i-1}$, h$_i$ - h$_{i-1}$)"))
    for ax, (key, title) in zip(axes, panels):
        for name, r in results["models"].items():
            ax.plot(range(1, len(r[key]) + 1), r[key], marker="o", ms=4, label=name)
        ax.set_xlabel("block i")
        ax.set_ylabel("linearity score")
        ax.set_title(title, fontsize=10)
        depth = max(len(r[key]) for r in results["models"].values())
        ax.set_xticks(range(1, depth + 1))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Layer linearity on {results['tokens']} held-out tokens (unrelated data would score "
                 f"~{results['chance_level']:.3f}; the axes are zoomed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_linearity(args) -> dict:
    t0 = time.time()
    models = find_models(args.models)
    os.makedirs(args.out, exist_ok=True)
    print(f"[analyze] linearity of {len(models)} model(s): {', '.join(n for n, _ in models)}; writing to "
          f"{os.path.abspath(args.out)}")
    n_blocks = blocks_for(args.tokens, args.block_size)
    results: dict = {"text": args.text, "block_size": args.block_size, "blocks": n_blocks,
                     "tokens": n_blocks * args.block_size, "seed": args.seed, "models": {}}
    for name, path in models:
        t = time.time()
        model, tok, kind = load_model(path, args.device, args.trust_remote_code)
        (blocks,) = sample_blocks(tok, args.text, args.block_size, args.seed, [n_blocks])
        states = residual_states(model, blocks, args.batch_size, args.device)  # L + 1 x (n, d)
        n, d = states[0].shape
        check_tokens(n, d, name)
        scores = layer_scores(states)
        r = results["models"][name] = {
            "path": path, "kind": kind, "hidden_size": d, "blocks": len(states) - 1, "tokens": n,
            "chance_level": chance_level(n, d), **scores,
            "mean_linearity": sum(scores["linearity"]) / len(scores["linearity"]),
            "mean_residual": sum(scores["residual"]) / len(scores["residual"]),
        }
        print(f"[analyze] {name} ({kind}, {r['blocks']} blocks, d={d}, {n} tokens): mean LS {r['mean_linearity']:.4f}, "
              f"without residual {r['mean_residual']:.4f} ({time.time() - t:.1f}s)")
        del model, states
    results["chance_level"] = max(r["chance_level"] for r in results["models"].values())
    results["wall_time_s"] = round(time.time() - t0, 1)
    report = linearity_report(results)
    atomic_write_text(os.path.join(args.out, "linearity.md"), report)
    write_json(os.path.join(args.out, "linearity.json"), results)
    plot_linearity(results, os.path.join(args.out, "linearity.png"))
    print(report)
    print(f"[analyze] wrote linearity.json, linearity.md, linearity.png to {os.path.abspath(args.out)} "
          f"({results['wall_time_s']}s)")
    return results


# ----------------------------------------------------------------------------------------------------------
# rlhf analyze prune
# ----------------------------------------------------------------------------------------------------------


def _returns_tuple(model, x: torch.Tensor) -> bool:
    """Whether this architecture's decoder blocks return a tuple (the stand-in blocks must do the same)."""
    seen = []
    handle = decoder_layers(model)[0].register_forward_hook(lambda m, a, out: seen.append(isinstance(out, tuple)))
    try:
        with torch.no_grad():
            model.base_model(input_ids=x[:1, :2], use_cache=False)
    finally:
        handle.remove()
    return seen[0]


def swapped_loss(model, layers, swaps: dict[int, torch.nn.Module], blocks, batch_size: int, device: str) -> float:
    """Held-out LM loss with blocks ``swaps`` (0-based index -> stand-in module) in place; the originals restored."""
    originals = {i: layers[i] for i in swaps}
    try:
        for i, m in swaps.items():
            layers[i] = m
        return lm_loss(model, blocks, batch_size, device)
    finally:
        for i, m in originals.items():
            layers[i] = m


def prune_report(r: dict) -> str:
    lines = [
        f"# Layer replacement: {r['model']}",
        "",
        f"Blocks ranked by {r['rank_by']} score on {r['fit_tokens']} fitting tokens; perplexity on "
        f"{r['eval_tokens']} disjoint held-out tokens of {r['text']}.",
        "",
        "| block | LS(h_{i-1}, h_i) | LS(h_{i-1}, h_i - h_{i-1}) |",
        "|---:|---:|---:|",
    ]
    for i, (a, b) in enumerate(zip(r["linearity"], r["residual"]), start=1):
        lines.append(f"| {i} | {a:.4f} | {b:.4f} |")
    lines += ["", "| K | blocks | original ppl | removed ppl | replaced by linear maps ppl |", "|---:|---|---:|---:|---:|"]
    for row in r["results"]:
        lines.append(f"| {row['k']} | {', '.join(map(str, row['blocks']))} | {r['original_perplexity']:.2f} | "
                     f"{row['removed_perplexity']:.2f} | {row['replaced_perplexity']:.2f} |")
    if r.get("per_block"):
        lines += ["", "Each block alone:", "", "| block | removed ppl | replaced ppl |", "|---:|---:|---:|"]
        for row in r["per_block"]:
            lines.append(f"| {row['block']} | {row['removed_perplexity']:.2f} | {row['replaced_perplexity']:.2f} |")
    return "\n".join(lines) + "\n"


def run_prune(args) -> dict:
    t0 = time.time()
    models = find_models([args.model])
    if len(models) != 1:
        raise AnalysisError(f"{args.model}: a run directory; prune takes one model directory, e.g. {models[0][1]}")
    ((name, path),) = models
    os.makedirs(args.out, exist_ok=True)
    print(f"[analyze] prune {name}: K = {', '.join(map(str, args.replace))}; writing to {os.path.abspath(args.out)}")
    model, tok, _ = load_model(path, args.device, args.trust_remote_code, causal_lm=True)
    layers = decoder_layers(model)
    depth = len(layers)
    if max(args.replace) > depth or min(args.replace) < 1:
        raise AnalysisError(f"--replace: K must be between 1 and the model's {depth} blocks, got {args.replace}")
    n_eval, n_fit = blocks_for(args.eval_tokens, args.block_size), blocks_for(args.fit_tokens, args.block_size)
    eval_blocks, fit_blocks = sample_blocks(tok, args.text, args.block_size, args.seed, [n_eval, n_fit])

    # fit on one sample: scores (for the ranking) and a linear map per block, h_i ~ h_{i-1} W + b
    states = residual_states(model, fit_blocks, args.batch_size, args.device)  # L + 1 x (n_fit, d)
    n, d = states[0].shape
    check_tokens(n, d, f"{name} fitting sample")
    scores = layer_scores(states)
    ranked = sorted(range(depth), key=lambda i: -scores[args.rank_by][i])  # 0-based, most linear first
    tuple_out = _returns_tuple(model, eval_blocks)
    dtype = next(model.parameters()).dtype
    maps = {}
    for i in range(depth):
        w, b = fit_linear_map(states[i], states[i + 1])
        maps[i] = LinearBlock(w.to(dtype), b.to(dtype), tuple_out).to(args.device)
    del states
    print(f"[analyze] {name}: {depth} blocks, d={d}; fitted on {n} tokens; most linear first: "
          f"{', '.join(f'{i + 1} ({scores[args.rank_by][i]:.4f})' for i in ranked)}")

    # evaluate on the other sample
    base_loss = lm_loss(model, eval_blocks, args.batch_size, args.device)
    result: dict = {
        "model": path, "text": args.text, "seed": args.seed, "block_size": args.block_size,
        "fit_tokens": n, "eval_tokens": eval_blocks.numel(), "rank_by": args.rank_by, **scores,
        "ranking": [i + 1 for i in ranked], "original_loss": base_loss, "original_perplexity": perplexity(base_loss),
        "results": [],
    }
    for k in sorted(set(args.replace)):
        chosen = sorted(ranked[:k])
        removed = swapped_loss(model, layers, {i: SkipBlock(tuple_out) for i in chosen}, eval_blocks, args.batch_size,
                               args.device)
        replaced = swapped_loss(model, layers, {i: maps[i] for i in chosen}, eval_blocks, args.batch_size, args.device)
        row = {"k": k, "blocks": [i + 1 for i in chosen], "removed_loss": removed, "replaced_loss": replaced,
               "removed_perplexity": perplexity(removed), "replaced_perplexity": perplexity(replaced)}
        result["results"].append(row)
        print(f"[analyze] K={k} (blocks {row['blocks']}): perplexity original {result['original_perplexity']:.2f}, "
              f"removed {row['removed_perplexity']:.2f}, replaced {row['replaced_perplexity']:.2f}")
    if args.per_block:
        result["per_block"] = []
        for i in range(depth):
            removed = swapped_loss(model, layers, {i: SkipBlock(tuple_out)}, eval_blocks, args.batch_size, args.device)
            replaced = swapped_loss(model, layers, {i: maps[i]}, eval_blocks, args.batch_size, args.device)
            result["per_block"].append({"block": i + 1, "removed_perplexity": perplexity(removed),
                                        "replaced_perplexity": perplexity(replaced)})
    result["wall_time_s"] = round(time.time() - t0, 1)
    report = prune_report(result)
    atomic_write_text(os.path.join(args.out, "prune.md"), report)
    write_json(os.path.join(args.out, "prune.json"), result)
    print(report)
    print(f"[analyze] wrote prune.json, prune.md to {os.path.abspath(args.out)} ({result['wall_time_s']}s)")
    return result


def main(args) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    if args.analysis == "linearity":
        run_linearity(args)
    else:
        run_prune(args)
    return 0
