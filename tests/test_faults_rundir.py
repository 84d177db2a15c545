"""The run directory, finished stages and resume (docs/run_directory.md): a finished stage re-run is a no-op, a
resumed run (also after kill -9) ends where an uninterrupted one ends, the output directory is guarded (foreign
files, input models, another stage's run, a second run at once, changed settings or data), torn metrics lines,
resuming from a checkpoint directory of any name, and failed starts that leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import rlhf.engine.hf as H
from rlhf.cli import main as cli_main
from rlhf.config import (
    CompareStageConfig,
    DPOStageConfig,
    EvalStageConfig,
    PipelineConfig,
    PPOStageConfig,
    PretrainStageConfig,
    RMStageConfig,
    SFTStageConfig,
    load_config,
)
from rlhf.stages import compare, dpo, pipeline, ppo, pretrain, rm, sft
from rlhf.stages import eval as ev

from .conftest import ROOT
from .distributed.runner import LAUNCH_ENV
from .resume import interrupt
from .test_stages_pretrain_sft import assert_same_weights

# 4 steps, checkpoints at 2 and 4, loss logged at steps 1 and 3: the checkpoint at 2 falls between two logs
SFT_RUN = ("train.max_steps=4", "run.save_steps=2", "run.logging_steps=3", "train.learning_rate=1e-3")


def sft_args(out, base, *extra) -> list[str]:
    return [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", "data.eval_fraction=0.1",
            "deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=8", "train.warmup_steps=2", *extra]


def sft_cfg(out, base, *extra):
    return load_config(SFTStageConfig, os.path.join(ROOT, "configs/tiny/sft.yaml"), sft_args(out, base, *extra))


def refused(fn, *names):
    """``fn()`` fails with an OutputDirError whose message names every one of ``names``; returns the message."""
    with pytest.raises(Exception) as info:
        fn()
    from rlhf.errors import OutputDirError

    assert isinstance(info.value, OutputDirError), repr(info.value)
    for name in names:
        assert name in str(info.value), (name, str(info.value))
    return str(info.value)


def snapshot(path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and modification time (ns)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            out[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns)
    return out


def without_wall_time(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_time_s"}


def read_summary(out) -> dict:
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, micro_base) -> str:
    """An uninterrupted SFT run of SFT_RUN: what every interrupted or resumed run must end as; beside it, ``midway``:
    a copy of its checkpoint-2 under another name."""
    out = str(tmp_path_factory.mktemp("straight") / "sft")
    sft.run(sft_cfg(out, micro_base, *SFT_RUN))
    shutil.copytree(os.path.join(out, "checkpoints", "checkpoint-2"), os.path.join(os.path.dirname(out), "midway"))
    return out


# ---- 1. finished = no-op; resumed = uninterrupted --------------------------------------------------------------


def test_every_stage_command_is_a_noop_when_finished_and_refuses_changed_data(tmp_path, micro_model_config,
                                                                             micro_sft, capsys):
    """pretrain -> sft -> rm -> dpo -> ppo, compare and eval, each tiny; run again, each one only says it finished."""
    d = tmp_path
    data = d / "sft_data.jsonl"  # a copy, so that its contents can change under the same name below
    shutil.copy(os.path.join(ROOT, "data/palms/values_targeted.jsonl"), data)
    q = "run.progress=false"
    runs = {
        "pretrain": (pretrain, load_config(PretrainStageConfig, "configs/tiny/pretrain.yaml", [
            f"run.output_dir={d / 'base'}", f"model.from_config={micro_model_config}", q, "train.max_steps=2",
            "train.warmup_steps=1", "data.block_size=64", "deepspeed.global_batch_size=8",
            "deepspeed.micro_batch_size=8"])),
    }
    base = str(d / "base")
    runs["sft"] = (sft, sft_cfg(d / "sft", base, "train.max_steps=2", f"data.train_file={data}"))
    runs["rm"] = (rm, load_config(RMStageConfig, "configs/tiny/rm.yaml", [
        f"run.output_dir={d / 'rm'}", f"model.name_or_path={d / 'sft'}", q, "train.max_steps=1",
        "data.max_train_pairs=8", "data.test_file=", "deepspeed.global_batch_size=8"]))
    runs["dpo"] = (dpo, load_config(DPOStageConfig, "configs/tiny/dpo.yaml", [
        f"run.output_dir={d / 'dpo'}", f"model.name_or_path={d / 'sft'}", q, "train.max_steps=1",
        "data.max_train_pairs=8", "data.test_file=", "deepspeed.global_batch_size=8"]))
    runs["ppo"] = (ppo, load_config(PPOStageConfig, "configs/tiny/ppo.yaml", [
        f"run.output_dir={d / 'ppo'}", f"model.name_or_path={d / 'sft'}", q, "reward.model=",
        "reward.function=tests.rewards:supportive_words", f"critic.model={d / 'rm'}", "ppo.iterations=1",
        "ppo.rollout_batch_size=8", "ppo.mini_batch_size=8", "ppo.ptx_coef=0", "generation.max_new_tokens=8",
        "data.heldout_prompt_file=", "data.ptx_eval_file=", "ppo.gold_rubric="]))
    # the settings of test_compare.py, which give decided pairs with the micro SFT model
    runs["compare"] = (compare, load_config(CompareStageConfig, "configs/tiny/compare.yaml", [
        f"run.output_dir={d / 'compare'}", f"model.name_or_path={micro_sft}", q, "data.max_prompts=6",
        "compare.responses_per_prompt=3", "compare.batch_size=5", "generation.max_new_tokens=24",
        "generation.temperature=1.0", "compare.keep_incomplete=true"]))
    runs["eval"] = (ev, load_config(EvalStageConfig, "configs/tiny/eval.yaml", [
        f"run.output_dir={d / 'eval'}", q, f"models={json.dumps({'base': base, 'sft': micro_sft})}",
        "data.max_prompts=2", "eval.judges=[rubric]", "data.ptx_eval_file=", "eval.samples_per_prompt=1",
        "generation.max_new_tokens=8"]))
    for module, cfg in runs.values():
        module.run(cfg)
    before = snapshot(d)
    capsys.readouterr()
    for name, (module, cfg) in runs.items():
        saved = os.path.join(cfg.run.output_dir, "winrates.json" if name == "eval" else "summary.json")
        assert module.run(cfg) == json.load(open(saved)), name  # the saved result, nothing run again
        said = capsys.readouterr().out
        assert f"[{name}] " in said and "finished earlier" in said, said
    after = snapshot(d)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}
    assert read_summary(d / "sft")["steps"] == 2
    # the same data file name with other contents is another input: refused, naming the key
    with open(data, "a") as f:
        f.write(json.dumps({"prompt": "Is it ok to cry?", "completion": "Yes. Crying is a normal human response.",
                            "category": "health"}) + "\n")
    refused(lambda: sft.run(runs["sft"][1]), "data.train_file", "contents", str(data))
    assert {k: v for k, v in snapshot(d).items() if k != data.name} == {k: v for k, v in before.items() if k != data.name}


def test_a_finished_run_with_other_settings_is_refused_naming_the_keys(straight, micro_base, capsys):
    before = snapshot(straight)
    refused(lambda: sft.run(sft_cfg(straight, micro_base, *SFT_RUN, "train.learning_rate=2e-3", "run.seed=1")),
            "train.learning_rate: 0.001 -> 0.002", "run.seed: 0 -> 1", "finished")
    # where it writes, what it prints and how often it logs are not what the result depends on: still finished
    again = sft.run(sft_cfg(straight, micro_base, *SFT_RUN, "run.progress=true", "run.logging_steps=1",
                            "run.save_total_limit=5", "run.resume=never"))
    assert again == read_summary(straight) and "finished earlier" in capsys.readouterr().out
    assert snapshot(straight) == before


def test_an_interrupted_run_resumes_to_the_uninterrupted_summary_and_weights(tmp_path, straight, micro_base,
                                                                            monkeypatch):
    """train_loss is the mean over the whole run, not over the steps after the resume."""
    out = str(tmp_path / "sft")
    interrupt(sft.run, sft_cfg(out, micro_base, *SFT_RUN), monkeypatch, 2)
    # an interrupted run with other settings is refused too; with its own it resumes
    refused(lambda: sft.run(sft_cfg(out, micro_base, *SFT_RUN, "train.warmup_steps=3")), "train.warmup_steps",
            "interrupted")
    resumed = sft.run(sft_cfg(out, micro_base, *SFT_RUN))
    assert without_wall_time(resumed) == without_wall_time(read_summary(straight))
    assert without_wall_time(read_summary(out)) == without_wall_time(read_summary(straight))
    assert_same_weights(straight, out)


KILL_SCRIPT = """
import os, sys, time
import torch
torch.set_num_threads(int(os.environ["TEST_THREADS"]))
import rlhf.outputs
write_json = rlhf.outputs.write_json

