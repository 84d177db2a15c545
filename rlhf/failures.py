"""Ctrl-C and a full disk, as the CLI reports them: one ``error:`` line saying what to do, never a traceback.

- Ctrl-C (SIGINT): the line says where the last complete checkpoint is and how to resume, or that there is none
  yet; the exit status is 130 (128 + SIGINT, as a shell reports a process stopped by Ctrl-C). Under ``torchrun``
  every rank gets the signal (and the launcher forwards it once more): only rank 0 prints, and an error a rank
  meets while its peers stop (a broken collective) is part of the same interruption.
- A full disk (ENOSPC, or a quota: EDQUOT) while writing: the line names the file (or the output directory when
  the writer did not say which file, as torch's checkpoint writer does not).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any

INTERRUPTED_EXIT = 130
_interrupted_at: float | None = None


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _on_sigint(signum, frame) -> None:
    global _interrupted_at
    now = time.monotonic()
    if _interrupted_at is not None:
        if now - _interrupted_at < 2.0:
            return  # the same Ctrl-C once more (torchrun forwards it to its workers): let the first one unwind
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a deliberate second Ctrl-C stops as usual
    _interrupted_at = now
    raise KeyboardInterrupt


def catch_sigint() -> Any:
    """Install the handler for the duration of one command; returns what to restore (None: nothing installed)."""
    global _interrupted_at
    _interrupted_at = None
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # someone else handles Ctrl-C (a test runner, a host program)
        return None
    signal.signal(signal.SIGINT, _on_sigint)
    return previous


def restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def was_interrupted(e: BaseException | None = None) -> bool:
    return isinstance(e, KeyboardInterrupt) or _interrupted_at is not None


def last_checkpoint(out_dir: str) -> str | None:
    """The newest complete checkpoint under ``out_dir/checkpoints`` (what ``run.resume=auto`` would load)."""
    ckpt = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(ckpt):
        return None
    found = []
    for name in os.listdir(ckpt):
        path = os.path.join(ckpt, name)
        for prefix, marker in (("step-", "state.json"), ("checkpoint-", "COMPLETE")):  # our engine, HF Trainer
            if name.startswith(prefix) and name[len(prefix):].isdigit() and os.path.exists(os.path.join(path, marker)):
                found.append((int(name[len(prefix):]), path))
    return max(found)[1] if found else None


def _stage_resume(command: str, cfg: Any) -> str:
    out = cfg.run.output_dir
    if command == "eval":
        gens = cfg.eval.generations_dir or os.path.join(out, "generations")
        if os.path.isdir(gens) and os.listdir(gens):
            return f"finished generations are cached in {gens}; run the same command to resume"
        return "no generations cached yet; the same command starts over"
    if command == "compare":
        partial = os.path.join(out, "samples.partial.jsonl")
        if os.path.isfile(partial) and os.path.getsize(partial):
            return f"the finished batches of responses are in {partial}; run the same command to resume"
        return "no responses saved yet; the same command starts over"
    ckpt = last_checkpoint(out)
    if ckpt is None:
        return "no checkpoint yet (one is written every run.save_steps steps); the same command starts over"
    how = "run the same command to resume" if cfg.run.resume == "auto" else \
        "run the same command with run.resume=auto to resume"
    return f"the last checkpoint is {ckpt}; {how}"


def interrupted_message(command: str, cfg: Any) -> str:
    """``interrupted; the last checkpoint is OUT/checkpoints/X; run the same command to resume`` and the like."""
    if cfg is None:
        return "interrupted"
    if command == "pipeline":
        from rlhf.outputs import is_finished
        from rlhf.stages.pipeline import stage_config, stage_dirs

        dirs = stage_dirs(cfg)
        for i, s in enumerate(cfg.stages):
            if s.command == "eval" or not is_finished(dirs[s.name]):
                try:
                    scfg = stage_config(cfg, i)
                except Exception:  # the stage configs loaded when the pipeline started; be safe anyway
                    return f"interrupted in stage {s.name}; run the same command to resume"
                return f"interrupted in stage {s.name}; {_stage_resume(s.command, scfg)}"
        return "interrupted; every stage had finished"
    if hasattr(cfg, "run"):
        return f"interrupted; {_stage_resume(command, cfg)}"
    return "interrupted"


def _disk_full_error(e: BaseException) -> OSError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__ or e.__context__
    return None


def _output_dir(command: str, cfg: Any) -> str | None:
    if cfg is None:
        return None
    if command == "pipeline":
        return cfg.run_dir
    run = getattr(cfg, "run", None)
    return getattr(run, "output_dir", None)


def _almost_full(path: str) -> bool:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free < 2**20
    except OSError:
        return False


def disk_full_message(e: BaseException, command: str, cfg: Any) -> str | None:
    """The message for a write that failed on a full disk, or None when ``e`` is something else.

    An OSError ENOSPC/EDQUOT names its file; other writers (torch's checkpoint writer raises a RuntimeError
    without the errno) count when the output directory's file system has less than 1 MiB left.
    """
    out = _output_dir(command, cfg)
    err = _disk_full_error(e)
    if err is not None:
        where = err.filename or out or "a file"
        detail = ""
    elif out is not None and _almost_full(out):
        where = out
        detail = f" (the write failed with {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    else:
        return None
    then = "then run the same command to resume" if out is not None else "then run the command again"
    move = " (or set run.output_dir to another disk)" if command != "pipeline" and out is not None else ""
    return f"no space left on device while writing {where}{detail}: free some space{move}, {then}"


def report(e: BaseException, command: str, cfg: Any) -> int | None:
    """Print the one line for an interruption or a full disk and return the exit status; None for other errors."""
    if was_interrupted(e):
        if _rank() == 0:
            print(f"error: {interrupted_message(command, cfg)}", file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT
    msg = disk_full_message(e, command, cfg)
    if msg is None:
        return None
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return 2


def remove_if_untouched(out_dir: str, existed: bool, had_checkpoints: bool) -> None:
    """After a stage failed before writing anything, leave its output directory as it was: remove the empty
    ``checkpoints/`` (and the directory itself) that the failed start created. Non-empty directories stay."""
    if _rank() != 0:
        return
    for path, created in ((os.path.join(out_dir, "checkpoints"), not had_checkpoints), (out_dir, not existed)):
        if created:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue  # a stage that keeps no checkpoints
            except OSError:
                return  # not empty: something was written, keep it
