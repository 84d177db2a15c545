"""The one start-up the TRL-Trainer stages (SFT, reward model, DPO) share, around their own trainer:

``begin`` finds the checkpoint to resume from (``run.resume``), announces the run, saves the resolved config and
opens the metrics log at the resumed step; ``callbacks`` are the checkpoint marker, the metrics log and the
progress line; ``arm`` restores the exact data order and RNG of a resumed run and installs the non-finite guard.
The final save is ``rlhf.engine.hf.save_final_model`` for all three."""

from __future__ import annotations

from rlhf.engine.hf import (
    CheckpointMarker,
    MetricsCallback,
    ProgressCallback,
    exact_resume,
    find_hf_checkpoint,
    hf_checkpoint_step,
    install_nonfinite_guard,
)
from rlhf.outputs import MetricsLog, announce, checkpoints_dir, save_config


def begin(stage: str, cfg, derived: dict) -> tuple[str | None, MetricsLog]:
    """-> (checkpoint to resume from or None, the metrics log)."""
    out = cfg.run.output_dir
    resume_from = find_hf_checkpoint(cfg.run.resume, checkpoints_dir(out))
    announce(stage, out, resume_from)
    save_config(out, cfg, derived)
    return resume_from, MetricsLog(out, (), resume_step=hf_checkpoint_step(resume_from) if resume_from else 0)


def callbacks(log: MetricsLog) -> list:
    return [CheckpointMarker(), MetricsCallback(log), ProgressCallback()]


def arm(trainer, stage: str, resume_from: str | None) -> None:
    exact_resume(trainer, resume_from)
    install_nonfinite_guard(trainer, stage)


__all__ = ["arm", "begin", "callbacks"]