def pause_before_summary(path, data):  # the test kills the process here: after the last checkpoint, before summary
    if os.path.basename(path) == "summary.json":
        open(os.environ["TEST_PAUSED"], "w").close()
        time.sleep(600)
    return write_json(path, data)

rlhf.outputs.write_json = pause_before_summary
from rlhf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_between_the_last_checkpoint_and_summary_then_the_lock_and_resume(tmp_path, straight, micro_base,
                                                                                 capsys):
    out = str(tmp_path / "sft")
    paused = tmp_path / "paused"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(TEST_THREADS=str(torch.get_num_threads()), TEST_PAUSED=str(paused))
    log = open(tmp_path / "child.log", "w")
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, "sft", "configs/tiny/sft.yaml",
                              *sft_args(out, micro_base, *SFT_RUN)], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while not paused.exists():
            assert child.poll() is None, open(tmp_path / "child.log").read()[-3000:]
            assert time.time() < deadline, "the child never reached summary.json"
            time.sleep(0.2)
        ckpts = os.path.join(out, "checkpoints")
        assert os.path.exists(os.path.join(ckpts, "checkpoint-4", H.COMPLETE))
        assert not os.path.exists(os.path.join(out, "summary.json"))
        # a second run while the first holds the directory fails at once, naming the holder's pid
        t0 = time.time()
        refused(lambda: sft.run(sft_cfg(out, micro_base, *SFT_RUN)), f"pid {child.pid}", "in use")
        assert time.time() - t0 < 30
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    assert child.returncode == -signal.SIGKILL and not os.path.exists(os.path.join(out, "summary.json"))
    capsys.readouterr()
    # the killed run's lock is stale (its pid is gone): taken over with a warning; other settings are refused
    refused(lambda: sft.run(sft_cfg(out, micro_base, *SFT_RUN, "train.learning_rate=5e-4")), "train.learning_rate")
    err = capsys.readouterr().err
    assert "taking over the lock" in err and f"pid {child.pid}" in err
    # with its own settings it resumes from checkpoint-4 and ends exactly where the uninterrupted run ended
    resumed = sft.run(sft_cfg(out, micro_base, *SFT_RUN, "run.save_total_limit=3"))
    assert "resuming from" in capsys.readouterr().out
    assert resumed["steps"] == 4
    assert without_wall_time(read_summary(out)) == without_wall_time(read_summary(straight))
    assert_same_weights(straight, out)
    assert os.path.exists(os.path.join(ckpts, "checkpoint-4", H.COMPLETE)), "the final checkpoint was rotated away"
    assert not os.path.exists(os.path.join(out, "rlhf.lock"))
    before = snapshot(out)
    assert sft.run(sft_cfg(out, micro_base, *SFT_RUN)) == read_summary(out)
    assert snapshot(out) == before


