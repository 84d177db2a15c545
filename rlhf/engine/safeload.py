"""Resuming reads checkpoint files as data, never as code.

DeepSpeed's checkpoint engine reads every ``.pt`` file of a checkpoint (model states, optimizer states, ZeRO
shards) with ``torch.load(weights_only=False)``, a full unpickle: a crafted file runs whatever its pickle says.
DeepSpeed has no setting for this, and the HF Trainer resumes SFT and RM through the same engine. While
:func:`safe_loading` is active every ``torch.load`` call, whatever its caller asked for, is a
``weights_only=True`` load (tensors, containers, numbers, strings, dtypes) that also accepts the few DeepSpeed
classes in :func:`allowed_globals`; a file that needs anything else is refused with a
:class:`rlhf.errors.CheckpointError` naming it, before any of its code can run.

Our own engine loop (pretrain, PPO) wraps :func:`rlhf.engine.load_checkpoint` in it; the Trainer-based stages
wrap ``trainer.train(resume_from_checkpoint=...)`` (the Trainer restores its RNG state mid-epoch, inside the
training loop) through :func:`rlhf.engine.hf.train_resuming`. Our own RNG files and ``state.json`` are
safetensors and JSON.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re

import torch

from rlhf.errors import CheckpointError


def allowed_globals() -> list:
    """The only non-tensor classes a resumable checkpoint may hold (found by saving every ZeRO stage and precision
    and loading each file with ``weights_only=True``). Each is a plain record rebuilt from its fields; none can
    call anything else."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [
        # ZeRO-1/2/3 optimizer states keep the optimizer's loss scaler object (``loss_scaler``): a static
        # LossScaler in fp32/bf16, a DynamicLossScaler (numbers and a torch dtype) in fp16.
        LossScaler,
        DynamicLossScaler,
        # ZeRO-1/2/3 optimizer states record their stage (``zero_stage``) as this int enum.
        ZeroStageEnum,
        # ZeRO-1/2 optimizer states map each parameter to its slice of the flat fp32 partition
        # (``param_slice_mappings``): a dataclass of two ints, numel and start.
        fragment_address,
    ]


def _name(f) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return str(getattr(f, "name", f))


def _refused(f, err: pickle.UnpicklingError) -> CheckpointError:
    m = re.search(r"GLOBAL (\S+) was not an allowed global", str(err)) or re.search(r"module (\S+) is blocked",
                                                                                    str(err))
    what = f"it needs {m.group(1)}, which" if m else "it holds an object that"
    return CheckpointError(
        f"{_name(f)}: refused as unsafe: {what} is not tensor data, and loading it would run code from the file "
        "(checkpoint files load with torch.load(weights_only=True)). Do not resume from a checkpoint you did not "
        "write; delete it, or set run.resume to another checkpoint (or 'never' to start afresh)"
    )


@contextlib.contextmanager
def safe_loading(active: bool | str | None = True):
    """Within the block every ``torch.load`` is ``weights_only=True`` with :func:`allowed_globals` allowed (on top
    of any the caller allows); a refused file raises :class:`CheckpointError` naming it. ``active`` false (e.g. no
    checkpoint to resume): a no-op."""
    if not active:
        yield
        return
    real, real_serialization = torch.load, torch.serialization.load
    allowed = allowed_globals()

    def load(f, map_location=None, pickle_module=None, *, weights_only=None, **kwargs):
        # an explicit pickle_module means a full unpickle: dropped, as weights_only=False is
        with torch.serialization.safe_globals(allowed):
            try:
                return real(f, map_location, weights_only=True, **kwargs)
            except pickle.UnpicklingError as e:
                raise _refused(f, e) from None

    torch.load = torch.serialization.load = load
    try:
        yield
    finally:
        torch.load, torch.serialization.load = real, real_serialization
