"""``rlhf <command> CONFIG.yaml [key.sub=value ...]``: thin dispatch to the stages and tools, no logic."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rlhf.config import STAGES, ConfigError, describe, load_config
from rlhf.errors import RlhfError

STAGE_HELP = {
    "pretrain": "pretrain a causal LM from a config (the tiny default's base model)",
    "sft": "supervised fine-tuning on prompt/completion data (PALMS values-targeted set)",
    "compare": "comparison data: K responses per prompt sampled from a model, every pair labelled by a judge",
    "rm": "reward model on preference pairs (Bradley-Terry)",
    "dpo": "Direct Preference Optimisation of the SFT model on preference pairs (no reward model)",
    "ppo": "PPO-ptx against a reward model or a reward function (InstructGPT eq. 2)",
    "eval": "win rates of candidate models against a baseline, by pluggable judges",
}


def _stage(name: str, args: argparse.Namespace) -> int:
    from rlhf.engine.dist import shutdown
    from rlhf.stages import run_stage

    cfg = load_config(STAGES[name], args.config, args.overrides)
    args.loaded_config = cfg  # for the Ctrl-C and disk-full messages
    run_stage(name, cfg, **({"import_human": args.import_human} if name == "eval" else {}))
    shutdown()
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from rlhf.config import PipelineConfig
    from rlhf.engine.dist import shutdown
    from rlhf.stages import pipeline

    cfg = load_config(PipelineConfig, args.config, args.overrides)
    args.loaded_config = cfg
    pipeline.run(cfg)
    shutdown()
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from rlhf.data.check import check_file

    tokenizer = None
    max_length = args.max_length
    categories = args.categories
    tok_path = args.tokenizer
    if args.config:
        # take tokenizer, categories and max_length from a stage config
        for stage_cls in STAGES.values():
            try:
                cfg = load_config(stage_cls, args.config)
                break
            except ConfigError:
                continue
        else:
            raise ConfigError(f"{args.config}: not a valid config for any stage")
        tok_path = tok_path or cfg.model.tokenizer_path
        data = getattr(cfg, "data", None)
        max_length = max_length or getattr(data, "max_length", None)
        categories = categories if categories is not None else getattr(data, "categories_file", "")
    if tok_path:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_path)
    bad = 0
    for path in args.files:
        report = check_file(path, args.kind, tokenizer, categories or "", max_length)
        print(report.format())
        bad += len(report.problems)
    return 1 if bad else 0


def _config_show(args: argparse.Namespace) -> int:
    for key, tp, default, doc in describe(STAGES[args.stage]):
        print(f"{key} ({tp}, default {default!r})\n    {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlhf", description="RLHF alignment: pretrain -> sft -> rm -> ppo (or dpo) -> "
                                                         "eval")
    sub = p.add_subparsers(dest="command", required=True)
    for name in STAGES:
        sp = sub.add_parser(name, help=STAGE_HELP.get(name, name))
        sp.add_argument("config", help="YAML config file")
        sp.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.learning_rate=1e-5")
        sp.set_defaults(func=lambda a, n=name: _stage(n, a))
        if name == "eval":
            sp.add_argument("--import-human", metavar="FILE",
                            help="verdicts a rater filled in (annotation.csv or the page's verdicts.csv) for the human judge")

    pp = sub.add_parser("pipeline", help="every stage in one run directory (skips finished, resumes interrupted)")
    pp.add_argument("config", help="pipeline YAML (see configs/tiny/pipeline.yaml)")
    pp.add_argument("overrides", nargs="*", help="overrides of the pipeline config, e.g. run_dir=runs/mine")
    pp.set_defaults(func=_pipeline)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    ck = data.add_parser("check", help="report every bad row (file, line, reason) and a summary")
    ck.add_argument("files", nargs="+", help="JSONL/Parquet files or datasets names")
    ck.add_argument("--kind", default="auto", choices=["auto", "sft", "prompt", "preference"])
    ck.add_argument("--config", help="take tokenizer, categories and max_length from this stage config")
    ck.add_argument("--tokenizer", help="tokenizer dir or hub id for token lengths (default: data/tokenizer)")
    ck.add_argument("--max-length", type=int, help="flag rows longer than this many tokens")
    ck.add_argument("--categories", help="categories.yaml whose ids are allowed (default: data/palms/categories.yaml)")
    ck.set_defaults(func=_data_check)

    bench = sub.add_parser("bench", help="benchmarks that print figures").add_subparsers(dest="bench", required=True)
    bp = bench.add_parser("ppo", help="time a few PPO iterations and print the phase breakdown and tokens/s")
    bp.add_argument("config", help="PPO config YAML")
    bp.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    bp.add_argument("--iterations", type=int, default=5, help="iterations to run (the first is reported apart)")
    bp.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also run under cProfile and print the N functions with the most own time")
    bp.set_defaults(func=lambda a: importlib.import_module("rlhf.tools.bench").main(a))
    bz = bench.add_parser("zero", help="PPO under ZeRO with several processes: generation with the actor gathered "
                                       "once vs per layer, and peak memory per rank for each ZeRO stage")
    bz.add_argument("config", help="PPO config YAML")
    bz.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    bz.add_argument("--iterations", type=int, default=3, help="PPO iterations per job (the first is left out of means)")
    bz.add_argument("--nproc", type=int, default=2, help="processes per job (torchrun --nproc_per_node)")
    bz.add_argument("--stages", default="0,2,3", help="ZeRO stages to measure memory for; 3 adds the per-layer job")
    bz.add_argument("--memory-only", action="store_true", help="leave out the per-layer generation job")
    bz.set_defaults(func=lambda a: importlib.import_module("rlhf.tools.bench").main(a))

    be = bench.add_parser("estimators", help="PPO with each advantage estimator (gae, rloo, grpo) at the same "
                                             "rollout: seconds per iteration and peak memory side by side")
    be.add_argument("config", help="PPO config YAML")
    be.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    be.add_argument("--iterations", type=int, default=3, help="PPO iterations per job (the first is left out of means)")
    be.add_argument("--estimators", default="gae,rloo,grpo", help="comma-separated; ratios are against the first")
    be.add_argument("--samples-per-prompt", type=int, default=4, help="responses per prompt, for every estimator")
    be.set_defaults(func=lambda a: importlib.import_module("rlhf.tools.bench").main(a))

    bt = bench.add_parser("trl", help="a PPO iteration of rlhf against TRL 1.12's PPOTrainer at the same models and "
                                      "shapes, interleaved: s/iteration, tokens/s, peak memory and ratios")
    bt.add_argument("overrides", nargs="*", help="key.sub=value overrides of the rlhf side (e.g. to measure an option)")
    bt.add_argument("--sizes", default="h64,h256,h512", help="comma-separated: h64, h256, h512, smollm2")
    bt.add_argument("--batch", type=int, default=0, help="episodes per iteration (default 8)")
    bt.add_argument("--response", type=int, default=0, help="response tokens (default 32; smollm2 64)")
    bt.add_argument("--iterations", type=int, default=4, help="PPO iterations per job (the first is left out)")
    bt.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each job; the median is reported")
    bt.add_argument("--epochs", type=int, default=4, help="PPO epochs over the one minibatch")
    bt.add_argument("--venv", default=".venv-trl", help="TRL 1.12's virtual environment (made on first use)")
    bt.add_argument("--variant", action="append", metavar="NAME=key=value,...",
                    help="another rlhf job with these overrides, e.g. fast=ppo.response_logits_only=true (repeatable)")
    bt.add_argument("--smollm2", help="SmolLM2-135M model directory for size smollm2 (launch/fetch_smollm2.sh)")
    bt.set_defaults(func=lambda a: importlib.import_module("rlhf.tools.bench_trl").main(a))

    lb = sub.add_parser("label", help="label pairs of responses with a judge into preference data (AI feedback)")
    lb.add_argument("input", help="JSONL of {prompt, response_a, response_b} rows, or an rlhf eval samples.jsonl")
    lb.add_argument("--judge", required=True, choices=["rubric", "reward_model", "llm"])
    lb.add_argument("--model", help="reward model dir (reward_model) or judge LM (llm)")
    lb.add_argument("--rubric", default="data/palms/rubric.yaml", help="rubric file (rubric judge)")
    lb.add_argument("--out", required=True, help="preference JSONL to write ({prompt, chosen, rejected})")
    lb.set_defaults(func=lambda a: importlib.import_module("rlhf.tools.label").main(a))

    mdl = sub.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    mi = mdl.add_parser("import", help="turn a GGUF file (or any loadable model) into a plain HF directory")
    mi.add_argument("src", help="a .gguf file, a directory holding one (with --gguf-file), or a hub id / directory")
    mi.add_argument("out", help="output directory (plain HF model, safetensors, with tokenizer and chat template)")
    mi.add_argument("--gguf-file", help="GGUF file name inside SRC")
    mi.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    mi.add_argument("--trust-remote-code", action="store_true", help="allow the source's own code (off by default)")
    mi.set_defaults(func=lambda a: importlib.import_module("rlhf.models.importer").main(a))

    an = sub.add_parser("analyze", help="analyses of trained models (layer linearity, layer replacement)")
    an_sub = an.add_subparsers(dest="analysis", required=True)
    lin = an_sub.add_parser(
        "linearity", help="linearity score of every pair of consecutive layers, per model (Razzhigaev et al. 2024)",
        description="For each model, the linearity score LS = 1 - min_A ||X~ A - Y~||_F^2 of every pair of consecutive "
                    "residual-stream states (X~, Y~ centred, unit Frobenius norm; A by least squares in float64) on a "
                    "fixed seeded sample of held-out text, with the residual stream and without it (Y - X against X). "
                    "A run directory's model sub-directories (base, sft, sft_control, rm, ppo, ppo_ptx) are compared "
                    "side by side; reward models are read through their backbone. Writes linearity.json, linearity.md "
                    "and linearity.png to --out.")
    lin.add_argument("models", nargs="+", metavar="MODEL_OR_RUN_DIR",
                     help="model directories and/or run directories (each sub-directory holding a model is analysed)")
    pr = an_sub.add_parser(
        "prune", help="replace the K most linear blocks by fitted linear maps vs removing them: held-out perplexity",
        description="Ranks the decoder blocks by linearity score on a fitting sample of held-out text, fits each "
                    "block's output as an affine map of its input (least squares, float64) and reports perplexity on "
                    "a disjoint evaluation sample for: the original model, the K most linear blocks removed, and "
                    "those blocks replaced by their linear maps. Writes prune.json and prune.md to --out.")
    pr.add_argument("model", help="a causal LM directory")
    pr.add_argument("--replace", type=int, nargs="+", required=True, metavar="K",
                    help="number(s) of most linear blocks to remove / replace, e.g. --replace 1 2")
    pr.add_argument("--rank-by", choices=["linearity", "residual"], default="linearity",
                    help="score that ranks the blocks: with the residual stream (default) or the block's own output")
    pr.add_argument("--fit-tokens", type=int, default=8192, help="tokens of the sample the linear maps are fitted on")
    pr.add_argument("--eval-tokens", type=int, default=8192, help="tokens of the disjoint perplexity sample")
    pr.add_argument("--per-block", action="store_true", help="also remove / replace each block alone")
    for sp, tokens in ((lin, True), (pr, False)):
        sp.add_argument("--text", default="data/pretrain/heldout.txt",
                        help="held-out text (.txt, {text} JSONL or a datasets name); default data/pretrain/heldout.txt")
        if tokens:
            sp.add_argument("--tokens", type=int, default=16384,
                            help="tokens in the sample (whole blocks; use many more than the hidden size)")
        sp.add_argument("--block-size", type=int, default=128, help="tokens per block (sequence) of the sample")
        sp.add_argument("--seed", type=int, default=0, help="seed of the block sample")
        sp.add_argument("--batch-size", type=int, default=8, help="blocks per forward pass")
        sp.add_argument("--device", default="auto", help="torch device; 'auto': cuda if available, else cpu")
        sp.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own code (off by default)")
        sp.add_argument("--out", default="runs/analysis", help="output directory (default runs/analysis)")
        sp.set_defaults(func=lambda a: importlib.import_module("rlhf.tools.analyze").main(a))

    rp = sub.add_parser("report", help="the tables README and docs quote (stages, win rates, ptx sweep), from run "
                                       "directories of rlhf pipeline")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of rlhf pipeline (several: side by side)")
    rp.add_argument("--out", help="Markdown file to write (default: print)")
    rp.add_argument("--title", default="", help="heading of the generated file")
    rp.set_defaults(func=lambda a: importlib.import_module("rlhf.report").main(a))

    pl = sub.add_parser("plan", help="per-rank memory of a stage for every ZeRO stage and offload choice, and the "
                                     "lowest setting that fits a device",
                        description="Estimates, before anything is loaded, the per-rank memory of the stage in CONFIG: "
                                    "model states (trainable and frozen models, optimizer, gradients), activations of "
                                    "a training micro batch, and for PPO the gathered actor and KV cache of generation, "
                                    "for ZeRO 0-3 with and without CPU offload (method: rlhf/tools/plan.py).")
    pl.add_argument("config", help="a stage's YAML config")
    pl.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. deepspeed.micro_batch_size=4")
    pl.add_argument("--stage", choices=["pretrain", "sft", "rm", "dpo", "ppo"],
                    help="the stage (default: detected from the config's sections)")
    pl.add_argument("--gpus", type=int, default=1, help="devices per node (default 1)")
    pl.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    pl.add_argument("--gpu-memory", type=float, help="memory per device in GiB: recommend the lowest setting that fits")
    pl.add_argument("--model-config", help="a config.json (or model directory) to take the shapes from instead of "
                                           "the config's model")
    pl.set_defaults(func=lambda a: importlib.import_module("rlhf.tools.plan").main(a))

    cs = sub.add_parser("config", help="list every config key of a stage with its type, default and doc")
    cs.add_argument("stage", choices=list(STAGES))
    cs.set_defaults(func=_config_show)
    return p


def _defaults_for_check(args: argparse.Namespace) -> None:
    if getattr(args, "func", None) is _data_check and not args.config:
        if args.tokenizer is None and os.path.isdir("data/tokenizer"):
            args.tokenizer = "data/tokenizer"
        if args.categories is None and os.path.isfile("data/palms/categories.yaml"):
            args.categories = "data/palms/categories.yaml"


def main(argv: list[str] | None = None) -> int:
    from rlhf import failures

    args = build_parser().parse_args(argv)
    _defaults_for_check(args)
    previous = failures.catch_sigint()
    try:
        return args.func(args)
    except (RlhfError, FileNotFoundError, FileExistsError) as e:
        if failures.was_interrupted(e):  # e.g. a rank whose peers stopped on Ctrl-C
            return failures.report(e, args.command, getattr(args, "loaded_config", None))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Exception) as e:  # Ctrl-C and a full disk get one line; anything else is a bug
        code = failures.report(e, args.command, getattr(args, "loaded_config", None))
        if code is None:
            raise
        return code
    finally:
        failures.restore_sigint(previous)

if __name__ == "__main__":
    sys.exit(main())