def test_rm_resume_ends_with_the_uninterrupted_summary_despite_a_torn_metrics_line(tmp_path, micro_sft,
                                                                                   monkeypatch, capsys):
    def cfg(out):
        return load_config(RMStageConfig, "configs/tiny/rm.yaml", [
            f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false", "train.max_steps=3",
            "run.save_steps=2", "run.logging_steps=1", "data.max_train_pairs=24", "deepspeed.global_batch_size=8",
            "data.test_file=data/preferences/test.jsonl", "train.learning_rate=1e-3"])

    straight_rm = str(tmp_path / "straight")
    rm.run(cfg(straight_rm))
    out = str(tmp_path / "resumed")
    interrupt(rm.run, cfg(out), monkeypatch, 2)
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "loss": 0.6')  # a write cut short by the crash
    capsys.readouterr()
    resumed = rm.run(cfg(out))
    assert "torn last line" in capsys.readouterr().err
    assert without_wall_time(resumed) == without_wall_time(read_summary(straight_rm))
    assert_same_weights(straight_rm, out)


def test_ppo_resume_keeps_the_start_of_run_figures_of_the_summary(tmp_path, micro_sft, micro_rm, monkeypatch):
    def cfg(out):
        return load_config(PPOStageConfig, "configs/tiny/ppo.yaml", [
            f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false", "reward.model=",
            "reward.function=tests.rewards:supportive_words", f"critic.model={micro_rm}", "ppo.iterations=2",
            "ppo.rollout_batch_size=8", "ppo.mini_batch_size=8", "ppo.ptx_coef=0.5", "generation.max_new_tokens=8",
            "data.heldout_prompt_file=", "data.ptx_eval_file=data/pretrain/heldout.txt", "run.save_steps=1",
            "ppo.gold_rubric="])

    straight_ppo = str(tmp_path / "straight")
    ppo.run(cfg(straight_ppo))
    assert "ptx_heldout_loss_start" in read_summary(straight_ppo)
    out = str(tmp_path / "resumed")
    interrupt(ppo.run, cfg(out), monkeypatch, 1)
    ppo.run(cfg(out))
    assert without_wall_time(read_summary(out)) == without_wall_time(read_summary(straight_ppo))


