"""The shared DeepSpeed backend: the only package that imports deepspeed.

Stages call these helpers; they never import deepspeed themselves.
"""

from rlhf.engine.core import (
    BatchPlan,
    deepspeed_config,
    describe_engine,
    find_resume_checkpoint,
    gathered_state_dict,
    list_checkpoints,
    load_checkpoint,
    lr_lambda,
    resolve_batch,
    save_checkpoint,
    save_hf_model,
    unwrap,
    wrap_trainable,
)
from rlhf.engine.dist import (
    all_reduce_mean,
    barrier,
    device,
    init_distributed,
    init_env,
    is_main,
    on_cpu,
    print0,
    rank,
    seed_everything,
    warn0,
    world_size,
)

__all__ = [
    "BatchPlan",
    "all_reduce_mean",
    "barrier",
    "deepspeed_config",
    "describe_engine",
    "device",
    "find_resume_checkpoint",
    "gathered_state_dict",
    "init_distributed",
    "init_env",
    "is_main",
    "list_checkpoints",
    "load_checkpoint",
    "lr_lambda",
    "on_cpu",
    "print0",
    "rank",
    "resolve_batch",
    "save_checkpoint",
    "save_hf_model",
    "seed_everything",
    "unwrap",
    "warn0",
    "world_size",
    "wrap_trainable",
]
