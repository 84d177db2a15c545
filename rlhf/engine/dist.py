"""Rank/world helpers and process-group set-up. The only place besides ``core`` that touches DeepSpeed.

A single process needs no launcher: :func:`init_env` fills in RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT when no launcher did, so ``rlhf sft cfg.yaml`` works as it is, and so does the same
command under ``torchrun``, ``deepspeed`` or ``accelerate launch``.
"""

from __future__ import annotations

import importlib
import os
import random
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as torch_dist


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_env() -> None:
    """Set the rendezvous variables for a single process when no launcher set them.

    SLURM's ``srun`` without torchrun sets SLURM_PROCID/SLURM_NTASKS: those are mapped too.
    """
    if "WORLD_SIZE" not in os.environ and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    if "WORLD_SIZE" not in os.environ:
        os.environ["RANK"] = "0"
        os.environ["WORLD_SIZE"] = "1"
        os.environ["LOCAL_RANK"] = "0"
        os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if os.environ["WORLD_SIZE"] != "1":
            raise RuntimeError("MASTER_PORT is not set for a multi-process run: launch with torchrun or deepspeed")
        os.environ["MASTER_PORT"] = str(_free_port())


def rank() -> int:
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """print on rank 0 only (flushes, so logs interleave sensibly with progress bars)."""
    if is_main():
        print(*args, **kwargs, flush=True)


_progress_hook: Callable[[int, int, str], None] | None = None


def set_progress_hook(hook: Callable[[int, int, str], None] | None) -> Callable[[int, int, str], None] | None:
    """Install ``hook(done, total, unit)``, called by the running stage as it advances; returns the previous hook.

    ``rlhf pipeline`` installs one to draw a single progress view over all stages (stage, step and time left)
    while the stages' own progress bars are off. Without a hook, ``report_progress`` does nothing.
    """
    global _progress_hook
    previous, _progress_hook = _progress_hook, hook
    return previous


def report_progress(done: int, total: int, unit: str = "step") -> None:
    """The running stage has finished ``done`` of ``total`` units (steps, iterations, eval tasks); rank 0 only."""
    if _progress_hook is not None and is_main():
        _progress_hook(int(done), int(total), unit)


def barrier() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized() and world_size() > 1:
        torch_dist.barrier()


def shutdown() -> None:
    """At the end of a multi-process command: wait for every rank, then destroy the process group while the
    interpreter is still whole. Without it a rank that exits first can abort (SIGABRT, "terminate called without an
    active exception") when Gloo's worker threads still hold work at interpreter teardown (pytorch#190489); seen
    with DPO's ZeRO-3 reference engine. One process keeps its group (tests run stages in-process, one after another)."""
    if torch_dist.is_available() and torch_dist.is_initialized() and world_size() > 1:
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def device() -> torch.device:
    """This rank's device as DeepSpeed's accelerator sees it (cuda:N, xpu:N, npu:N, mps or cpu)."""
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    if acc.device_name() == "cpu":
        return torch.device("cpu")
    return torch.device(acc.device_name(local_rank()))


def on_cpu() -> bool:
    return device().type == "cpu"


def skip_shm_op_when_alone() -> bool:
    """On one process, stop DeepSpeed from compiling its shared-memory all-reduce op; True when it was skipped.

    On a CPU accelerator DeepSpeed's torch backend JIT-compiles a C++ op for shared-memory collectives when it
    starts, whatever the world size: the first run on a machine waits for the compiler (48 s on 2 cores). A
    single process has no peer to share memory with, and without the op DeepSpeed uses torch.distributed's own
    collectives. Multi-process runs keep the op. Called before DeepSpeed's communication backend starts.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        return False
    try:  # the module itself: the attribute deepspeed.comm.torch can be the torch package (a star import)
        ds_torch_comm = importlib.import_module("deepspeed.comm.torch")
    except ImportError:
        return False
    if not hasattr(ds_torch_comm, "build_shm_op"):  # a DeepSpeed version without it: nothing to skip
        return False
    ds_torch_comm.build_shm_op = lambda: None
    return True


def init_distributed() -> None:
    """Set env (single process), then create the process group with the accelerator's backend."""
    init_env()
    if torch_dist.is_initialized():
        return
    skip_shm_op_when_alone()
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    if acc.device_name() != "cpu":
        acc.set_device(local_rank())
    deepspeed.init_distributed(dist_backend=acc.communication_backend_name(), verbose=False)


def all_reduce_mean(metrics: dict[str, float]) -> dict[str, float]:
    """Average a dict of scalars over ranks (one collective); identity on one process."""
    if world_size() == 1 or not torch_dist.is_initialized() or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device())
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_ranks_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (one collective); ``flag`` itself on one process."""
    if world_size() == 1 or not torch_dist.is_initialized():
        return bool(flag)
    t = torch.tensor(float(bool(flag)), device=device())
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MIN)
    return t.item() >= 1


def all_gather_rows(t: torch.Tensor, pad_value: float = 0, pad_left: bool = False) -> torch.Tensor:
    """Every rank's ``t`` (B_r,) or (B_r, W_r), concatenated along dim 0 in rank order; identity on one process.

    Widths may differ between ranks: narrower tensors are padded to the widest with ``pad_value``, on the left
    (``pad_left``: left-padded prompts) or on the right. Row counts may differ too.
    """
    if world_size() == 1 or not torch_dist.is_initialized():
        return t
    dtype = t.dtype
    if dtype == torch.bool:  # not every backend reduces/gathers bool
        t = t.to(torch.uint8)
    shape = torch.tensor([t.shape[0], t.shape[1] if t.dim() > 1 else 0], dtype=torch.long, device=t.device)
    shapes = [torch.zeros_like(shape) for _ in range(world_size())]
    torch_dist.all_gather(shapes, shape)
    rows, width = (int(max(s[i] for s in shapes)) for i in (0, 1))
    if t.dim() > 1 and t.shape[1] < width:
        pad = (width - t.shape[1], 0) if pad_left else (0, width - t.shape[1])
        t = torch.nn.functional.pad(t, pad, value=pad_value)
    if t.shape[0] < rows:
        t = torch.cat([t, t.new_full((rows - t.shape[0], *t.shape[1:]), pad_value)])
    parts = [torch.empty_like(t) for _ in range(world_size())]
    torch_dist.all_gather(parts, t.contiguous())
    out = torch.cat([p[: int(s[0])] for p, s in zip(parts, shapes)])
    return out.to(dtype)


def seed_everything(seed: int) -> int:
    """Seed python, numpy and torch with ``seed + rank`` (N+ detail 9); returns the seed used."""
    import numpy as np

    s = seed + rank()
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s


def warn0(msg: str) -> None:
    if is_main():
        print(f"warning: {msg}", file=sys.stderr, flush=True)
