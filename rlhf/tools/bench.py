"""Benchmarks that print figures (nothing here asserts a timing).

``rlhf bench ppo CONFIG [overrides] [--iterations N]``: where the time of a PPO iteration goes on this hardware.
Runs the PPO stage for a fixed number of iterations into a temporary directory (nothing of the user's run is
touched), then prints the phase breakdown (generation; reward/reference/value forward passes; training) and
tokens per second, measured side by side in one run. The first iteration is reported separately and left out
of the means (it pays for start-up costs).

``rlhf bench zero CONFIG [overrides] [--iterations N] [--nproc 2] [--stages 0,2,3]``: PPO under ZeRO with
several processes, each configuration a real ``torchrun`` job started from here:
1. generation time per rollout under ZeRO-3 with the actor's parameters gathered once per rollout
   (``ppo.gather_for_generation=true``) against gathering layer by layer at every decoding step (false),
   side by side with their ratio;
2. peak memory of every rank for each ZeRO stage: resident set size (``ru_maxrss``) and its increase over the
   process's size before any model was loaded, on GPUs also ``torch.cuda.max_memory_allocated``, beside the
   rule-of-thumb model-state bytes per rank (docs/scaling.md).

``rlhf bench estimators CONFIG [overrides] [--iterations N] [--estimators gae,rloo,grpo] [--samples-per-prompt 4]``:
PPO with each advantage estimator at the same rollout, one process per job: seconds per iteration and peak memory
side by side, with their ratios to the first estimator's (a critic-free run holds no critic, its optimizer state or
its gradients).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

import yaml

from rlhf.config import PPOStageConfig, load_config

PHASES = (("generation", "time_generation"), ("score + reference + value forward", "time_forward"),
          ("training (PPO epochs, ptx)", "time_train"))


def phase_table(rows: list[dict]) -> str:
    """A text table of mean seconds per phase over ``rows`` (metrics.jsonl lines)."""
    n = len(rows)
    total = sum(r["time_iteration"] for r in rows) / n
    lines = [f"{'phase':<36} {'s/iteration':>12} {'share':>7}"]
    accounted = 0.0
    for label, key in PHASES:
        mean = sum(r[key] for r in rows) / n
        accounted += mean
        lines.append(f"{label:<36} {mean:>12.3f} {100 * mean / total:>6.1f}%")
    other = total - accounted
    lines.append(f"{'other (metrics, checkpoint, samples)':<36} {other:>12.3f} {100 * other / total:>6.1f}%")
    lines.append(f"{'total':<36} {total:>12.3f} {100.0:>6.1f}%")
    tps = sum(r["tokens_per_s"] for r in rows) / n
    gtps = sum(r["generation_tokens_per_s"] for r in rows) / n
    lines.append(f"response tokens/s: {tps:.1f} overall, {gtps:.1f} during generation; "
                 f"mean response length {sum(r['response_length'] for r in rows) / n:.1f} tokens")
    return "\n".join(lines)


def bench_ppo(config: str, overrides: list[str], iterations: int = 5, profile: int = 0) -> dict:
    """The phase table of a few PPO iterations; with ``profile`` > 0 also the run under cProfile, its ``profile``
    functions with the most own time (profiling slows Python-heavy code more than torch kernels, so read those
    shares as where the time goes, not as the unprofiled timings)."""
    from rlhf.stages import ppo

    with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
        cfg = load_config(
            PPOStageConfig, config,
            [*overrides, f"run.output_dir={tmp}", f"ppo.iterations={iterations}", "run.resume=never",
             f"run.save_steps={10**9}", f"ppo.sample_every={10**9}", "data.heldout_prompt_file=",
             "data.ptx_eval_file=", "run.progress=false"],
        )
        t0 = time.time()
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.runcall(ppo.run, cfg)
        else:
            ppo.run(cfg)
        wall = time.time() - t0
        with open(os.path.join(tmp, "metrics.jsonl")) as f:
            rows = [json.loads(x) for x in f]
    steady = rows[1:] if len(rows) > 1 else rows
    print(f"\n[bench] PPO, {iterations} iterations of {cfg.ppo.rollout_batch_size} episodes "
          f"(max {cfg.generation.max_new_tokens} new tokens), ZeRO-{cfg.deepspeed.zero_stage}, "
          f"{cfg.deepspeed.precision}; first iteration {rows[0]['time_iteration']:.2f} s, wall {wall:.1f} s")
    print(phase_table(steady))
    if profile:
        print(profile_table(prof, profile))
    return {"rows": rows, "wall_s": wall}


def profile_table(prof, n: int) -> str:
    """The ``n`` functions with the most own time in a cProfile run, with their share of the profiled total."""
    import pstats

    st = pstats.Stats(prof)
    total = st.total_tt
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    lines = [f"\n[bench] cProfile of the whole run ({total:.1f} s profiled), the {n} functions with the most own time",
             f"{'own s':>8} {'share':>6} {'calls':>9}  function"]
    for (path, line, name), (_, calls, own, _cum, _) in rows:
        where = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}:{line}" if line else path
        lines.append(f"{own:>8.2f} {100 * own / total:>5.1f}% {calls:>9}  {name} ({where})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# rlhf bench zero: multi-process runs, one torchrun job per configuration
# ----------------------------------------------------------------------------------------------------------

# glibc raises its mmap threshold as large blocks are freed, then serves them from a heap it does not return to
# the OS: ZeRO-3's gather/release of every layer then inflates RSS far beyond the memory in use (measured: +1.4 GB
# for a 45M-parameter PPO). A fixed threshold keeps large blocks mmapped, so RSS measures memory in use; set
# MALLOC_MMAP_THRESHOLD_ yourself to measure otherwise.
MMAP_THRESHOLD = "131072"

QUIET = [f"run.save_steps={10**9}", f"ppo.sample_every={10**9}", "data.heldout_prompt_file=", "data.ptx_eval_file=",
         "run.progress=false", "run.resume=never"]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def job_env() -> dict:
    """This environment without the rendezvous variables, for a benchmark job started from here (its launcher, or
    the job as one process, sets its own)."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_state_mb(params: dict[str, int], zero_stage: int, world: int, precision: str) -> float:
    """Rule-of-thumb model-state memory per rank (Rajbhandari et al. 2020, "ZeRO"), in MiB.

    Trainable parameters cost p (weights) + p (gradients) + K (optimizer) bytes each, p = 4 in fp32 and 2 in
    bf16/fp16; K = 8 for Adam's two moments in fp32, 12 in mixed precision (fp32 master copy + moments). ZeRO-1
    divides K by the world size, ZeRO-2 also the gradients, ZeRO-3 also the weights (frozen models too).
    """
    p = 4 if precision == "fp32" else 2
    k = 8 if precision == "fp32" else 12
    n = world
    per_trainable = {0: p + p + k, 1: p + p + k / n, 2: p + (p + k) / n, 3: (p + p + k) / n}[zero_stage]
    per_frozen = p / n if zero_stage == 3 else p
    return (params["trainable"] * per_trainable + params["frozen"] * per_frozen) / 2**20


