"""``rlhf pipeline CONFIG``: every stage in one run directory, skipping finished stages and resuming interrupted ones.

A pipeline config lists stages in order; each names a command (pretrain, sft, rm, ppo, eval), the stage's own
config file and overrides. ``{name}`` in an override is replaced by the output directory of stage ``name``
(``RUN_DIR/name``), so stages hand their outputs to each other:

    run_dir: runs/tiny
    stages:
      - {name: base, command: pretrain, config: configs/tiny/pretrain.yaml}
      - {name: sft, command: sft, config: configs/tiny/sft.yaml, overrides: ["model.name_or_path={base}"]}

A stage whose ``summary.json`` exists is skipped; an interrupted one resumes from its last checkpoint
(``run.resume=auto``), so re-running after a crash or Ctrl-C loses nothing. Before each stage one line shows the
overall progress: stage i of N, time so far and an estimate of the time left (from ``expected_minutes``, scaled
by how the finished stages compared with their estimates).
"""

from __future__ import annotations

import gc
import json
import os
import re
import time

from rlhf import engine as E
from rlhf.config import STAGES, ConfigError, PipelineConfig, load_config
from rlhf.outputs import is_finished, save_config, write_json


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


def stage_config(cfg: PipelineConfig, i: int):
    s = cfg.stages[i]
    where = f"stages[{i}] ({s.name})"
    overrides = resolve_overrides(cfg, list(s.overrides), where)
    overrides.append(f"run.output_dir={stage_dirs(cfg)[s.name]}")
    if s.command != "eval":
        overrides.append("run.resume=auto")
    overrides += list(cfg.overrides)
    return load_config(STAGES[s.command], s.config, overrides)


def fmt_min(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def run(cfg: PipelineConfig) -> dict:
    t0 = time.time()
    os.makedirs(cfg.run_dir, exist_ok=True)
    # validate every stage's config before anything runs: a typo in the last stage fails now, not in an hour
    configs = [stage_config(cfg, i) for i in range(len(cfg.stages))]
    save_config(cfg.run_dir, cfg)
    n = len(cfg.stages)
    timings: dict[str, dict] = {}
    done_expected = done_actual = 0.0
    for i, (s, scfg) in enumerate(zip(cfg.stages, configs)):
        out = stage_dirs(cfg)[s.name]
        remaining = sum(x.expected_minutes for x in cfg.stages[i:]) * 60
        speed = done_actual / done_expected if done_expected > 0 else 1.0
        finished = is_finished(out) and s.command != "eval"
        E.print0(
            f"[pipeline {i + 1}/{n}] {s.name} ({s.command}): "
            + ("finished earlier, skipping" if finished else ("resuming" if os.path.isdir(os.path.join(out, "checkpoints")) and os.listdir(os.path.join(out, "checkpoints")) else "starting"))
            + f" | elapsed {fmt_min(time.time() - t0)}, about {fmt_min(remaining * speed)} left"
        )
        if finished:
            timings[s.name] = {"skipped": True}
            continue
        ts = time.time()
        module = __import__(f"rlhf.stages.{s.command}", fromlist=["run"])
        module.run(scfg)
        took = time.time() - ts
        timings[s.name] = {"seconds": round(took, 1)}
        done_expected += s.expected_minutes * 60
        done_actual += took
        gc.collect()
        E.print0(f"[pipeline {i + 1}/{n}] {s.name} took {fmt_min(took)}")
    summary = {"stage": "pipeline", "stages": timings, "wall_time_s": round(time.time() - t0, 1)}
    if E.is_main():
        write_json(os.path.join(cfg.run_dir, "pipeline_summary.json"), summary)
    report = os.path.join(stage_dirs(cfg).get("eval", ""), "report.md")
    E.print0(f"[pipeline] done in {fmt_min(time.time() - t0)}; stage timings: {json.dumps(timings)}")
    if os.path.exists(report):
        E.print0(f"[pipeline] report: {os.path.abspath(report)}")
    return summary
