"""The stage output directory contract (docs/design.md, "The stage output contract"): every stage writes

    OUT/config.yaml      the resolved config (with derived values)
    OUT/metrics.jsonl    one JSON line per logged step
    OUT/summary.json     final metrics (written last: its presence means the stage finished)
    OUT/checkpoints/     resumable checkpoints
    OUT/*                a Hugging Face model (safetensors) + tokenizer, loadable without rlhf
    OUT/rlhf_run.json    which stage wrote the directory and a content hash of every input file and model
    OUT/rlhf.lock        held while a run writes the directory (pid, host, start time)

Every file is written atomically (temporary file + ``os.replace``); only rank 0 writes.

:func:`stage_output` is the guard every stage's ``run`` goes through (docs/run_directory.md): before anything is
written it refuses a directory that holds files rlhf did not write, another stage's run, an input model, or a run
with other settings, and takes the lock; a finished run is a no-op. The stage's :func:`save_config` call, after its
own config and data checks, is the first write.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import socket
import time
from typing import Any

from rlhf.config import STAGES, ConfigError, PipelineConfig, dump_yaml, load_config, to_dict
from rlhf.engine import init_distributed, is_main, print0, warn0, world_size
from rlhf.errors import OutputDirError
from rlhf.preflight import model_sources

MARKER = "rlhf_run.json"
LOCK = "rlhf.lock"
# keys that do not change what a stage computes (where it writes, what it prints, how often it logs or saves):
# a resumed or finished run may differ from the saved config in these
NOT_COMPARED = ("run.output_dir", "run.resume", "run.overwrite", "run.progress", "run.report_to", "run.logging_steps",
                "run.save_steps", "run.save_total_limit", "train.gradient_checkpointing", "ppo.gather_for_generation",
                "ppo.sample_every", "eval.generations_dir")
# where a run keeps its progress: deleted when run.overwrite (or a run without progress) starts the directory over
RUN_STATE = ("summary.json", "metrics.jsonl", "checkpoints", "samples.partial.jsonl", "samples.jsonl", MARKER)
# rlhf's own bookkeeping files, left out of the fingerprint of a model directory read as an input
_RUN_FILES = {"summary.json", "pipeline_summary.json", "winrates.json", MARKER}


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


def checkpoints_dir(out_dir: str) -> str:
    """``out_dir``/checkpoints (created by the first checkpoint save; :func:`stage_output` checked it)."""
    return os.path.join(out_dir, "checkpoints")


def save_config(out_dir: str, cfg: Any, derived: dict | None = None) -> None:
    """Write ``out_dir``/config.yaml; for a stage under :func:`stage_output`, the run's first write (see there)."""
    claim = _ACTIVE.get(os.path.abspath(out_dir))
    if claim is not None:
        claim.commit()
    if is_main():
        os.makedirs(out_dir, exist_ok=True)
        extra = {"derived": derived} if derived else None
        atomic_write_text(os.path.join(out_dir, "config.yaml"), dump_yaml(cfg, extra))


# ----------------------------------------------------------------------------------------------------------
# The run directory guard
# ----------------------------------------------------------------------------------------------------------


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _compared(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_COMPARED)


def config_differences(saved: Any, cfg: Any) -> list[str]:
    """``key: saved -> new`` for every setting the result depends on that differs (see ``NOT_COMPARED``)."""
    a, b = _flatten(to_dict(saved)), _flatten(to_dict(cfg))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if _compared(k) and a.get(k) != b.get(k)]


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safetensors_sample(path: str, h, chunks: int = 32, size: int = 4096) -> None:
    """The header (tensor names, shapes, offsets) and ``chunks`` evenly spaced pieces of the data: training changes
    weights everywhere, so this tells two models apart at the cost of a few reads, whatever their size."""
    total = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h.update(f.read(min(n, total)))
        start = 8 + n
        for i in range(chunks + 1):
            f.seek(start + (total - start - size) * i // chunks if total - start > size else start)
            h.update(f.read(size))


def _dir_fingerprint(path: str) -> str | None:
    """Of a model (or tokenizer) directory: its JSON files and a sample of its safetensors; None for other dirs."""
    names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n))
                   and (n.endswith(".safetensors") or n.endswith(".json")) and n not in _RUN_FILES)
    if not names:
        return None
    h = hashlib.sha256()
    for n in names:
        f = os.path.join(path, n)
        h.update(f"{n}:{os.path.getsize(f)}".encode())
        if n.endswith(".safetensors"):
            _safetensors_sample(f, h)
        else:
            h.update(_file_sha256(f).encode())
    return h.hexdigest()


