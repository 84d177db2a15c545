"""The stage output directory contract (DESIGN.md): every stage writes

    OUT/config.yaml      the resolved config (with derived values)
    OUT/metrics.jsonl    one JSON line per logged step
    OUT/summary.json     final metrics (written last: its presence means the stage finished)
    OUT/checkpoints/     resumable checkpoints
    OUT/*                a Hugging Face model (safetensors) + tokenizer, loadable without rlhf

Every file is written atomically (temporary file + ``os.replace``); only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from rlhf.config import dump_yaml
from rlhf.engine import is_main, print0


def _named(e: OSError, path: str) -> OSError:
    """A write error (ENOSPC from write/flush carries no file name) as the same error naming ``path``."""
    return e if e.filename else type(e)(e.errno, e.strerror, path)


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _named(e, path) from e
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item"):
        return _jsonable(v.item())
    return v


def write_json(path: str, data: dict) -> None:
    atomic_write_text(path, json.dumps({k: _jsonable(v) for k, v in data.items()}, indent=2) + "\n")


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_finished(out_dir: str) -> bool:
    return os.path.exists(os.path.join(out_dir, "summary.json"))


def prepare_output_dir(out_dir: str, resume: str) -> str:
    """Create ``out_dir``/checkpoints; refuse to start fresh over existing checkpoints (nothing is lost)."""
    ckpt = os.path.join(out_dir, "checkpoints")
    if is_main():
        os.makedirs(ckpt, exist_ok=True)
        if resume == "never" and any(n.startswith(("step-", "checkpoint-")) for n in os.listdir(ckpt)):
            raise FileExistsError(
                f"{out_dir} already holds checkpoints and run.resume is 'never': use run.resume=auto to continue, "
                "or choose a new run.output_dir"
            )
    return ckpt


def save_config(out_dir: str, cfg: Any, derived: dict | None = None) -> None:
    if is_main():
        extra = {"derived": derived} if derived else None
        atomic_write_text(os.path.join(out_dir, "config.yaml"), dump_yaml(cfg, extra))


class MetricsLog:
    """Appends metric dicts to ``metrics.jsonl`` (and TensorBoard / W&B when ``report_to`` names them).

    On resume, lines past the resumed step are dropped so the log reads as one uninterrupted run.
    """

    def __init__(self, out_dir: str, report_to: list[str] | tuple[str, ...] = (), resume_step: int = 0,
                 run_name: str = "", config: dict | None = None):
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.sinks: list[Any] = []
        if not is_main():
            return
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(kept))
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.sinks.append(("tensorboard", SummaryWriter(os.path.join(out_dir, "tensorboard"))))
        if "wandb" in report_to:
            import wandb

            self.sinks.append(("wandb", wandb.init(name=run_name or None, config=config or {}, dir=out_dir)))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not is_main():
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: _jsonable(v) for k, v in metrics.items()}}
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise _named(e, self.path) from e
        for kind, sink in self.sinks:
            scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
            if kind == "tensorboard":
                for k, v in scalars.items():
                    sink.add_scalar(k, v, step)
            else:
                sink.log(scalars, step=step)

    def close(self) -> None:
        for kind, sink in self.sinks:
            sink.close() if kind == "tensorboard" else sink.finish()


def read_metrics(out_dir: str) -> list[dict]:
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def announce(stage: str, out_dir: str, resumed_from: str | None) -> None:
    """Every command says where it writes and what it resumed from."""
    print0(f"[{stage}] writing to {os.path.abspath(out_dir)}")
    print0(f"[{stage}] " + (f"resuming from {resumed_from}" if resumed_from else "starting fresh (no checkpoint)"))
