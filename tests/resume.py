"""One helper for "interrupt after the checkpoint of step k, resume, compare with an uninterrupted run", for both
training paths: the engine loop (pretrain, PPO: ``rlhf.engine.save_checkpoint``) and TRL's Trainer (SFT, RM: the
``CheckpointMarker`` that marks a checkpoint complete)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

import rlhf.engine as E
import rlhf.engine.hf as H

from .test_stages_pretrain_sft import assert_same_weights


@contextlib.contextmanager
def ctrl_c_after_checkpoint(monkeypatch, step: int) -> Iterator[None]:
    """Within the block, a stage raises KeyboardInterrupt (as Ctrl-C) right after its step-``step`` checkpoint is
    complete, on either training path; on leaving, checkpoints save normally again."""
    real_save, real_on_save = E.save_checkpoint, H.CheckpointMarker.on_save

    def save_then_crash(root, at, *a, **k):
        path = real_save(root, at, *a, **k)
        if at == step:
            raise KeyboardInterrupt(f"simulated Ctrl-C after the step-{step} checkpoint")
        return path

    def mark_then_crash(self, args, state, control, **kw):
        real_on_save(self, args, state, control, **kw)
        if state.global_step == step:
            raise KeyboardInterrupt(f"simulated Ctrl-C after checkpoint-{step}")

    monkeypatch.setattr(E, "save_checkpoint", save_then_crash)
    monkeypatch.setattr(H.CheckpointMarker, "on_save", mark_then_crash)
    try:
        yield
    finally:
        monkeypatch.setattr(E, "save_checkpoint", real_save)
        monkeypatch.setattr(H.CheckpointMarker, "on_save", real_on_save)


def interrupt(run: Callable, cfg, monkeypatch, step: int) -> None:
    """Run ``run(cfg)`` until Ctrl-C right after its step-``step`` checkpoint."""
    with ctrl_c_after_checkpoint(monkeypatch, step), pytest.raises(KeyboardInterrupt):
        run(cfg)


def resume_matches_straight(run: Callable, cfg_for: Callable[[str], object], tmp_path, monkeypatch, step: int,
                            before_resume: Callable[[str], None] | None = None) -> tuple[str, str, dict]:
    """Run ``run(cfg_for(dir))`` straight, then again interrupted after checkpoint ``step`` and resumed (after
    ``before_resume(dir)``, e.g. to plant a half-written checkpoint); assert both end with identical weights.
    Returns (the straight run's dir, the resumed run's dir, the resumed run's result)."""
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    run(cfg_for(straight))
    interrupt(run, cfg_for(resumed), monkeypatch, step)
    if before_resume is not None:
        before_resume(resumed)
    result = run(cfg_for(resumed))
    assert_same_weights(straight, resumed)
    return straight, resumed, result
