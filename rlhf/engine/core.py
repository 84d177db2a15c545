"""The shared DeepSpeed backend: config dict, engines, checkpoints, consolidated HF saves.

Every stage gets its DeepSpeed settings from :func:`deepspeed_config`, built from the ``deepspeed:``
config section; TRL-based stages (SFT, RM) hand the dict to the HF Trainer, the stages with their own loop
(pretrain, PPO) wrap their trainable models with :func:`wrap_trainable`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rlhf.config import DeepSpeedConfig, TrainConfig
from rlhf.engine.dist import barrier, is_main, print0, rank, warn0, world_size


@dataclass(frozen=True)
class BatchPlan:
    """Derived batch sizes: global = micro x accumulation x world."""

    global_batch: int
    micro_batch: int
    grad_accum: int
    world_size: int
    lr_scale: float

    def describe(self, with_lr_scale: bool = True) -> str:
        return (
            f"global batch {self.global_batch} = micro {self.micro_batch} x accumulation {self.grad_accum}"
            f" x world {self.world_size}"
            + (f"; learning rate x {self.lr_scale:.3g}" if with_lr_scale and self.lr_scale != 1 else "")
        )


def resolve_batch(ds: DeepSpeedConfig, world: int | None = None, global_batch: int | None = None) -> BatchPlan:
    """Compute micro batch and accumulation for this world size.

    lr_scaling 'none': the global batch stays ``global_batch_size`` and accumulation adapts (the micro batch
    shrinks when one rank's share is smaller than it). 'linear'/'sqrt': the global batch grows with
    world / reference_world_size and the learning rate is scaled by that factor or its square root
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD"; pair it with warm-up).
    """
    world = world or world_size()
    base = global_batch if global_batch is not None else ds.global_batch_size
    lr_scale = 1.0
    if ds.lr_scaling != "none":
        factor = world / ds.reference_world_size
        base = max(1, round(base * factor))
        lr_scale = factor if ds.lr_scaling == "linear" else math.sqrt(factor)
    if base % world:
        raise ValueError(
            f"deepspeed.global_batch_size: {base} sequences cannot be split evenly over {world} processes"
        )
    per_rank = base // world
    micro = min(ds.micro_batch_size, per_rank)
    while per_rank % micro:
        micro -= 1
    plan = BatchPlan(base, micro, per_rank // micro, world, lr_scale)
    assert plan.global_batch == plan.micro_batch * plan.grad_accum * plan.world_size
    return plan


def zero_buckets(model: torch.nn.Module | None, zero_stage: int) -> dict:
    """ZeRO communication bucket sizes from the model's hidden size h, as transformers' "auto" values:
    reduce/all-gather buckets h^2 elements, ZeRO-3 prefetch 0.9 h^2, parameters under 10 h stay unpartitioned.
    DeepSpeed's defaults (5e8-element buckets) are sized for billions of parameters and cost small models memory."""
    h = getattr(getattr(model, "config", None), "hidden_size", None)
    if not h or zero_stage == 0:
        return {}
    out = {"reduce_bucket_size": h * h, "allgather_bucket_size": h * h}
    if zero_stage == 3:
        out.update(stage3_prefetch_bucket_size=int(0.9 * h * h), stage3_param_persistence_threshold=10 * h)
    return out


def deepspeed_config(ds: DeepSpeedConfig, plan: BatchPlan, train: TrainConfig | None = None,
                     model: torch.nn.Module | None = None) -> dict:
    """The DeepSpeed config dict for the ``deepspeed:`` section (shared by every stage); ``model`` sizes the
    ZeRO buckets (:func:`zero_buckets`)."""
    zero: dict = {"stage": ds.zero_stage, **zero_buckets(model, ds.zero_stage)}
    if ds.zero_stage >= 1:
        zero.update(overlap_comm=False, contiguous_gradients=True)
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if ds.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if ds.zero_stage == 3:
        # consolidate full weights on rank 0 when saving (HF Trainer and our own saves)
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg: dict = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
        # always written: DeepSpeed's default for a missing key is 1.0, so leaving 0 ("off") out clipped at 1.0
        "gradient_clipping": ds.gradient_clipping,
    }
    if ds.offload_optimizer and train is not None:
        # Offloaded optimizer state needs DeepSpeed's CPU Adam: DeepSpeed builds it from this section.
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": train.learning_rate * plan.lr_scale,
                "betas": [train.adam_beta1, train.adam_beta2],
                "eps": train.adam_eps,
                "weight_decay": train.weight_decay,
            },
        }
    return cfg