def input_fingerprints(cfg: Any) -> dict[str, str]:
    """Config key -> content hash of every existing file (data, rubric, model config) and model directory the
    config names, so a changed file under the same name counts as a changed input."""
    out: dict[str, str] = {}
    for key, value in _flatten(to_dict(cfg)).items():
        if not _compared(key):
            continue
        values = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, v in values:
            if not isinstance(v, str) or not v or "\n" in v:
                continue
            k = key if i is None else f"{key}[{i}]"
            path = os.path.expanduser(v)
            if os.path.isfile(path):
                out[k] = "sha256:" + _file_sha256(path)
            elif os.path.isdir(path):
                fp = _dir_fingerprint(path)
                if fp:
                    out[k] = "dir:" + fp
    return out


def _input_differences(saved: dict, now: dict, cfg: Any) -> list[str]:
    flat = _flatten(to_dict(cfg))

    def value(k: str) -> Any:
        base, _, idx = k.partition("[")
        v = flat.get(base)
        return v[int(idx[:-1])] if idx and isinstance(v, list) else v

    return [f"{k}: the contents of {value(k)} changed" for k in sorted(saved.keys() & now.keys()) if saved[k] != now[k]]


def _load_as(cls: type, path: str) -> Any | None:
    try:
        return load_config(cls, path)
    except ConfigError:
        return None


def _read_marker(out: str) -> dict | None:
    path = os.path.join(out, MARKER)
    if not os.path.exists(path):
        return None
    try:
        marker = read_json(path)
        marker["stage"]  # noqa: B018 - a marker names its stage
        return marker
    except (ValueError, KeyError, TypeError) as e:
        raise OutputDirError(f"run.output_dir: {path} is unreadable ({e}); delete it if the directory is an rlhf run "
                             "directory, or choose another run.output_dir") from None


def _has_progress(out: str) -> bool:
    ckpt = os.path.join(out, "checkpoints")
    return (is_finished(out) or (os.path.isdir(ckpt) and bool(os.listdir(ckpt)))
            or os.path.exists(os.path.join(out, "samples.partial.jsonl")))


def _contents(out: str) -> list[str]:
    """Entries of ``out`` other than a lock and empty directories (what a failed start of older versions left)."""
    names = []
    for n in sorted(os.listdir(out)):
        p = os.path.join(out, n)
        if n == LOCK or (os.path.isdir(p) and not os.path.islink(p) and not os.listdir(p)):
            continue
        names.append(n)
    return names


def _whose(out: str, stage: str) -> tuple[str, Any]:
    """What ``out`` holds: ("empty", None), ("ours", saved config or None), ("other", stage name) or
    ("foreign", names of the files). A directory without rlhf_run.json is rlhf's when its config.yaml loads as a
    stage's config (runs written before the marker existed)."""
    if not os.path.isdir(out) or not _contents(out):
        return "empty", None
    marker = _read_marker(out)
    config = os.path.join(out, "config.yaml")
    if marker is not None and marker["stage"] != stage:
        return "other", marker["stage"]
    if marker is None and os.path.exists(os.path.join(out, "summary.json")):
        try:
            written_by = read_json(os.path.join(out, "summary.json")).get("stage")
        except (ValueError, AttributeError):
            written_by = None
        if written_by not in (None, stage) and os.path.exists(config):
            return "other", written_by
    if os.path.exists(config):
        saved = _load_as(STAGES[stage], config)
        if saved is not None:
            return "ours", saved
        if marker is not None:
            raise OutputDirError(f"run.output_dir: {config} does not load as a {stage} config (written by another "
                                 "rlhf version?); set run.overwrite=true to start the directory over")
        for name, cls in [*STAGES.items(), ("pipeline", PipelineConfig)]:
            if name != stage and _load_as(cls, config) is not None:
                return "other", name
    if marker is not None:
        return "ours", None
    return "foreign", _contents(out)


