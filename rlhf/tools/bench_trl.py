"""``rlhf bench trl``: a PPO iteration of rlhf against TRL's PPOTrainer at the same models and shapes, side by side.

TRL's last PPO trainer is ``trl.experimental.ppo.PPOTrainer`` in TRL 1.12 (later releases dropped it), so the
comparison installs TRL 1.12 into its own virtual environment (``--venv``, made on first use with
``python -m venv --system-site-packages`` and ``pip install --no-deps trl==1.12.0``: the same torch, transformers,
accelerate and datasets as this environment; only TRL differs) and runs TRL there in its own processes.

For each size the harness builds, once, an untrained Llama-shaped policy and a reward model (a sequence classifier
of the same shape; the critic starts from it on both sides) with a fixed seed, or takes a model directory
(SmolLM2-135M: ``--smollm2 DIR``, from ``launch/fetch_smollm2.sh``). Both sides then get:

- the same prompts: those of ``data/prompts/train.jsonl`` whose chat-templated length is the most common one, so
  every batch has the same width on both sides; TRL receives the very token ids rlhf's prompt loader produces;
- every response forced to the full length (TRL: no stop token; rlhf: ``generation.min_new_tokens`` =
  ``max_new_tokens``), sampling at temperature 0.7, top-k 0, top-p 1;
- one process, fp32, ZeRO-0 (rlhf's DeepSpeed engine; TRL's accelerate without DeepSpeed), ``--epochs`` PPO epochs
  over one minibatch of the whole batch, no gradient accumulation, no pretraining mix, the same learning rates,
  clip ranges, KL coefficient, gamma and lambda;
- the same number of iterations; the first pays for start-up and is left out. An iteration is timed from the end of
  the previous one to its own end on both sides (rlhf: when it logs its metrics; TRL: ``on_step_end``), so
  bookkeeping between iterations counts.

TRL runs twice: as shipped, and with ``gc.collect`` made a no-op in its process (TRL 1.12 calls it twice per
update, which on CPU costs more than its model work at small sizes). ``--variant NAME=key=value,...`` adds rlhf
jobs with those overrides (e.g. the speed options). The jobs of a size run interleaved,
``--repeats`` times (their order rotating), each a fresh process; the table gives the median over repeats of each
job's mean seconds per steady iteration, response tokens per second, peak RSS of the process, and the ratios.
Nothing here asserts a timing: run it on an otherwise idle machine and say so beside the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from rlhf.tools.bench import job_env, peak_rss_mb

TRL_VERSION = "1.12.0"
SIZES = {  # name -> Llama shape (vocabulary: the tokenizer in data/tokenizer)
    "h64": {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4},
    "h256": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8},
    "h512": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8},
}
HYPER = {"lr": 1e-5, "critic_lr": 1e-5, "kl_coef": 0.05, "clip": 0.2, "clip_value": 0.2, "vf_coef": 0.1,
         "gamma": 1.0, "lam": 0.95, "temperature": 0.7, "seed": 0}


# ----------------------------------------------------------------------------------------------------------
# models and prompts (built once per size, in this process)
# ----------------------------------------------------------------------------------------------------------

def build_models(size: str, root: str, smollm2: str | None) -> str:
    """``root/size/{policy,rm}`` and ``root/size/prompts.jsonl``, ``prompt_ids.json``; returns ``root/size``."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        LlamaConfig,
    )

    out = os.path.join(root, size)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(HYPER["seed"])
    if size == "smollm2":
        if not smollm2 or not os.path.isdir(smollm2):
            raise SystemExit(f"error: --smollm2 {smollm2 or '(not given)'}: not a model directory "
                             "(bash launch/fetch_smollm2.sh DIR makes one)")
        tok = AutoTokenizer.from_pretrained(smollm2)
        policy = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
        rm = AutoModelForSequenceClassification.from_pretrained(smollm2, num_labels=1, dtype=torch.float32)
        rm.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    else:
        tok = AutoTokenizer.from_pretrained("data/tokenizer")
        shape = dict(model_type="llama", vocab_size=len(tok), max_position_embeddings=1024, rms_norm_eps=1e-5,
                     tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                     bos_token_id=tok.bos_token_id, **SIZES[size])
        shape["num_key_value_heads"] = shape["num_attention_heads"]
        cfg = LlamaConfig(**{k: v for k, v in shape.items() if k != "model_type"})
        policy = AutoModelForCausalLM.from_config(cfg)
        rm = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**shape, num_labels=1))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    for name, model in (("policy", policy), ("rm", rm)):
        model.save_pretrained(os.path.join(out, name), safe_serialization=True)
        tok.save_pretrained(os.path.join(out, name))
    write_prompts(tok, out)
    return out