_ACCELERATE_DS_ENV = (
    "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
    "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH",
    "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL",
    "ACCELERATE_DEEPSPEED_ZERO3_INIT", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "ACCELERATE_GRADIENT_CLIPPING",
    "ACCELERATE_MIXED_PRECISION", "ACCELERATE_CONFIG_DS_FIELDS",
)


def adopt_accelerate_launch(ds: DeepSpeedConfig) -> None:
    """Under ``accelerate launch`` with a DeepSpeed accelerate config: check that it agrees with the
    ``deepspeed:`` section, then drop its DeepSpeed environment so the section's dict is the only one in force.

    The section is the only place scaling is configured; the accelerate file (configs/accelerate/zero{2,3}.yaml)
    only chooses the launcher. A disagreement (e.g. an accelerate ZeRO-3 file with ``deepspeed.zero_stage: 2``)
    is an error rather than a silent choice of one of them.
    """
    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return
    checks = [
        ("zero_stage", env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"), str(ds.zero_stage)),
        ("offload_optimizer", env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"),
         "cpu" if ds.offload_optimizer else "none"),
        ("offload_param", env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"), "cpu" if ds.offload_param else "none"),
        ("precision", env.get("ACCELERATE_MIXED_PRECISION"), {"fp32": "no"}.get(ds.precision, ds.precision)),
    ]
    for key, launcher, ours in checks:
        if launcher not in (None, "", "None") and launcher.lower() != ours:
            raise ValueError(
                f"deepspeed.{key}: the accelerate config says {launcher!r} but the deepspeed: section says {ours!r}; "
                "the deepspeed: section is the only place scaling is configured (launch/accelerate.sh passes "
                "deepspeed.zero_stage to match its file)"
            )
    for name in _ACCELERATE_DS_ENV:
        env.pop(name, None)


def lr_lambda(train: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at optimizer step ``step`` (warm-up, then the schedule)."""

    def f(step: int) -> float:
        if train.warmup_steps and step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        if train.lr_scheduler == "constant":
            return 1.0
        span = max(1, total_steps - train.warmup_steps)
        progress = min(1.0, (step - train.warmup_steps) / span)
        if train.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        floor = train.min_lr_ratio
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def wrap_trainable(model: torch.nn.Module, ds_cfg: dict, train: TrainConfig, total_steps: int, plan: BatchPlan):
    """``deepspeed.initialize`` a trainable model with AdamW and the configured LR schedule."""
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    lr = train.learning_rate * plan.lr_scale
    schedule = lr_lambda(train, total_steps)

    def make_scheduler(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    # weight decay on matrices only (not on norms and biases), with either optimizer
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if "optimizer" in ds_cfg:  # offloaded optimizer state: DeepSpeed's CPU AdamW, built from the config's section
        engine, *_ = deepspeed.initialize(
            model=model, model_parameters=[g for g in groups if g["params"]], config=ds_cfg,
            lr_scheduler=make_scheduler,
        )
    else:
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=lr, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_eps,
            fused=True if train.fused_adam else None,
        )
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_cfg, lr_scheduler=make_scheduler
        )
    skip_single_process_reduction(engine)
    record_grad_norm(engine)
    # engine.step() steps the scheduler at accumulation boundaries; checkpoints save it
    return engine


def record_grad_norm(engine) -> bool:
    """Make ``engine.get_global_grad_norm()`` report the gradient norm in fp32 without a ZeRO optimizer too.

    There DeepSpeed clips with ``clip_fp32_gradients``, which computes the global norm and discards it, so
    ``get_global_grad_norm()`` stays None (the bf16, fp16 and ZeRO optimizers keep theirs). This computes the same
    norm with the same function and arguments, keeps it, and clips exactly as before; without clipping
    (``deepspeed.gradient_clipping`` 0) no norm is computed and None remains. The non-finite guard and the
    Trainer's ``grad_norm`` log read it. Returns whether the engine needed it."""
    from deepspeed.runtime.utils import clip_grad_norm_

    if hasattr(engine.optimizer, "_global_grad_norm") or not hasattr(engine, "clip_fp32_gradients"):
        return False

    def clip_and_record():
        engine._global_grad_norm = clip_grad_norm_(
            parameters=engine.module.parameters(), max_norm=engine.gradient_clipping(), mpu=engine.mpu)

    engine.clip_fp32_gradients = clip_and_record
    return True


def skip_single_process_reduction(engine) -> bool:
    """In one process there is nothing to all-reduce, yet a DeepSpeed engine without a ZeRO optimizer (ZeRO-0 in
    fp32) flattens every gradient after each backward, scales it by 1 / world size = 1, "reduces" it over one
    rank and copies it back. Turning that off leaves every gradient bit-identical (tested) and saves the copies.
    ZeRO-1/2/3 and bf16/fp16 optimizers keep their own reduction paths. Returns whether it was turned off."""
    from deepspeed.runtime.base_optimizer import ZeROOptimizer

    if world_size() == 1 and not isinstance(engine.optimizer, ZeROOptimizer):
        engine.enable_backward_allreduce = False
        return True
    return False


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def wrap_frozen(model: torch.nn.Module, ds: DeepSpeedConfig, plan: BatchPlan, device: torch.device):
    """A frozen model for inference (reference, reward): ZeRO-3 partitioned when zero_stage is 3, so it is not
    replicated on every rank (parameters offloaded to CPU with offload_param); plain on the device otherwise."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if ds.zero_stage != 3:
        return model.to(device)
    import deepspeed

    cfg = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "zero_optimization": {"stage": 3, **zero_buckets(model, 3), "stage3_param_persistence_threshold": 0},
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},
        "steps_per_print": 10**12,
    }
    if ds.offload_param:
        cfg["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    engine, *_ = deepspeed.initialize(model=model, config=cfg)
    engine.eval()
    return engine


def is_zero3(engine_or_model) -> bool:
    return bool(getattr(engine_or_model, "zero_optimization_partition_weights", lambda: False)())


def _zero3_offload(engine):
    """The object that owns a ZeRO-3 engine's partitioning hooks (trainable: optimizer.parameter_offload;
    frozen, inference-only: the DeepSpeedZeRoOffload itself)."""
    opt = getattr(engine, "optimizer", None)
    if opt is None:
        raise RuntimeError("a ZeRO-3 engine without its parameter-offload object: cannot gather for generation")
    return getattr(opt, "parameter_offload", opt)


# Part of the free memory kept back when deciding whether a full copy of the actor fits for generation: the
# decoding itself needs room too (KV cache, logits).
GATHER_HEADROOM = 0.25
_fallback_warned = False


def _memory_device() -> str:
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "host RAM"


def free_memory_bytes() -> int:
    """Free memory where gathered parameters land: the current CUDA device, else host RAM (MemAvailable)."""
    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def full_copy_fits(params: list[torch.nn.Parameter]) -> tuple[bool, int, int]:
    """Whether every rank has room for the full (gathered) ``params``: (fits on all ranks, bytes this rank needs,
    the smallest free memory over ranks). One collective, so all ranks take the same decision."""
    # parameters still partitioned (ZeRO-3 keeps small ones whole, below its persistence threshold)
    need = sum(_full_numel(p) * p.element_size() for p in params if _full_numel(p) != p.numel())
    free = torch.tensor([free_memory_bytes()], dtype=torch.float64)
    if world_size() > 1 and torch.distributed.is_initialized():
        from rlhf.engine.dist import device

        free = free.to(device())
        torch.distributed.all_reduce(free, op=torch.distributed.ReduceOp.MIN)
    free_b = int(free.item())
    return need <= (1 - GATHER_HEADROOM) * free_b, need, free_b


def _full_numel(p: torch.nn.Parameter) -> int:
    return int(getattr(p, "ds_numel", p.numel()))


@contextlib.contextmanager
def gathered_for_generation(engine_or_model, enabled: bool = True):
    """Context for generating with a (possibly ZeRO-3) model; yields ``synced_gpus`` for ``model.generate``.

    ZeRO-3 with ``enabled``: every parameter is all-gathered once for the whole rollout and the engine's
    partitioning hooks are taken off meanwhile (otherwise the first layer's post-forward hook re-partitions the
    gathered weights and every decoding step gathers them again, layer by layer); the hooks are put back on exit.
    Generation is then local, so ranks may stop at different lengths: yields False. When the full copy would not
    fit in the free memory of some rank (less ``GATHER_HEADROOM``; decided together, see ``full_copy_fits``), a
    warning says so with the numbers and generation falls back to per-layer gathering, as below.
    ZeRO-3 without ``enabled``: parameters are gathered layer by layer at every decoding step (less memory, a
    collective per layer and token), so every rank must run the same number of steps: yields True when there
    is more than one process (``generate(synced_gpus=True)``). Other stages: a no-op that yields False.
    """
    if not is_zero3(engine_or_model):
        yield False
        return
    if not enabled:
        yield world_size() > 1
        return
    import deepspeed

    params = list(unwrap(engine_or_model).parameters())
    fits, need, free = full_copy_fits(params)
    if not fits:
        global _fallback_warned
        if not _fallback_warned:
            warn0(f"ZeRO-3: gathering the actor for generation needs {need / 2**30:.2f} GiB but a rank has "
                  f"{free / 2**30:.2f} GiB free on {_memory_device()} (with {GATHER_HEADROOM:.0%} kept in reserve); "
                  "generating with the parameters gathered layer by layer at every token instead (slower, no full "
                  "copy). Set ppo.gather_for_generation=false to choose this and silence the message.")
            _fallback_warned = True
        yield world_size() > 1
        return
    offload = _zero3_offload(engine_or_model)
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        for p in params:
            p.ds_active_sub_modules.clear()
        for hook in [*offload.forward_hooks, *offload.backward_hooks]:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield False
        finally:
            offload._register_deepspeed_module(offload.module)  # re-registers hooks, invalidates the trace


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: checkpoints/step-N, written to tmp-step-N and renamed when every rank has finished
# ----------------------------------------------------------------------------------------------------------

CKPT_PREFIX = "step-"


def list_checkpoints(ckpt_root: str) -> list[str]:
    """Complete checkpoints under ``ckpt_root``, oldest first."""
    if not os.path.isdir(ckpt_root):
        return []
    found = []
    for name in os.listdir(ckpt_root):
        path = os.path.join(ckpt_root, name)
        if name.startswith(CKPT_PREFIX) and name[len(CKPT_PREFIX) :].isdigit():
            if os.path.exists(os.path.join(path, "state.json")):
                found.append((int(name[len(CKPT_PREFIX) :]), path))
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(resume: str, ckpt_root: str) -> str | None:
    """Resolve ``run.resume`` to a checkpoint directory (or None to start fresh)."""
    if resume == "never":
        return None
    if resume == "auto":
        found = list_checkpoints(ckpt_root)
        return found[-1] if found else None
    if not os.path.exists(os.path.join(resume, "state.json")):
        raise FileNotFoundError(f"run.resume: {resume} is not a complete checkpoint (no state.json)")
    return resume


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_to_files(state: dict, path: str) -> None:
    from safetensors.torch import save_file

    tensors = {"torch": state["torch"]}
    for i, s in enumerate(state["cuda"]):
        tensors[f"cuda.{i}"] = s
    save_file(tensors, path + ".safetensors")
    py = state["python"]
    npy = state["numpy"]
    with open(path + ".json", "w") as f:
        json.dump({"python": [py[0], list(py[1]), py[2]], "numpy": [npy[0], npy[1].tolist(), *npy[2:]]}, f)


def _rng_from_files(path: str) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(path + ".safetensors")
    with open(path + ".json") as f:
        js = json.load(f)
    py = js["python"]
    npy = js["numpy"]
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    return {
        "python": (py[0], tuple(py[1]), py[2]),
        "numpy": (npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]),
        "torch": tensors["torch"],
        "cuda": cuda,
    }


def save_checkpoint(
    ckpt_root: str, step: int, engines: dict, state: dict, keep: int, tensors: dict | None = None
) -> str:
    """Write a resumable checkpoint of ``engines`` (name -> DeepSpeedEngine) and ``state`` (JSON-able).

    Written to ``tmp-step-N`` by every rank and renamed to ``step-N`` by rank 0 once all ranks are done, so a
    crash mid-write never leaves a checkpoint that looks complete. Keeps the newest ``keep`` checkpoints.
    ``tensors`` (name -> {key: tensor}, rank 0's) are saved as ``name.safetensors`` (e.g. an EMA of weights).
    """
    final = os.path.join(ckpt_root, f"{CKPT_PREFIX}{step}")
    tmp = os.path.join(ckpt_root, f"tmp-{CKPT_PREFIX}{step}")
    if is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    barrier()
    for name, eng in engines.items():
        eng.save_checkpoint(tmp, tag=name, save_latest=False)
    _rng_to_files(rng_state(), os.path.join(tmp, f"rng_rank{rank()}"))
    barrier()
    if is_main():
        from safetensors.torch import save_file

        for name, td in (tensors or {}).items():
            save_file({k: v.contiguous() for k, v in td.items()}, os.path.join(tmp, f"{name}.safetensors"))
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({"step": step, "world_size": world_size(), **state}, f, indent=1)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(ckpt_root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: str, engines: dict) -> dict:
    """Restore ``engines`` (model, optimizer, scheduler) and this rank's RNG; return the saved state dict.

    Every file is read as data (weights_only, :mod:`rlhf.engine.safeload`); a file that would run code is a
    :class:`rlhf.errors.CheckpointError` naming it."""
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    if state.get("world_size") != world_size():
        raise RuntimeError(
            f"{path} was written by {state.get('world_size')} processes; resume it with the same number "
            f"(this run has {world_size()})"
        )
    from rlhf.engine.safeload import safe_loading

    for name, eng in engines.items():
        with safe_loading():  # DeepSpeed unpickles its files in full: weights only (rlhf.engine.safeload)
            load_path, _ = eng.load_checkpoint(path, tag=name, load_optimizer_states=True,
                                               load_lr_scheduler_states=True)
        if load_path is None:
            raise RuntimeError(f"{path}: no checkpoint for '{name}'")
    rng_file = os.path.join(path, f"rng_rank{rank()}")
    if os.path.exists(rng_file + ".json"):
        set_rng_state(_rng_from_files(rng_file))
    return state


def load_checkpoint_tensors(path: str, name: str) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    f = os.path.join(path, f"{name}.safetensors")
    return load_file(f) if os.path.exists(f) else None


def gathered_state_dict(engine_or_model) -> dict[str, torch.Tensor] | None:
    """Full (consolidated) state dict on rank 0, None elsewhere; gathers ZeRO-3 partitions."""
    module = unwrap(engine_or_model)
    zero3 = getattr(engine_or_model, "zero_optimization_partition_weights", lambda: False)()
    if zero3 or any(hasattr(p, "ds_id") for p in module.parameters()):
        import deepspeed

        # ZeRO-3 may still be prefetching parameters for a forward that will not come (e.g. after a held-out
        # forward whose module order differs from the traced training step's); gathering a parameter in flight
        # fails ("Cannot partition a param in flight"), so wait for and release them first
        release = getattr(engine_or_model, "empty_partition_cache", None)
        if zero3 and release is not None:
            release()
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if not is_main():
                return None
            copies: dict[tuple, torch.Tensor] = {}  # one copy per storage: tied weights stay tied (one saved key)
            return {
                k: copies.setdefault((v.data_ptr(), tuple(v.shape)), v.detach().cpu().clone())
                for k, v in module.state_dict().items()
            }
    return {k: v.detach().cpu() for k, v in module.state_dict().items()} if is_main() else None


def save_hf_model(
    engine_or_model, tokenizer, out_dir: str, extra_files: dict[str, str] | None = None, single_process: bool = False
) -> None:
    """Save a plain Hugging Face model (safetensors) + tokenizer into ``out_dir`` on rank 0, atomically.

    Works under every ZeRO stage: parameters are gathered first (a collective: every rank calls it, unless
    ``single_process`` says only this rank saves a plain, unpartitioned model). Files land in
    ``out_dir/.tmp-model`` and are moved into place one by one with ``os.replace``.
    """
    module = unwrap(engine_or_model)
    sd = gathered_state_dict(engine_or_model) if not single_process else module.state_dict()
    if is_main() or single_process:
        os.makedirs(out_dir, exist_ok=True)
        tmp = os.path.join(out_dir, ".tmp-model")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        module.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
        os.rmdir(tmp)
    if not single_process:
        barrier()


def describe_engine(ds: DeepSpeedConfig, plan: BatchPlan, train: TrainConfig | None = None) -> str:
    """The resolved scaling numbers in one line (every stage prints it): ZeRO stage, precision, offload, batch
    arithmetic and, given ``train``, the peak learning rate after ``deepspeed.lr_scaling``."""
    off = [n for n, on in (("optimizer", ds.offload_optimizer), ("params", ds.offload_param)) if on]
    text = (
        f"DeepSpeed ZeRO-{ds.zero_stage}, {ds.precision}"
        + (", dynamic loss scaling" if ds.precision == "fp16" else "")
        + (f", gradient clipping {ds.gradient_clipping:g}" if ds.gradient_clipping > 0 else "")
        + (f", offload {'+'.join(off)} to cpu" if off else "")
        + f", {plan.describe(with_lr_scale=train is None)}"
    )
    if train is not None:
        lr = train.learning_rate * plan.lr_scale
        if ds.lr_scaling == "none":
            text += f", learning rate {lr:.3g}"
        else:
            text += (f", learning rate {lr:.3g} = {train.learning_rate:.3g} x {plan.lr_scale:.3g} ({ds.lr_scaling} in "
                     f"world {plan.world_size} / {ds.reference_world_size}; warm-up {train.warmup_steps} steps)")
    return text


__all__ = [
    "BatchPlan",
    "adopt_accelerate_launch",
    "deepspeed_config",
    "describe_engine",
    "find_resume_checkpoint",
    "gathered_state_dict",
    "list_checkpoints",
    "load_checkpoint",
    "lr_lambda",
    "print0",
    "resolve_batch",
    "save_checkpoint",
    "save_hf_model",
    "unwrap",
    "wrap_frozen",
    "wrap_trainable",
    "is_zero3",
    "gathered_for_generation",
    "load_checkpoint_tensors",
    "zero_buckets",
]