def _run_job(name: str, config: str, overrides: list[str], nproc: int, iterations: int, tmp: str,
             timeout: float) -> dict:
    """One PPO run as a ``torchrun`` job of ``nproc`` processes (its own processes, so each job's peak memory is
    its own): the metrics rows, the resolved config, each rank's memory figures and the steady-state means."""
    out, report = os.path.join(tmp, name), os.path.join(tmp, f"{name}.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), "-m", "rlhf.tools.bench", "worker", report, config,
           *overrides, *QUIET, f"ppo.iterations={iterations}", f"run.output_dir={out}"]
    env = job_env()
    env.setdefault("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench job {name} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    ranks = []
    for r in range(nproc):
        with open(f"{report}.rank{r}") as f:
            ranks.append(json.load(f))
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(x) for x in f]
    with open(os.path.join(out, "config.yaml")) as f:
        resolved = yaml.safe_load(f)
    actor = int(resolved["derived"]["actor_trainable_parameters"])
    critic = resolved["ppo"].get("advantage_estimator", "gae") == "gae"
    reward_model = bool(resolved["reward"]["model"])
    steady = rows[1:] if len(rows) > 1 else rows
    return {"ranks": ranks, "rows": rows, "wall_s": time.time() - t0,
            "iteration_s": sum(r["time_iteration"] for r in steady) / len(steady),
            "train_s": sum(r["time_train"] for r in steady) / len(steady),
            "generation_s": sum(r["time_generation"] for r in steady) / len(steady),
            "generation_tokens_per_s": sum(r["generation_tokens_per_s"] for r in steady) / len(steady),
            # actor (and critic) train, reference (and reward model) are frozen; all about the actor's size
            "params": {"trainable": (1 + critic) * actor, "frozen": (1 + reward_model) * actor},
            "estimator": resolved["ppo"].get("advantage_estimator", "gae"),
            "precision": resolved["deepspeed"]["precision"],
            "plan": planned(config, overrides, nproc)}