def write_prompts(tok, out: str, source: str = "data/prompts/train.jsonl") -> None:
    """The prompts of ``source`` whose chat-templated length is the most common one (rlhf's own prompt loader
    tokenises them), as ``prompts.jsonl`` for rlhf and their token ids as ``prompt_ids.json`` for TRL."""
    from collections import Counter

    from rlhf.data.formats import load_categories
    from rlhf.data.sft import load_prompts

    ids, rows = load_prompts(source, tok, load_categories("data/palms/categories.yaml"), 10**6)
    width = Counter(len(x) for x in ids).most_common(1)[0][0]
    keep = [i for i, x in enumerate(ids) if len(x) == width]
    with open(os.path.join(out, "prompts.jsonl"), "w", encoding="utf-8") as f:
        for i in keep:
            f.write(json.dumps({"prompt": rows[i]["prompt"], "category": rows[i]["category"]}) + "\n")
    with open(os.path.join(out, "prompt_ids.json"), "w", encoding="utf-8") as f:
        json.dump([ids[i] for i in keep], f)


# ----------------------------------------------------------------------------------------------------------
# workers: one job each, in its own process; each writes {"times": [end of iteration k], "peak_rss_mb": ...}
# ----------------------------------------------------------------------------------------------------------

def rlhf_worker(spec: dict) -> dict:
    from rlhf.config import PPOStageConfig, load_config
    from rlhf.outputs import MetricsLog
    from rlhf.stages import ppo

    times: list[float] = []
    original = MetricsLog.log

    def log(self, step, metrics):  # the end of an iteration: rlhf logs its metrics once per iteration
        times.append(time.time())
        return original(self, step, metrics)

    MetricsLog.log = log
    b, r, h = spec["batch"], spec["response"], HYPER
    cfg = load_config(PPOStageConfig, "configs/tiny/ppo.yaml", [
        f"model.name_or_path={spec['dir']}/policy", f"reward.model={spec['dir']}/rm",
        f"data.prompt_file={spec['dir']}/prompts.jsonl", "data.heldout_prompt_file=", "data.ptx_eval_file=",
        "data.max_prompt_length=1024", f"run.output_dir={spec['out']}", "run.resume=never", "run.progress=false",
        f"run.save_steps={10**9}", f"run.seed={h['seed']}", f"ppo.sample_every={10**9}", "ppo.gold_rubric=",
        f"ppo.iterations={spec['iterations']}", f"ppo.rollout_batch_size={b}", f"ppo.mini_batch_size={b}",
        f"deepspeed.micro_batch_size={b}", f"ppo.ppo_epochs={spec['epochs']}", "ppo.ptx_coef=0",
        f"ppo.kl_coef={h['kl_coef']}", f"ppo.clip_range={h['clip']}", f"ppo.clip_range_value={h['clip_value']}",
        f"ppo.vf_coef={h['vf_coef']}", f"ppo.gamma={h['gamma']}", f"ppo.lam={h['lam']}",
        f"train.learning_rate={h['lr']}", f"critic.learning_rate={h['critic_lr']}", "train.lr_scheduler=constant",
        f"generation.max_new_tokens={r}", f"generation.min_new_tokens={r}", f"generation.temperature={h['temperature']}",
        "deepspeed.zero_stage=0", "deepspeed.precision=fp32", *spec.get("overrides", []),
    ])
    ppo.run(cfg)
    with open(os.path.join(spec["out"], "metrics.jsonl"), encoding="utf-8") as f:
        lengths = [json.loads(line)["response_length"] for line in f]
    if any(n != r for n in lengths):
        raise RuntimeError(f"rlhf responses were not forced to {r} tokens: mean lengths {lengths}")
    return {"times": times, "peak_rss_mb": peak_rss_mb()}