# ---- 8. the output directory guard ---------------------------------------------------------------------------


def test_foreign_files_are_refused_and_run_overwrite_writes_anyway(tmp_path, micro_base):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    (out / "metrics.jsonl").write_text("not rlhf's\n")
    refused(lambda: sft.run(sft_cfg(out, micro_base, "train.max_steps=1")), "notes.txt", "run.overwrite=true")
    assert sorted(os.listdir(out)) == ["metrics.jsonl", "notes.txt"]
    s = sft.run(sft_cfg(out, micro_base, "train.max_steps=1", "run.overwrite=true"))
    assert s["steps"] == 1 and (out / "notes.txt").read_text() == "my notes\n"
    assert "not rlhf's" not in (out / "metrics.jsonl").read_text()


def test_an_output_dir_that_is_an_input_is_refused(tmp_path, micro_base, micro_sft, micro_rm):
    guarded = {p: snapshot(p) for p in (micro_base, micro_sft, micro_rm)}
    refused(lambda: sft.run(sft_cfg(micro_base, micro_base)), "model.name_or_path", "overwrite its input")

    def ppo_cfg(out, *extra):
        return load_config(PPOStageConfig, "configs/tiny/ppo.yaml", [
            f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false", *extra])

    refused(lambda: ppo.run(ppo_cfg(micro_rm, f"reward.model={micro_rm}")), "reward.model")
    refused(lambda: ppo.run(ppo_cfg(micro_base, "reward.model=", "reward.function=tests.rewards:supportive_words",
                                    f"critic.model={micro_base}")), "critic.model")
    # an input inside the output directory would be overwritten too (PPO writes OUT/critic)
    shutil.copytree(micro_rm, tmp_path / "outer" / "rm")
    refused(lambda: ppo.run(ppo_cfg(tmp_path / "outer", f"reward.model={tmp_path / 'outer' / 'rm'}")), "reward.model",
            "overlaps")
    refused(lambda: ev.run(load_config(EvalStageConfig, "configs/tiny/eval.yaml", [
        f"run.output_dir={micro_sft}", f"models={json.dumps({'sft': micro_sft, 'base': micro_base})}",
        "eval.judges=[rubric]"])), "models.sft")
    tok = tmp_path / "tok"
    shutil.copytree(os.path.join(ROOT, "data/tokenizer"), tok)
    refused(lambda: sft.run(sft_cfg(tok, micro_base, f"model.tokenizer={tok}")), "model.tokenizer")
    assert {p: snapshot(p) for p in guarded} == guarded


def test_another_stages_run_is_refused_before_anything_is_written_also_without_a_marker(tmp_path, straight,
                                                                                       micro_base, micro_sft):
    def rm_into(out):
        return lambda: rm.run(load_config(RMStageConfig, "configs/tiny/rm.yaml", [
            f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false"]))

    before = snapshot(straight)
    refused(rm_into(straight), "sft run", "not a rm run")
    assert snapshot(straight) == before
    # a run directory written before rlhf_run.json existed (config.yaml + summary.json): still recognised
    legacy = str(tmp_path / "legacy")
    shutil.copytree(straight, legacy)
    os.remove(os.path.join(legacy, "rlhf_run.json"))
    before = snapshot(legacy)
    refused(rm_into(legacy), "sft run")
    assert sft.run(sft_cfg(legacy, micro_base, *SFT_RUN)) == read_summary(straight)
    assert snapshot(legacy) == before


def test_pipeline_refuses_a_finished_stage_whose_settings_changed(tmp_path, monkeypatch):
    from rlhf.outputs import save_config, write_json

    def stand_in(cfg):  # writes what a stage writes at its start and end
        os.makedirs(cfg.run.output_dir, exist_ok=True)
        save_config(cfg.run.output_dir, cfg)
        write_json(os.path.join(cfg.run.output_dir, "summary.json"), {"stage": "sft"})

    monkeypatch.setattr(sft, "run", stand_in)
    stage = {"name": "sft", "command": "sft", "config": "configs/tiny/sft.yaml",
             "overrides": ["model.name_or_path=someone/model", "train.max_steps=2"]}
    path = tmp_path / "pipe.yaml"

    def pipe(**kw):
        path.write_text(json.dumps({"run_dir": str(tmp_path / "run"), "stages": [{**stage, **kw}],
                                    "overrides": ["run.progress=false"]}))
        return load_config(PipelineConfig, str(path))

    pipeline.run(pipe())
    assert pipeline.run(pipe())["stages"]["sft"]["skipped"]
    refused(lambda: pipeline.run(pipe(overrides=["model.name_or_path=someone/model", "train.max_steps=3"])),
            "train.max_steps: 2 -> 3")


# ---- 9. torn metrics lines ------------------------------------------------------------------------------------


def test_a_torn_last_metrics_line_is_dropped_and_a_bad_earlier_line_is_named(tmp_path, capsys):
    from rlhf.outputs import MetricsLog, read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = MetricsLog(str(tmp_path), resume_step=2)
    assert "torn last line" in capsys.readouterr().err
    log.log(3, {"loss": 1.0})
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3]
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    refused(lambda: MetricsLog(str(tmp_path), resume_step=3), f"{path}:2", "line 2")


# ---- 12. resume from any checkpoint directory; failed starts; an output dir that is a file ---------------------


def test_run_resume_takes_a_checkpoint_directory_of_any_name(tmp_path, straight, micro_base):
    saved = os.path.join(os.path.dirname(straight), "midway")  # checkpoint-2 of the straight run, renamed
    out = str(tmp_path / "continued")
    s = sft.run(sft_cfg(out, micro_base, *SFT_RUN, f"run.resume={saved}"))
    assert s["steps"] == 4 and without_wall_time(s) == without_wall_time(read_summary(straight))
    assert_same_weights(straight, out)
    steps = [json.loads(x)["step"] for x in open(os.path.join(out, "metrics.jsonl"))]
    assert steps and min(steps) > 2  # the log starts after the resumed step


def test_a_failed_start_leaves_nothing_behind(tmp_path, micro_base, micro_sft):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi", "completion": ""}) + "\n")
    out = tmp_path / "new"
    with pytest.raises(Exception, match="bad.jsonl"):
        sft.run(sft_cfg(out, micro_base, f"data.train_file={bad}"))
    assert not out.exists()
    out.mkdir()
    with pytest.raises(Exception, match="bad.jsonl"):
        sft.run(sft_cfg(out, micro_base, f"data.train_file={bad}"))
    assert os.listdir(out) == []
    with pytest.raises(Exception, match="nope"):
        ppo.run(load_config(PPOStageConfig, "configs/tiny/ppo.yaml", [
            f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false", "reward.model=",
            "reward.function=tests.rewards:nope", f"critic.model={micro_sft}"]))
    assert os.listdir(out) == []


def test_an_output_dir_that_is_a_file_is_one_error_line(tmp_path, micro_base, capsys):
    f = tmp_path / "out"
    f.write_text("a file\n")
    code = cli_main(["sft", "configs/tiny/sft.yaml", f"run.output_dir={f}", f"model.name_or_path={micro_base}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: run.output_dir:") and str(f) in err[0], err
    assert f.read_text() == "a file\n"