def planned(config: str, overrides: list[str], nproc: int) -> dict:
    """What ``rlhf plan`` estimates for this job's ZeRO stage (no offload), in MiB: states, activations,
    generation and the peak, to print beside the measured peak."""
    from rlhf.tools import plan as P

    cfg = load_config(PPOStageConfig, config, overrides)
    shape = P.model_shape(cfg.model.name_or_path, cfg.model.trust_remote_code)
    est = P.plan("ppo", cfg, shape, nproc)["settings"][(cfg.deepspeed.zero_stage, False, False)]
    return {k: est[k] / 2**20 for k in ("states", "activations", "generation", "peak")}


def _run_zero_job(config: str, overrides: list[str], stage: int, gather: bool, nproc: int, iterations: int,
                  tmp: str, timeout: float) -> dict:
    print(f"[bench] ZeRO-{stage}, {'gather once' if gather else 'per-layer gathering'}: {nproc} processes ...",
          flush=True)
    job = _run_job(f"zero{stage}-{'once' if gather else 'per-layer'}", config,
                   [*overrides, f"deepspeed.zero_stage={stage}", f"ppo.gather_for_generation={str(gather).lower()}"],
                   nproc, iterations, tmp, timeout)
    return {"stage": stage, "gather": gather, **job}


def estimator_table(jobs: dict[str, dict]) -> str:
    """The printed report of ``bench estimators``: time and peak memory per advantage estimator, each against the
    first one's."""
    first = next(iter(jobs.values()))
    base_t, base_mem = first["iteration_s"], first["ranks"][0]["peak_rss_mb"] - first["ranks"][0]["start_rss_mb"]
    lines = [f"{'estimator':<10} {'s/iteration':>12} {'training s':>11} {'peak RSS MiB':>13} {'over start':>11} "
             f"{'time ratio':>11} {'memory ratio':>13}"]
    for name, j in jobs.items():
        r = j["ranks"][0]
        grown = r["peak_rss_mb"] - r["start_rss_mb"]
        lines.append(f"{name:<10} {j['iteration_s']:>12.3f} {j['train_s']:>11.3f} {r['peak_rss_mb']:>13.0f} "
                     f"{grown:>11.0f} {j['iteration_s'] / max(base_t, 1e-9):>11.2f} {grown / max(base_mem, 1e-9):>13.2f}")
    return "\n".join(lines)


def bench_estimators(config: str, overrides: list[str], iterations: int = 3,
                     estimators: tuple[str, ...] = ("gae", "rloo", "grpo"), samples_per_prompt: int = 4,
                     timeout: float = 3600) -> dict:
    """PPO with each advantage estimator at the same rollout (the same prompts, each answered samples_per_prompt
    times, the same episodes per iteration and minibatch), one process each, one after another in this run."""
    jobs = {}
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-estimators-") as tmp:
        for name in estimators:
            print(f"[bench] advantage estimator {name} ...", flush=True)
            jobs[name] = _run_job(name, config, [*overrides, f"ppo.advantage_estimator={name}",
                                                 f"ppo.samples_per_prompt={samples_per_prompt}"],
                                  1, iterations, tmp, timeout)
    first = next(iter(jobs.values()))["rows"][0]
    print(f"\n[bench] rlhf bench estimators {config} {' '.join(overrides)}: {iterations} PPO iterations per job "
          f"(the first left out of the means), 1 process, {samples_per_prompt} samples per prompt, response length "
          f"~{first.get('response_length', float('nan')):.1f} tokens; ratios against {estimators[0]}; memory: peak "
          f"RSS and its growth over the process's size before any model was loaded")
    print(estimator_table(jobs))
    return {"jobs": jobs}