def trl_worker(spec: dict) -> dict:
    import gc

    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if trl.__version__ != TRL_VERSION:
        raise SystemExit(f"error: TRL {trl.__version__} in {sys.executable}; the harness needs {TRL_VERSION}")
    if not spec["gc"]:
        gc.collect = lambda *a, **k: 0  # TRL 1.12 calls gc.collect() twice per update
    h, b, d = HYPER, spec["batch"], spec["dir"]
    torch.manual_seed(h["seed"])
    tok = AutoTokenizer.from_pretrained(f"{d}/policy", padding_side="left")
    with open(f"{d}/prompt_ids.json", encoding="utf-8") as f:
        ids = json.load(f)
    dataset = Dataset.from_dict({"input_ids": ids})
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.time())

    args = PPOConfig(
        output_dir=spec["out"], per_device_train_batch_size=b, gradient_accumulation_steps=1, num_mini_batches=1,
        num_ppo_epochs=spec["epochs"], total_episodes=b * spec["iterations"], local_rollout_forward_batch_size=b,
        response_length=spec["response"], stop_token=None, missing_eos_penalty=None, temperature=h["temperature"],
        learning_rate=h["lr"], lr_scheduler_type="constant", kl_coef=h["kl_coef"], cliprange=h["clip"],
        cliprange_value=h["clip_value"], vf_coef=h["vf_coef"], gamma=h["gamma"], lam=h["lam"], whiten_rewards=False,
        num_sample_generations=0, report_to=[], save_strategy="no", logging_steps=10**9, use_cpu=True, bf16=False,
        fp16=False, seed=h["seed"], dataloader_num_workers=0, sft_model_path=f"{d}/policy",
        reward_model_path=f"{d}/rm",
    )
    trainer = PPOTrainer(
        args=args, processing_class=tok,
        model=AutoModelForCausalLM.from_pretrained(f"{d}/policy", dtype=torch.float32),
        ref_model=AutoModelForCausalLM.from_pretrained(f"{d}/policy", dtype=torch.float32),
        reward_model=AutoModelForSequenceClassification.from_pretrained(f"{d}/rm", num_labels=1, dtype=torch.float32),
        value_model=AutoModelForSequenceClassification.from_pretrained(f"{d}/rm", num_labels=1, dtype=torch.float32),
        train_dataset=dataset, callbacks=[Clock()],
    )
    trainer.train()
    return {"times": times, "peak_rss_mb": peak_rss_mb()}


# ----------------------------------------------------------------------------------------------------------
# the harness
# ----------------------------------------------------------------------------------------------------------

def ensure_venv(venv: str) -> str:
    """The TRL 1.12 environment's python, made on first use."""
    py = os.path.join(venv, "bin", "python")
    probe = [py, "-c", f"import trl, sys; sys.exit(trl.__version__ != '{TRL_VERSION}')"]
    if os.path.exists(py) and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"[bench] making {venv}: python -m venv --system-site-packages, pip install --no-deps trl=={TRL_VERSION}",
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", f"trl=={TRL_VERSION}"], check=True)
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise SystemExit(f"error: {venv}: TRL {TRL_VERSION} did not install")
    return py


