"""``rlhf pipeline CONFIG``: every stage in one run directory, skipping finished stages and resuming interrupted ones.

A pipeline config lists stages in order; each names a command (pretrain, sft, rm, ppo, eval), the stage's own
config file and overrides. ``{name}`` in an override is replaced by the output directory of stage ``name``
(``RUN_DIR/name``), so stages hand their outputs to each other:

    run_dir: runs/tiny
    stages:
      - {name: base, command: pretrain, config: configs/tiny/pretrain.yaml}
      - {name: sft, command: sft, config: configs/tiny/sft.yaml, overrides: ["model.name_or_path={base}"]}

A stage whose ``summary.json`` exists is skipped (a finished stage whose settings differ from the config's is
refused, naming them: docs/run_directory.md); an interrupted one resumes from its last checkpoint
(``run.resume=auto``), so re-running after a crash or Ctrl-C loses nothing. Before each stage one line shows the
overall progress: stage i of N, time so far and an estimate of the time left (from ``expected_minutes``, scaled
by how the finished stages compared with their estimates).

Per stage, the pipeline records the wall time and the peak resident memory (RSS) of the process while the stage
ran, and ends with a table of both (also in ``RUN_DIR/pipeline_summary.json``). Stages share one process, so the
kernel's high-water mark is reset before each stage (Linux: ``5`` written to ``/proc/self/clear_refs``) and read
from ``VmHWM`` in ``/proc/self/status`` after it; where that is unavailable, ``ru_maxrss`` is reported instead,
marked cumulative (the peak since the process started, an upper bound on the stage's own peak). A stage skipped
because it finished earlier keeps the figures recorded when it ran.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import sys
import time

from rlhf import engine as E
from rlhf.config import STAGES, ConfigError, PipelineConfig, load_config
from rlhf.outputs import finished_run, read_json, save_config, write_json
from rlhf.report import code_version
from rlhf.stages import run_stage


def stage_dirs(cfg: PipelineConfig) -> dict[str, str]:
    return {s.name: os.path.join(cfg.run_dir, s.name) for s in cfg.stages}


def resolve_overrides(cfg: PipelineConfig, overrides: list[str], where: str) -> list[str]:
    dirs = stage_dirs(cfg)

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in dirs:
            raise ConfigError(f"{where}: override refers to unknown stage {{{name}}}; stages: {', '.join(dirs)}")
        return dirs[name]

    return [re.sub(r"\{([A-Za-z0-9_]+)\}", sub, o) for o in overrides]


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def precision_overrides(command: str, precision: str) -> list[str]:
    """The keys that set one precision for a stage: the pipeline's ``precision`` key, so a whole run switches to
    bf16 with one override although the stages keep it under different names."""
    if not precision:
        return []
    dtype = DTYPES[precision]
    if command == "eval":
        return [f"eval.dtype={dtype}"]
    if command == "compare":
        return [f"model.dtype={dtype}"]
    return [f"deepspeed.precision={precision}", f"model.dtype={dtype}"]


def stage_config(cfg: PipelineConfig, i: int):
    s = cfg.stages[i]
    where = f"stages[{i}] ({s.name})"
    overrides = resolve_overrides(cfg, list(s.overrides), where)
    overrides.append(f"run.output_dir={stage_dirs(cfg)[s.name]}")
    if s.command != "eval":
        overrides.append("run.resume=auto")
    overrides += precision_overrides(s.command, cfg.precision)
    overrides += list(cfg.overrides)
    return load_config(STAGES[s.command], s.config, overrides)


def fmt_min(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class OverallProgress:
    """The pipeline's one progress view: stage i of N, the running stage's step (or iteration, or eval task), time
    so far and an estimate of the time left.

    Stages report through ``rlhf.engine.report_progress``; the pipeline installs an instance as the hook. The
    estimate of the running stage comes from its own pace since its first report (before a second one, from its
    ``expected_minutes``), and the later stages' ``expected_minutes`` are scaled by how the stages finished so far
    compared with their estimates. On a terminal the view is one line rewritten in place; in a log file a line is
    written at most every ``log_seconds`` (and at each stage's last step).
    """

    def __init__(self, stages, enabled: bool = True, log_seconds: float = 30.0, stream=None, clock=time.time):
        self.stages, self.enabled, self.log_seconds, self.clock = stages, enabled, log_seconds, clock
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = clock()
        self.i, self.t_stage, self.speed = 0, self.t0, 1.0
        self.last_write = float("-inf")
        self.first: tuple[float, int] | None = None

    def start_stage(self, i: int, speed: float) -> None:
        self.i, self.t_stage, self.speed = i, self.clock(), speed
        self.last_write = float("-inf")
        self.first = None  # (time, done) of the stage's first report

    def time_left(self, done: int, total: int) -> float:
        now = self.clock()
        later = sum(s.expected_minutes for s in self.stages[self.i + 1 :]) * 60 * self.speed
        first = self.first
        if first is not None and done > first[1]:
            # the pace since the first report: loading, setup and a first step that compiles are left out
            current = (now - first[0]) / (done - first[1]) * max(total - done, 0)
        else:
            current = max(self.stages[self.i].expected_minutes * 60 * self.speed - (now - self.t_stage), 0.0)
        return later + current

    def line(self, done: int, total: int, unit: str) -> str:
        s = self.stages[self.i]
        return (f"[pipeline {self.i + 1}/{len(self.stages)}] {s.name}: {unit} {done}/{total} | elapsed "
                f"{fmt_min(self.clock() - self.t0)}, about {fmt_min(self.time_left(done, total))} left")

    def __call__(self, done: int, total: int, unit: str = "step") -> None:
        if not self.enabled:
            return
        if self.first is None:
            self.first = (self.clock(), done)
        if self.live:  # rewrite one line in place; a stage's own print starts over it from column 0
            self.stream.write(self.line(done, total, unit) + "\x1b[K\r")
            self.stream.flush()
            return
        now = self.clock()
        if now - self.last_write >= self.log_seconds or done >= total:
            self.stream.write(self.line(done, total, unit) + "\n")
            self.stream.flush()
            self.last_write = now

    def end_stage(self) -> None:
        if self.live:
            self.stream.write("\x1b[K")
            self.stream.flush()


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS high-water mark (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss(was_reset: bool) -> tuple[float, str]:
    """(peak resident memory in GiB, where the figure comes from) since the last reset, or since the process
    started when the reset was not possible."""
    if was_reset:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 2**20, "VmHWM"  # kB
        except OSError:
            pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    gib = kib / 2**30 if sys.platform == "darwin" else kib / 2**20
    return gib, "ru_maxrss (cumulative: peak since the process started)"


def stage_table(timings: dict[str, dict]) -> str:
    """The per-stage table printed at the end: stage, minutes, peak RSS."""
    lines = [f"{'stage':<16} {'minutes':>8} {'peak RSS GiB':>13}  note"]
    for name, t in timings.items():
        rec = t.get("earlier", t)
        mins = f"{rec['seconds'] / 60:.1f}" if "seconds" in rec else "-"
        gib = f"{rec['peak_rss_gib']:.2f}" if "peak_rss_gib" in rec else "-"
        notes = []
        if t.get("skipped"):
            notes.append("skipped: finished earlier" + (" (figures from that run)" if "earlier" in t else ""))
        if rec.get("resumed"):
            notes.append("resumed from a checkpoint: this run's part only")
        if rec.get("peak_rss_source", "VmHWM") != "VmHWM":
            notes.append(rec["peak_rss_source"])
        lines.append(f"{name:<16} {mins:>8} {gib:>13}  {'; '.join(notes)}".rstrip())
    return "\n".join(lines)


def run(cfg: PipelineConfig) -> dict:
    t0 = time.time()
    os.makedirs(cfg.run_dir, exist_ok=True)
    # validate every stage's config before anything runs: a typo in the last stage fails now, not in an hour
    configs = [stage_config(cfg, i) for i in range(len(cfg.stages))]
    for s, scfg in zip(cfg.stages, configs):  # a finished stage whose settings changed fails now, not in an hour
        finished_run(stage_dirs(cfg)[s.name], s.command, scfg)
    save_config(cfg.run_dir, cfg)
    # the stages' progress reports (rlhf.engine.report_progress) feed the one overall view
    view = OverallProgress(cfg.stages, cfg.progress and E.is_main(), cfg.progress_log_seconds)
    previous_hook = E.set_progress_hook(view)
    try:
        return _run_stages(cfg, configs, t0, view)
    finally:
        E.set_progress_hook(previous_hook)


def _run_stages(cfg: PipelineConfig, configs: list, t0: float, view: OverallProgress) -> dict:
    summary_path = os.path.join(cfg.run_dir, "pipeline_summary.json")
    previous = read_json(summary_path).get("stages", {}) if os.path.exists(summary_path) else {}
    n = len(cfg.stages)
    code = code_version()  # which code ran each stage: rlhf report names it beside the figures
    timings: dict[str, dict] = {}
    done_expected = done_actual = 0.0
    for i, (s, scfg) in enumerate(zip(cfg.stages, configs)):
        out = stage_dirs(cfg)[s.name]
        speed = done_actual / done_expected if done_expected > 0 else 1.0
        view.start_stage(i, speed)
        finished = finished_run(out, s.command, scfg)  # with other settings than the config's: refused
        ckpts = os.path.join(out, "checkpoints")
        resuming = not finished and os.path.isdir(ckpts) and bool(os.listdir(ckpts))
        E.print0(
            f"[pipeline {i + 1}/{n}] {s.name} ({s.command}): "
            + ("finished earlier, skipping" if finished else ("resuming" if resuming else "starting"))
            + f" | elapsed {fmt_min(time.time() - t0)}, about {fmt_min(view.time_left(0, 0))} left"
        )
        if finished:
            before = previous.get(s.name, {})
            before = before.get("earlier", before)
            timings[s.name] = {"skipped": True, **({"earlier": before} if "seconds" in before else {})}
            continue
        gc.collect()
        was_reset = reset_peak_rss()
        ts = time.time()
        run_stage(s.command, scfg)  # checks an earlier stage's output (models, pairs.jsonl) only now that it exists
        view.end_stage()
        took = time.time() - ts
        gib, source = peak_rss(was_reset)
        timings[s.name] = {"seconds": round(took, 1), "peak_rss_gib": round(gib, 2), "peak_rss_source": source,
                           "code": code, **({"resumed": True} if resuming else {})}
        done_expected += s.expected_minutes * 60
        done_actual += took
        gc.collect()
        E.print0(f"[pipeline {i + 1}/{n}] {s.name} took {fmt_min(took)}, peak RSS {gib:.2f} GiB ({source})")
        if E.is_main():  # after every stage, so a crash later keeps the figures of the stages that finished
            write_json(summary_path, {"stage": "pipeline", "code": code, "stages": timings, "complete": False,
                                      "wall_time_s": round(time.time() - t0, 1)})
    summary = {"stage": "pipeline", "code": code, "stages": timings, "complete": True,
               "wall_time_s": round(time.time() - t0, 1)}
    if E.is_main():
        write_json(summary_path, summary)
    E.print0(f"[pipeline] done in {fmt_min(time.time() - t0)}; per stage (rank 0):\n{stage_table(timings)}")
    for s in cfg.stages:
        report = os.path.join(stage_dirs(cfg)[s.name], "report.md")
        if s.command == "eval" and os.path.exists(report):
            E.print0(f"[pipeline] report ({s.name}): {os.path.abspath(report)}")
    return summary
