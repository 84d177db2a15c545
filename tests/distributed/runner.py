"""Start real rlhf jobs (1 or 2 processes on CPU) and compare what they wrote.

Every job is a subprocess: ``launch/single.sh`` for one process, and for two ``python -m torch.distributed.run
--nproc_per_node 2 -m rlhf.cli ...`` or one of the launch/ recipes (multi_gpu.sh with torchrun or the DeepSpeed
launcher, accelerate.sh), each with a free rendezvous port, one thread per process and a timeout after which the
whole process group is killed.

The tiny settings of every stage live here so the single-process references (tests/distributed/conftest.py) and
the multi-process runs use exactly the same arguments.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tolerance of "the same final weights" (fp32, 2 processes against 1, same global batch and seed): the largest
# difference of any weight (ATOL) and the mean difference over all weights (MEAN_ATOL). Measured (docs/scaling.md):
# max 6e-8 .. 1.1e-5, mean 1e-10 .. 2e-8 -- a handful of elements with near-zero gradients, where Adam's
# g / (sqrt(v) + eps) magnifies summation-order noise, carry the max. Training moves the mean weight by ~1e-4 or
# more, and a run that saw other batches would differ by that much everywhere: the tests also check that the
# mean movement is at least 100 x MEAN_ATOL, so the comparison is not vacuous.
ATOL = 1e-4
MEAN_ATOL = 1e-7

# variables a launcher sets; the pytest process may hold its own (in-process stages), which must not leak
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
              "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and not k.startswith("ACCELERATE_")}
    # one thread per process: two processes share the 2 cores (and single-process references match them)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHON=sys.executable)
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run ``cmd`` from the repository root; return its output, or fail the test with the output's tail."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every worker it started
        out, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}\n{out[-6000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"exit code {proc.returncode}: {' '.join(cmd)}\n{out[-6000:]}")
    return out


def run_stage(stage: str, config: str, overrides: list[str], nproc: int = 2, launcher: str = "torchrun",
              timeout: float = 600) -> str:
    """``rlhf STAGE CONFIG overrides`` with ``nproc`` processes, started by ``launcher``:

    single (launch/single.sh, one process), torchrun (python -m torch.distributed.run), multi_gpu
    (launch/multi_gpu.sh with torchrun), deepspeed (launch/multi_gpu.sh with the DeepSpeed launcher) or
    accelerate (launch/accelerate.sh with ZeRO-3); two_nodes: two "nodes" of nproc / 2 processes on this machine
    (:func:`run_two_nodes`).
    """
    port = str(free_port())
    args = [stage, config, *overrides]
    if launcher == "single":
        assert nproc == 1
        return run(["bash", "launch/single.sh", *args], timeout=timeout)
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", port, "-m", "rlhf.cli", *args]
        return run(cmd, timeout=timeout)
    if launcher in ("multi_gpu", "deepspeed"):
        env = job_env(NPROC=str(nproc), MASTER_PORT=port, LAUNCHER="deepspeed" if launcher == "deepspeed" else "torchrun")
        return run(["bash", "launch/multi_gpu.sh", *args], env=env, timeout=timeout)
    if launcher == "two_nodes":  # launch/multi_node.sh without ssh, once per node, both on 127.0.0.1
        return run_two_nodes(args, port, timeout)
    if launcher == "accelerate":
        return run(["bash", "launch/accelerate.sh", *args], env=job_env(ZERO="3", NPROC=str(nproc), MASTER_PORT=port),
                   timeout=timeout)
    raise ValueError(f"unknown launcher {launcher!r}")


def run_two_nodes(args: list[str], port: str, timeout: float) -> str:
    """Two nodes on one machine: ``launch/multi_node.sh`` started twice (``NODE_RANK`` 0 and 1: the DeepSpeed
    launcher's no-ssh mode) with a two-line hostfile of one slot each, meeting on 127.0.0.1. Returns node 0's output
    followed by node 1's; fails with both tails if either exits non-zero or the pair outlives ``timeout``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        hostfile = os.path.join(tmp, "hostfile")
        with open(hostfile, "w") as f:
            f.write("node0 slots=1\nnode1 slots=1\n")
        procs = []
        for rank in (0, 1):
            env = job_env(NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            procs.append(subprocess.Popen(["bash", "launch/multi_node.sh", hostfile, *args], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          start_new_session=True))
        outs = []
        try:
            for p in procs:
                outs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            outs = [p.communicate()[0] for p in procs]
            raise AssertionError(f"two nodes timed out after {timeout:.0f} s\n" + "\n".join(o[-3000:] for o in outs)) from None
        if any(p.returncode for p in procs):
            raise AssertionError(f"exit codes {[p.returncode for p in procs]}\n" + "\n".join(o[-3000:] for o in outs))
        return "\n".join(outs)


# ---- tiny settings of every stage (micro Llama: hidden 64, 2 layers; a few steps; short sequences) ---------


def pretrain_args(out: str, model_config: str) -> list[str]:
    return [f"run.output_dir={out}", f"model.from_config={model_config}", "run.progress=false", "run.resume=never",
            "data.train_files=[data/pretrain/passages.txt]", "data.eval_file=", "data.block_size=64",
            "deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=4", "train.max_steps=4",
            "train.warmup_steps=1", "run.logging_steps=1", "run.save_steps=2", "run.save_total_limit=2"]


def sft_args(out: str, base: str) -> list[str]:
    return [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", "run.resume=never",
            "data.eval_fraction=0.1", "deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=4",
            "train.max_steps=3", "train.warmup_steps=1", "train.learning_rate=1e-3", "run.save_steps=1000"]


def rm_args(out: str, base: str, test_pairs: str) -> list[str]:
    return [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", "run.resume=never",
            f"data.test_file={test_pairs}", f"data.normalize_reference_file={test_pairs}",
            "deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=4", "train.max_steps=3",
            "train.warmup_steps=1", "train.learning_rate=1e-3", "run.save_steps=1000"]


def dpo_args(out: str, sft: str, test_pairs: str) -> list[str]:
    # full fine-tuning: under ZeRO-3 the frozen reference copy is partitioned too (TRL's prepare_deepspeed)
    return [f"run.output_dir={out}", f"model.name_or_path={sft}", "run.progress=false", "run.resume=never",
            f"data.test_file={test_pairs}", "data.max_train_pairs=24", "deepspeed.global_batch_size=8",
            "deepspeed.micro_batch_size=4", "train.max_steps=3", "train.warmup_steps=1", "train.learning_rate=1e-3",
            "run.logging_steps=1", "run.save_steps=1000"]


def ppo_args(out: str, sft: str, rm: str, ptx_eval: str) -> list[str]:
    # greedy generation: the rollout does not depend on how prompts are spread over ranks (docs/scaling.md);
    # micro batch 2 in both runs (1 process: accumulation 2; 2 processes: 1), so every loss averages the same rows
    return [f"run.output_dir={out}", f"model.name_or_path={sft}", f"reward.model={rm}", "critic.model=",
            "run.progress=false", "run.resume=never", "generation.do_sample=false", "generation.max_new_tokens=8",
            "ppo.iterations=2", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=4", "deepspeed.micro_batch_size=2",
            "ppo.ppo_epochs=2", "ppo.ptx_coef=0.2", "ppo.ptx_batch_size=2", "data.ptx_files=[data/pretrain/passages.txt]",
            f"data.ptx_eval_file={ptx_eval}", "data.heldout_prompt_file=", "train.learning_rate=1e-3",
            "critic.learning_rate=1e-3", "ppo.sample_every=1000", "run.save_steps=1"]


# ---- comparing outputs -------------------------------------------------------------------------------------


def weights(out_dir: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(out_dir, "model.safetensors"))


def _untie(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF's own ZeRO-3 save also writes a tied lm_head (equal to the embedding): compare it once, as the embedding."""
    head, emb = w.get("lm_head.weight"), w.get("model.embed_tokens.weight")
    if head is not None and emb is not None and head.shape == emb.shape and torch.equal(head, emb):
        return {k: v for k, v in w.items() if k != "lm_head.weight"}
    return w


def max_weight_diff(a_dir: str, b_dir: str) -> tuple[float, float, str]:
    """(max |a - b|, mean |a - b| over every weight, the tensor holding the max) of two saved models."""
    a, b = _untie(weights(a_dir)), _untie(weights(b_dir))
    assert a.keys() == b.keys(), f"different tensors: {sorted(set(a) ^ set(b))}"
    diffs = {k: (a[k].float() - b[k].float()).abs() for k in a}
    key = max(diffs, key=lambda k: diffs[k].max().item())
    mean = sum(d.sum().item() for d in diffs.values()) / sum(d.numel() for d in diffs.values())
    return diffs[key].max().item(), mean, key


def mean_movement(final_dir: str, start_dir: str) -> float:
    """How far training moved the weights: mean |final - start| over the tensors both models have."""
    a, b = _untie(weights(final_dir)), _untie(weights(start_dir))
    keys = a.keys() & b.keys()
    return sum((a[k].float() - b[k].float()).abs().sum().item() for k in keys) / sum(a[k].numel() for k in keys)


def stage_args(stage: str, out: str, models: dict, micro_model_config: str, data: dict) -> list[str]:
    """The overrides of one stage's job writing to ``out``: ``models`` holds the reference models it starts from
    (``pretrain``, ``sft``, ``rm``), ``data`` the shared pairs and text files."""
    return {
        "pretrain": lambda: pretrain_args(out, micro_model_config),
        "sft": lambda: sft_args(out, models["pretrain"]),
        "rm": lambda: rm_args(out, models["pretrain"], data["pairs"]),
        "dpo": lambda: dpo_args(out, models["sft"], data["pairs"]),
        "ppo": lambda: ppo_args(out, models["sft"], models["rm"], data["text"]),
    }[stage]()