def _overlapping_input(out: str, cfg: Any) -> str | None:
    """The config key of an input model or tokenizer that is ``out``, lies inside it or holds it."""
    o = os.path.realpath(out)
    for key, value, _ in model_sources(cfg):
        p = os.path.realpath(os.path.expanduser(value))
        if os.path.exists(p) and (p == o or p.startswith(o + os.sep) or o.startswith(p + os.sep)):
            return f"{key} ({value})"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class _Lock:
    """``OUT/rlhf.lock``: an exclusive ``flock`` held for the run's lifetime (the kernel drops it when the process
    dies, however it dies), with the holder's pid, host and start time inside for the messages. Where ``flock`` is
    missing, a lock whose pid is alive on this host counts as held."""

    def __init__(self, out: str):
        self.out, self.path, self.fd = out, os.path.join(out, LOCK), None

    def _holder(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return json.loads(os.read(fd, 4096).decode() or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: dict) -> OutputDirError:
        return OutputDirError(
            f"run.output_dir: {self.out} is in use by another run (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, {holder.get('stage', '?')} since {holder.get('started', '?')}): wait for it "
            f"to finish or choose another run.output_dir; if that process is gone on another host, delete {self.path}")

    def acquire(self, stage: str) -> None:
        try:
            import fcntl
        except ImportError:  # no flock: the pid decides
            fcntl = None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            holder = self._holder(fd)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._refuse(holder) from None
                try:  # the file may have been released (unlinked) by its holder between our open and flock
                    if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                        os.close(fd)
                        continue
                except FileNotFoundError:
                    os.close(fd)
                    continue
            elif holder.get("host") == socket.gethostname() and _pid_alive(int(holder.get("pid", 0))) \
                    and holder.get("pid") != os.getpid():
                os.close(fd)
                raise self._refuse(holder)
            break
        if holder.get("pid") and (holder.get("pid"), holder.get("host")) != (os.getpid(), socket.gethostname()):
            warn0(f"{self.path}: taking over the lock of an earlier run that is gone (pid {holder['pid']} on "
                  f"{holder.get('host', '?')}, {holder.get('stage', '?')} since {holder.get('started', '?')}): it was "
                  "killed or crashed; its last complete checkpoint is resumed")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


_ACTIVE: dict[str, _Claim] = {}


class _Claim:
    """One stage run's hold on its output directory (rank 0 checks, locks and writes; see :func:`stage_output`)."""

    def __init__(self, stage: str, cfg: Any, again: bool, result_file: str):
        self.stage, self.cfg, self.again, self.result_file = stage, cfg, again, result_file
        self.out = cfg.run.output_dir
        self.lock = _Lock(self.out)
        self.created = self.committed = self.discard = False
        self.inputs: dict[str, str] = {}

    def check(self) -> dict:
        """Rank 0: every check, then the lock. Returns {"finished": result} or {"discard": bool}."""
        out, stage, overwrite = self.out, self.stage, self.cfg.run.overwrite
        if os.path.lexists(out) and not os.path.isdir(out):
            raise OutputDirError(f"run.output_dir: {out} is a file, not a directory; choose a directory (it is "
                                 "created when missing)")
        clash = _overlapping_input(out, self.cfg)
        if clash:
            raise OutputDirError(f"run.output_dir: {out} is (or overlaps) {clash}, which this stage reads: writing "
                                 "there would overwrite its input; choose another run.output_dir")
        try:
            kind, found = _whose(out, stage)
        except OutputDirError:  # an unreadable marker or config of an rlhf run: run.overwrite starts it over
            if not overwrite:
                raise
            kind, found = "foreign", []
        if kind == "foreign" and not overwrite:
            shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            raise OutputDirError(f"run.output_dir: {out} holds files rlhf did not write ({shown}); choose a new or "
                                 "empty directory, or set run.overwrite=true to write into it anyway (see "
                                 "docs/run_directory.md)")
        if kind == "other" and not overwrite:
            raise OutputDirError(f"run.output_dir: {out} holds an rlhf {found} run, not a {stage} run; choose another "
                                 f"run.output_dir, or set run.overwrite=true to start it over as a {stage} run")
        self.created = not os.path.exists(out)
        os.makedirs(out, exist_ok=True)
        self.lock.acquire(stage)
        self.inputs = input_fingerprints(self.cfg)
        if overwrite:
            return self._start_over()
        if kind == "empty":
            return {"discard": False}
        if not _has_progress(out):  # a start that never reached a checkpoint: nothing to keep
            return {"discard": True}
        marker = _read_marker(out) or {}
        diffs = config_differences(found, self.cfg) if found is not None else []
        diffs += _input_differences(marker.get("inputs", {}), self.inputs, self.cfg)
        finished = is_finished(out)
        if diffs:
            hint = ("choose another run.output_dir, or set run.overwrite=true to run it again there" if finished else
                    "resume it with its own settings, choose another run.output_dir, or set run.overwrite=true to "
                    "start over there")
            raise OutputDirError(f"run.output_dir: {out} holds {'a finished' if finished else 'an interrupted'} "
                                 f"{stage} run with other settings:\n  " + "\n  ".join(diffs) + "\n" + hint)
        if finished and not self.again:
            return {"finished": self._result()}
        ckpt = os.path.join(out, "checkpoints")
        if self.cfg.run.resume == "never" and os.path.isdir(ckpt) and os.listdir(ckpt):
            raise OutputDirError(f"run.output_dir: {out} already holds checkpoints and run.resume is 'never': use "
                                 "run.resume=auto to continue, run.overwrite=true to start over, or choose a new "
                                 "run.output_dir")
        return {"discard": False}

    def _start_over(self) -> dict:
        resume = self.cfg.run.resume
        if resume not in ("auto", "never"):
            r, o = os.path.realpath(resume), os.path.realpath(self.out)
            if r == o or r.startswith(o + os.sep):
                raise OutputDirError(f"run.resume: {resume} is inside run.output_dir, whose checkpoints "
                                     "run.overwrite=true deletes; copy it elsewhere first")
        return {"discard": True, "start_over": True}

    def _result(self) -> dict:
        name = self.result_file
        return read_json(os.path.join(self.out, name if os.path.exists(os.path.join(self.out, name))
                                      else "summary.json"))

    def commit(self) -> None:
        """The stage passed its checks: discard what a start-over replaces and mark the directory (rank 0)."""
        if self.committed:
            return
        self.committed = True
        if not is_main():
            return
        if self.discard:
            for name in RUN_STATE:
                p = os.path.join(self.out, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    os.remove(p)
        write_json(os.path.join(self.out, MARKER), {"stage": self.stage, "inputs": self.inputs})

    def release(self, failed: bool) -> None:
        _ACTIVE.pop(os.path.abspath(self.out), None)
        if not is_main():
            return
        self.lock.release()
        if failed and not self.committed and self.created:
            try:
                os.rmdir(self.out)  # only when empty: the failed start leaves nothing behind
            except OSError:
                pass


def _from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (one broadcast), so all ranks take rank 0's decision together."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    init_distributed()
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def stage_output(stage: str, result_file: str = "summary.json"):
    """Decorator of a stage's ``run(cfg, ...)``: the run directory contract (docs/run_directory.md).

    Before the stage runs, rank 0 checks ``run.output_dir`` (not a file; not an input model; nothing rlhf did not
    write and no other stage's run, unless ``run.overwrite``), takes ``OUT/rlhf.lock`` for the run's lifetime, and
    compares a run already there with this one: the saved ``config.yaml`` (keys outside ``NOT_COMPARED``) and the
    content hashes of every input in ``rlhf_run.json``. A finished run with the same settings is a no-op that
    returns its saved ``result_file``; an interrupted one resumes; any difference is refused, naming the keys.
    Every rank receives rank 0's decision, so all of them go on or fail together. The stage's own config and data
    checks follow; its ``save_config`` call commits (marker first), so a start that fails before it leaves nothing.
    ``run(cfg, import_human=FILE)`` (``rlhf eval --import-human``) runs a finished eval again.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def run(cfg, *args, **kwargs):
            claim = _Claim(stage, cfg, bool(kwargs.get("import_human")), result_file)
            decision: dict = {}
            failure = None
            if is_main():
                try:
                    decision = claim.check()
                except OutputDirError as e:
                    decision = {"error": str(e)}
                except OSError as e:
                    decision = {"error": f"run.output_dir: cannot use {cfg.run.output_dir}: {e}"}
                except Exception as e:  # a bug: rank 0 raises it, the other ranks stop with it too
                    failure, decision = e, {"error": f"rank 0 failed to check run.output_dir: {e!r}"}
                if "error" in decision:
                    claim.release(failed=True)
            decision = _from_rank0(decision)
            if failure is not None:
                raise failure
            if "error" in decision:
                raise OutputDirError(decision["error"])
            if "finished" in decision:
                claim.release(failed=False)
                print0(f"[{stage}] {os.path.abspath(cfg.run.output_dir)}: finished earlier with these settings "
                       "(summary.json); nothing to do (run.overwrite=true runs it again)")
                return decision["finished"]
            claim.discard = decision["discard"]
            if decision.get("start_over") and cfg.run.resume == "auto":
                cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume="never"))
            _ACTIVE[os.path.abspath(cfg.run.output_dir)] = claim
            try:
                result = fn(cfg, *args, **kwargs)
            except BaseException:
                claim.release(failed=True)
                raise
            claim.release(failed=False)
            return result

        return run

    return wrap


def finished_run(out_dir: str, stage: str, cfg: Any) -> bool:
    """For ``rlhf pipeline``: whether ``out_dir`` holds a finished run of ``stage`` with ``cfg``'s settings (skip it).

    A finished run with other settings (config keys or input contents) or of another stage is refused
    (:class:`OutputDirError`, naming the keys); ``run.overwrite`` runs the stage again. A directory whose
    ``summary.json`` exists but that holds no saved config counts as finished.
    """
    if not is_finished(out_dir) or cfg.run.overwrite:
        return False
    kind, found = _whose(out_dir, stage)
    if kind == "other":
        raise OutputDirError(f"{out_dir} holds an rlhf {found} run, not a {stage} run; choose another stage name, "
                             f"or set run.overwrite=true for that stage to start it over as a {stage} run")
    if kind == "ours":
        diffs = config_differences(found, cfg) if found is not None else []
        diffs += _input_differences((_read_marker(out_dir) or {}).get("inputs", {}), input_fingerprints(cfg), cfg)
        if diffs:
            raise OutputDirError(f"{out_dir} holds a finished {stage} run with other settings:\n  " + "\n  ".join(diffs)
                                 + "\nrestore them, or set run.overwrite=true for that stage to run it again")
    return True


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
            kept = [row for row in read_jsonl(self.path) if row.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
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


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file rlhf appends to. A torn last line (a write cut short by a crash or kill) is
    dropped with a warning; a bad line before it is an :class:`OutputDirError` naming the line."""
    with open(path, encoding="utf-8") as f:
        lines = [(i, ln) for i, ln in enumerate(f, 1) if ln.strip()]
    rows = []
    for k, (i, ln) in enumerate(lines):
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError as e:
            if k == len(lines) - 1:
                warn0(f"{path}:{i}: dropping a torn last line (a write cut short by a crash): {ln.strip()[:80]!r}")
                break
            raise OutputDirError(f"{path}:{i}: not a JSON line ({e.msg}), and not the last line, so not a write cut "
                                 f"short by a crash; fix or delete line {i}") from None
    return rows


def read_metrics(out_dir: str) -> list[dict]:
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return read_jsonl(path)


def announce(stage: str, out_dir: str, resumed_from: str | None) -> None:
    """Every command says where it writes and what it resumed from."""
    print0(f"[{stage}] writing to {os.path.abspath(out_dir)}")
    print0(f"[{stage}] " + (f"resuming from {resumed_from}" if resumed_from else "starting fresh (no checkpoint)"))