def zero_tables(jobs: list[dict], nproc: int) -> str:
    """The printed report of ``bench zero`` (generation: once vs per-layer; memory per rank per stage)."""
    lines = []
    once = next((j for j in jobs if j["stage"] == 3 and j["gather"]), None)
    layer = next((j for j in jobs if j["stage"] == 3 and not j["gather"]), None)
    if once and layer:
        lines += ["", f"PPO generation under ZeRO-3, {nproc} processes (mean over iterations after the first)",
                  f"{'actor parameters':<32} {'s/rollout':>10} {'tokens/s':>10}"]
        for label, j in (("gathered once per rollout", once), ("gathered per layer, per token", layer)):
            lines.append(f"{label:<32} {j['generation_s']:>10.3f} {j['generation_tokens_per_s']:>10.1f}")
        lines.append(f"per-layer / once: {layer['generation_s'] / max(once['generation_s'], 1e-9):.2f}x the time")
    mem = [j for j in jobs if j["gather"]]
    if mem:
        gpu = any(r.get("peak_gpu_mb") is not None for j in mem for r in j["ranks"])
        lines += ["", f"Peak memory per rank (MiB), PPO with {nproc} processes: host RSS"
                  + (" and GPU (max_memory_allocated)" if gpu else ""),
                  f"{'stage':<8} {'rank':>4} {'peak RSS':>10} {'over start':>11}" + (f" {'peak GPU':>10}" if gpu else "")
                  + f" {'model states (rule of thumb)':>30} {'plan states':>12} {'plan peak':>10} {'measured/plan':>14}"]
        for j in mem:
            rule = model_state_mb(j["params"], j["stage"], nproc, j["precision"])
            est = j["plan"]
            for r in j["ranks"]:
                grown = r["peak_rss_mb"] - r["start_rss_mb"]
                measured = r["peak_gpu_mb"] if gpu else grown
                lines.append(f"ZeRO-{j['stage']:<3} {r['rank']:>4} {r['peak_rss_mb']:>10.0f} {grown:>11.0f}"
                             + (f" {r['peak_gpu_mb'] or 0:>10.0f}" if gpu else "") + f" {rule:>30.1f}"
                             f" {est['states']:>12.1f} {est['peak']:>10.1f} {measured / max(est['peak'], 1e-9):>14.2f}")
        lines.append("plan: `rlhf plan`'s estimate for the same config and stage (no offload); measured/plan divides "
                     + ("the GPU peak" if gpu else "the peak RSS over start") + " by the plan's peak")
    return "\n".join(lines)


def bench_zero(config: str, overrides: list[str], iterations: int = 3, nproc: int = 2,
               stages: tuple[int, ...] = (0, 2, 3), timeout: float = 3600, memory_only: bool = False) -> dict:
    jobs = []
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-zero-") as tmp:
        for stage in stages:
            jobs.append(_run_zero_job(config, overrides, stage, True, nproc, iterations, tmp, timeout))
        if 3 in stages and not memory_only:
            jobs.append(_run_zero_job(config, overrides, 3, False, nproc, iterations, tmp, timeout))
    first = jobs[0]["rows"][0] if jobs[0]["rows"] else {}
    print(f"\n[bench] rlhf bench zero {config} {' '.join(overrides)}: {iterations} PPO iterations per job, "
          f"{nproc} processes, response length ~{first.get('response_length', float('nan')):.1f} tokens; "
          f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', MMAP_THRESHOLD)}")
    print(zero_tables(jobs, nproc))
    return {"jobs": jobs}


def _worker(argv: list[str]) -> int:
    """One rank of a ``bench zero`` job: run PPO, then write this rank's memory figures to REPORT.rankN."""
    report, config, *overrides = argv
    from rlhf import engine as E
    from rlhf.stages import ppo

    start = peak_rss_mb()  # after imports (torch, transformers, deepspeed), before any model is loaded
    ppo.run(load_config(PPOStageConfig, config, overrides))
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    with open(f"{report}.rank{E.rank()}", "w") as f:
        json.dump({"rank": E.rank(), "start_rss_mb": start, "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": gpu}, f)
    return 0


def main(args) -> int:
    if args.bench == "estimators":
        names = tuple(n.strip() for n in args.estimators.split(",") if n.strip())
        bench_estimators(args.config, args.overrides, args.iterations, names, args.samples_per_prompt)
        return 0
    if args.bench == "zero":
        stages = tuple(int(s) for s in args.stages.split(",") if s.strip())
        bench_zero(args.config, args.overrides, args.iterations, args.nproc, stages, memory_only=args.memory_only)
        return 0
    bench_ppo(args.config, args.overrides, args.iterations, args.profile)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(_worker(sys.argv[2:]))
    sys.exit("usage: rlhf bench ppo|zero CONFIG ... (python -m rlhf.tools.bench worker is started by 'rlhf bench zero')")
