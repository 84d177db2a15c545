"""Stop training at the first non-finite loss, gradient or weight, before that step is saved.

Every trainable stage runs one :class:`NonFiniteGuard`: it sees each micro-batch loss (:meth:`observe_loss`, no
host sync) and, after each optimizer step and before any checkpoint of it is written, :meth:`check` looks at

- the losses of the step's micro-batches;
- the global gradient norm DeepSpeed computed (ZeRO 1-3 skip a step whose gradient is inf/NaN and report the norm
  as inf: in fp32/bf16 that is a broken gradient, not loss-scale overflow; under fp16 dynamic loss scaling such
  skips are normal and are left to the scaler; in fp32 without a ZeRO optimizer it is the norm clipping
  computes, kept by :func:`rlhf.engine.core.record_grad_norm`, and there is none when clipping is off);
- this rank's trainable weights (ZeRO-3: this rank's partition): one float32 sum per tensor, which is non-finite
  when any element is; a non-finite sum is confirmed element-wise before it counts. This catches a non-finite
  gradient that came with a finite loss (e.g. clipped by a NaN norm) and an update that overflowed the weights.

The three flags are agreed over ranks in one all-reduce, so every rank stops at the same step, and the guard
raises :class:`rlhf.errors.TrainingError` naming the step and the last good checkpoint. The stage then writes no
checkpoint of the bad step (so the older good one is not rotated away), no final model and no summary.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from rlhf.engine.dist import device, world_size
from rlhf.errors import TrainingError


def _local_tensors(module: torch.nn.Module) -> Iterable[torch.Tensor]:
    """This rank's values of the trainable parameters (ZeRO-3: the partition; the parameter is a placeholder)."""
    for p in module.parameters():
        if p.requires_grad:
            t = getattr(p, "ds_tensor", None)
            yield (t if t is not None else p).detach()


def _weights_bad(module: torch.nn.Module, dev: torch.device, exact: bool) -> torch.Tensor:
    bad = torch.zeros((), dtype=torch.float32, device=dev)
    for t in _local_tensors(module):
        if t.numel() == 0:
            continue
        if exact:
            flag = (~torch.isfinite(t)).any().float()
        else:
            flag = (~torch.isfinite(t.sum(dtype=torch.float32))).float()
        bad = torch.maximum(bad, flag.to(dev))
    return bad


def _all_max(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t


class NonFiniteGuard:
    """Per-step check for one stage (see the module doc). ``last_checkpoint`` returns the newest complete
    checkpoint directory (or None), for the message; ``fp16`` leaves gradient overflow to the loss scaler."""

    def __init__(self, stage: str, last_checkpoint: Callable[[], str | None], fp16: bool = False):
        self.stage = stage
        self.last_checkpoint = last_checkpoint
        self.fp16 = fp16
        self._loss_bad: torch.Tensor | None = None

    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Record one micro-batch loss (a tensor stays on its device: no sync until :meth:`check`)."""
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss))
        bad = (~torch.isfinite(loss.detach())).any()
        self._loss_bad = bad if self._loss_bad is None else (self._loss_bad | bad.to(self._loss_bad.device))

    def check(self, step: int, module: torch.nn.Module, grad_norm: float | torch.Tensor | None = None) -> None:
        """After optimizer step ``step`` (1-based, as checkpoints count) of ``module``'s trainable weights: raise
        :class:`TrainingError` if the step's loss, gradient or weights are not finite. A collective: every rank
        calls it at every step."""
        dev = device()
        loss_bad = self._loss_bad.float().to(dev) if self._loss_bad is not None else torch.zeros((), device=dev)
        self._loss_bad = None
        if isinstance(grad_norm, torch.Tensor):
            grad_norm = float(grad_norm.item())
        grad_bad = grad_norm is not None and not self.fp16 and not math.isfinite(grad_norm)
        flags = torch.stack([loss_bad, torch.tensor(float(grad_bad), device=dev), _weights_bad(module, dev, False)])
        flags = _all_max(flags)
        if flags[2].item() > 0:  # a float32 sum can overflow on finite weights: confirm element-wise
            flags[2] = _all_max(_weights_bad(module, dev, True))
        loss_bad, grad_bad, weights_bad = (bool(x > 0) for x in flags.tolist())
        if not (loss_bad or grad_bad or weights_bad):
            return
        what = [name for name, on in (("loss", loss_bad), ("gradient", grad_bad), ("weights", weights_bad)) if on]
        detail = " and ".join(what)
        if weights_bad and not (loss_bad or grad_bad):
            detail += " (after the update; the loss was finite)"
        ckpt = self.last_checkpoint()
        kept = (f"The last good checkpoint, {ckpt}, is kept; run.resume=auto continues from it with its own optimizer "
                "state and learning-rate schedule, so a new learning rate needs a new run.output_dir. " if ckpt else
                "No checkpoint had been written yet. ")
        raise TrainingError(
            f"{self.stage}: non-finite {detail} at optimizer step {step}; stopped before saving that step (no final "
            f"model, no summary.json). {kept}Lower train.learning_rate, set deepspeed.gradient_clipping > 0, or check "
            "the data (rlhf data check FILE)."
        )