def run_job(python: str, kind: str, spec: dict, timeout: float) -> dict:
    """One job in a fresh process; returns the per-iteration seconds after the first and the peak RSS."""
    path = spec["out"] + ".json"
    env = job_env()
    env.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with open(spec["out"] + ".spec", "w", encoding="utf-8") as f:
        json.dump(spec, f)
    proc = subprocess.run([python, "-m", "rlhf.tools.bench_trl", kind, spec["out"] + ".spec", path], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench job {kind} ({spec['out']}) failed ({proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr)[-4000:]}")
    with open(path, encoding="utf-8") as f:
        res = json.load(f)
    t = res["times"]
    if len(t) != spec["iterations"]:
        raise RuntimeError(f"bench job {kind}: {len(t)} iterations timed, expected {spec['iterations']}")
    steps = [b - a for a, b in zip(t, t[1:])]
    return {"s_per_iter": sum(steps) / len(steps), "peak_rss_mb": res["peak_rss_mb"]}


def parse_variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=key=value,key=value`` -> (NAME, [key=value, ...]): extra rlhf jobs with those overrides."""
    out = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        items = [x.strip() for x in rest.split(",") if x.strip()]
        if not sep or not name or not items or any("=" not in x for x in items):
            raise SystemExit(f"error: --variant {spec!r}: expected NAME=key=value[,key=value...]")
        out.append((name, items))
    return out


def bench_trl(sizes: list[str], batch: int, response: int, iterations: int, repeats: int, epochs: int, venv: str,
              smollm2: str | None, timeout: float = 7200, overrides: list[str] | None = None,
              variants: list[tuple[str, list[str]]] | None = None) -> dict:
    """Every size's jobs (rlhf, each rlhf variant, TRL, TRL without gc), interleaved ``repeats`` times."""
    trl_python = ensure_venv(venv)
    jobs = [("rlhf", "rlhf-worker", None, [])] + [(f"rlhf {n}", "rlhf-worker", None, o) for n, o in variants or []]
    jobs += [("TRL", "trl-worker", True, []), ("TRL no gc", "trl-worker", False, [])]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-trl-") as tmp:
        for size in sizes:
            b, r = (8, 64) if size == "smollm2" and batch == 0 else (batch or 8, response or 32)
            d = build_models(size, tmp, smollm2)
            results[size] = {"shape": {"batch": b, "response": r}, "jobs": {name: [] for name, *_ in jobs}}
            for rep in range(repeats):
                k = rep % len(jobs)
                for name, kind, gc_on, extra in jobs[k:] + jobs[:k]:  # rotate which job runs first
                    spec = {"dir": d, "out": os.path.join(tmp, f"{size}-{name.replace(' ', '_')}-{rep}"),
                            "batch": b, "response": r, "iterations": iterations, "epochs": epochs,
                            "gc": gc_on, "overrides": [*(overrides or []), *extra]}
                    print(f"[bench] {size} b{b}/r{r}: {name}, repeat {rep + 1}/{repeats} ...", flush=True)
                    job = run_job(sys.executable if kind == "rlhf-worker" else trl_python, kind, spec, timeout)
                    print(f"[bench]   {job['s_per_iter']:.3f} s/iteration, peak RSS {job['peak_rss_mb']:.0f} MiB",
                          flush=True)
                    results[size]["jobs"][name].append(job)
    print(f"\n[bench] rlhf bench trl: {iterations} iterations per job (the first left out), {epochs} PPO epochs x 1 "
          f"minibatch, responses forced to full length, fp32 unless a variant says otherwise, one process; median of {repeats} interleaved repeats"
          + (f"; every rlhf job with {' '.join(overrides)}" if overrides else "")
          + "".join(f"; rlhf {n}: {' '.join(o)}" for n, o in variants or []))
    print(table(results))
    return results


def table(results: dict) -> str:
    """One row per size and job: median s/iteration, response tokens/s, peak RSS, and the ratios to TRL."""
    lines = [f"{'size':<8} {'batch/resp':>10} {'job':<16} {'s/iteration':>11} {'tokens/s':>9} {'peak MiB':>9} "
             f"{'/ TRL':>6} {'/ TRL no gc':>11}"]
    for size, res in results.items():
        b, r = res["shape"]["batch"], res["shape"]["response"]
        med = {k: statistics.median(j["s_per_iter"] for j in v) for k, v in res["jobs"].items()}
        mem = {k: statistics.median(j["peak_rss_mb"] for j in v) for k, v in res["jobs"].items()}
        for name in res["jobs"]:
            lines.append(f"{size:<8} {f'b{b}/r{r}':>10} {name:<16} {med[name]:>11.3f} {b * r / med[name]:>9.1f} "
                         f"{mem[name]:>9.0f} {med[name] / med['TRL']:>6.2f} {med[name] / med['TRL no gc']:>11.2f}")
    return "\n".join(lines)


def main(args) -> int:
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES and s != "smollm2"]
    if bad:
        raise SystemExit(f"error: --sizes: unknown {', '.join(bad)} (known: {', '.join([*SIZES, 'smollm2'])})")
    bench_trl(sizes, args.batch, args.response, args.iterations, args.repeats, args.epochs, args.venv, args.smollm2,
              overrides=args.overrides, variants=parse_variants(args.variant or []))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "build":  # python -m rlhf.tools.bench_trl build SIZE ROOT [SMOLLM2_DIR]: the models alone
        print(build_models(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
        sys.exit(0)
    kind, spec_path, out_path = sys.argv[1:4]
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    result = (rlhf_worker if kind == "rlhf-worker" else trl_worker)(spec)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
