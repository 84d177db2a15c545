"""Non-finite training: every trainable stage stops at the first non-finite loss, gradient or weight with an error
naming the step, keeps the last good checkpoint (never writes one with non-finite weights, never rotates the good
one away) and writes no summary.json and no final model; configs refuse nan/inf numbers and preference data
refuses non-finite margins, with file and line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import typing

import pytest
import torch

from rlhf import cli
from rlhf.config import STAGES, ConfigError, PipelineConfig, load_config
from rlhf.data.formats import DataError
from rlhf.errors import TrainingError

from .conftest import ROOT, TOKENIZER

CATEGORIES = os.path.join(ROOT, "data/palms/categories.yaml")


def float_keys(cls: type, prefix: str = "") -> list[str]:
    """Every float field of a config class, recursively (dotted keys)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += float_keys(tp, f"{prefix}{f.name}.")
        elif tp is float:
            keys.append(prefix + f.name)
    return keys


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors.values())


def step_of(message: str) -> int:
    m = re.search(r"non-finite .* at optimizer step (\d+)", message)
    assert m, message
    return int(m.group(1))


# ---- config: nan / inf refused for every float key, with the key named ----------------------------------------


STAGE_FLOATS = [(name, key) for name, cls in STAGES.items() for key in float_keys(cls)]


def test_every_stage_has_float_keys_to_check():
    assert len(STAGE_FLOATS) > 30 and ("pretrain", "train.learning_rate") in STAGE_FLOATS
    assert ("ppo", "ppo.kl_coef") in STAGE_FLOATS and ("rm", "reward.center_rewards_coefficient") in STAGE_FLOATS


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", ".nan", "-.inf", "1e400"])
def test_config_refuses_nonfinite_learning_rate(value):
    with pytest.raises(ConfigError) as e:
        load_config(STAGES["sft"], os.path.join(ROOT, "configs/tiny/sft.yaml"), [f"train.learning_rate={value}"])
    assert "command-line override 'train.learning_rate'" in str(e.value) and "finite" in str(e.value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_config_refuses_nonfinite_value_for_every_float_key(value):
    for name, key in STAGE_FLOATS:
        with pytest.raises(ConfigError) as e:
            load_config(STAGES[name], os.path.join(ROOT, f"configs/tiny/{name}.yaml"), [f"{key}={value}"])
        assert f"'{key}'" in str(e.value) and "finite" in str(e.value), (name, key, str(e.value))
    for key in float_keys(PipelineConfig):
        with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
            load_config(PipelineConfig, os.path.join(ROOT, "configs/tiny/pipeline.yaml"), [f"{key}={value}"])


def test_config_file_nan_names_file_line_and_key(tmp_path):
    text = open(os.path.join(ROOT, "configs/tiny/rm.yaml")).read()
    assert "  learning_rate: 3.0e-4\n" in text
    path = tmp_path / "rm.yaml"
    path.write_text(text.replace("  learning_rate: 3.0e-4\n", "  learning_rate: .nan\n"))
    line = path.read_text().splitlines().index("  learning_rate: .nan") + 1
    with pytest.raises(ConfigError) as e:
        load_config(STAGES["rm"], str(path))
    assert str(e.value).startswith(f"{path}:{line}: key 'train.learning_rate'")


def test_cli_refuses_inf_learning_rate_with_one_error_line(tmp_path, micro_model_config, capsys):
    out = str(tmp_path / "p")
    assert cli.main(pretrain_args(out, micro_model_config, "train.learning_rate=inf", "train.max_steps=1")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "train.learning_rate" in lines[0] and "finite" in lines[0], err


# ---- preference data: non-finite margins refused with file:line -------------------------------------------------


def pref_file(tmp_path, margins: dict[int, str], n: int = 24) -> str:
    """The first ``n`` shipped training pairs; the 1-based lines in ``margins`` get that raw JSON margin."""
    with open(os.path.join(ROOT, "data/preferences/train.jsonl")) as f:
        rows = [json.loads(x) for x in f.readlines()[:n]]
    lines = []
    for i, row in enumerate(rows, start=1):
        text = json.dumps({**row, "margin": 1.0})
        if i in margins:
            text = text.replace('"margin": 1.0', f'"margin": {margins[i]}')
        lines.append(text)
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_data_check_refuses_nonfinite_margins(tmp_path, capsys):
    path = pref_file(tmp_path, {2: "NaN", 3: "Infinity", 5: "-Infinity"})
    assert cli.main(["data", "check", path, "--tokenizer", TOKENIZER]) == 1
    out = capsys.readouterr().out
    for line, shown in ((2, "nan"), (3, "inf"), (5, "-inf")):
        assert f"{path}:{line}: field 'margin' must be a finite number, got {shown}" in out, out
    assert f"{path}:4:" not in out

    from transformers import AutoTokenizer

    from rlhf.data.preference import load_preferences

    with pytest.raises(DataError) as e:
        load_preferences(path, AutoTokenizer.from_pretrained(TOKENIZER), {}, 512)
    assert [p.line for p in e.value.problems] == [2, 3, 5]


def test_rm_refuses_nan_margin_before_training(tmp_path, capsys, micro_base):
    path = pref_file(tmp_path, {7: "NaN"})
    out = str(tmp_path / "rm")
    code = cli.main(["rm", "configs/tiny/rm.yaml", f"run.output_dir={out}", f"model.name_or_path={micro_base}",
                     f"data.train_file={path}", "data.test_file=", "run.progress=false", "train.max_steps=2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
    assert f"{path}:7: field 'margin' must be a finite number" in err
    for name in ("summary.json", "reward_normalization.json", "model.safetensors"):
        assert not os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "checkpoints")) or not os.listdir(os.path.join(out, "checkpoints"))


# ---- the guard in the stages ----------------------------------------------------------------------------------


def pretrain_args(out: str, model_config: str, *extra: str) -> list[str]:
    return ["pretrain", "configs/tiny/pretrain.yaml", f"run.output_dir={out}", f"model.from_config={model_config}",
            "run.progress=false", "data.train_files=[data/pretrain/passages.txt]", "data.eval_file=",
            "data.block_size=64", "deepspeed.global_batch_size=8", "deepspeed.micro_batch_size=8",
            "train.warmup_steps=0", "train.max_steps=6", "run.logging_steps=1", "run.save_steps=1",
            "run.save_total_limit=1", *extra]


def assert_stopped_before_saving(out: str, step: int, ckpt_prefix: str) -> str:
    """No summary, no final model, and the only checkpoint is the one before the bad step; returns its path."""
    assert step >= 2, "the test needs a good step (and its checkpoint) before the bad one"
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert not os.path.exists(os.path.join(out, "model.safetensors"))
    ckpts = sorted(n for n in os.listdir(os.path.join(out, "checkpoints")) if n.startswith(ckpt_prefix))
    assert ckpts == [f"{ckpt_prefix}{step - 1}"], ckpts  # save_total_limit=1: the good one was not rotated away
    return os.path.join(out, "checkpoints", ckpts[0])


def test_pretrain_huge_lr_without_clipping_stops_at_the_bad_step(tmp_path, micro_model_config, capsys):
    out = str(tmp_path / "p")
    code = cli.main(pretrain_args(out, micro_model_config, "train.learning_rate=1e30", "deepspeed.gradient_clipping=0"))
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    step = step_of(lines[0])
    ckpt = assert_stopped_before_saving(out, step, "step-")
    assert ckpt in lines[0]
    steps = [json.loads(x)["step"] for x in open(os.path.join(out, "metrics.jsonl"))]
    assert max(steps) == step - 1  # the bad step was not logged either

    # the kept checkpoint holds finite weights (read as data only, as a resume reads it)
    import glob

    from rlhf.engine.safeload import safe_loading

    states = glob.glob(os.path.join(ckpt, "**", "*model_states.pt"), recursive=True)
    assert states, ckpt
    with safe_loading():
        module = torch.load(states[0], map_location="cpu")["module"]
    assert all_finite({k: v for k, v in module.items() if torch.is_tensor(v)})


@pytest.mark.parametrize("zero_stage,found", [(0, "gradient and weights"), (2, "gradient"), (3, "gradient")])
def test_pretrain_nan_gradient_with_finite_loss_under_clipping(tmp_path, micro_model_config, monkeypatch, zero_stage,
                                                                found):
    """A NaN gradient from the third backward on, with clipping on: the loss stays finite. ZeRO-0 clips with the
    NaN norm, which the engine now reports (record_grad_norm), and the weights turn NaN; ZeRO 1-3 skip the step and
    report an inf norm. Both stop at step 3."""
    import rlhf.stages.pretrain as P

    real = P.load_causal_lm
    calls = {"n": 0}

    def poison(g):
        calls["n"] += 1
        return g * float("nan") if calls["n"] >= 3 else g

    def load_poisoned(*a, **k):
        model = real(*a, **k)
        model.model.norm.weight.register_hook(poison)
        return model

    monkeypatch.setattr(P, "load_causal_lm", load_poisoned)
    out = str(tmp_path / "p")
    args = pretrain_args(out, micro_model_config, "train.learning_rate=1e-3", "deepspeed.gradient_clipping=1.0",
                         f"deepspeed.zero_stage={zero_stage}")
    cfg = load_config(STAGES["pretrain"], args[1], args[2:])
    with pytest.raises(TrainingError) as e:
        P.run(cfg)
    msg = str(e.value)
    assert step_of(msg) == 3 and f"non-finite {found}" in msg and "non-finite loss" not in msg, msg
    assert_stopped_before_saving(out, 3, "step-")


def hf_stage_args(out: str, base: str, *extra: str) -> list[str]:
    return [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", "train.warmup_steps=0",
            "train.max_steps=6", "run.logging_steps=1", "run.save_steps=1", "run.save_total_limit=1",
            "deepspeed.global_batch_size=4", "deepspeed.micro_batch_size=4", "train.gradient_checkpointing=false",
            "train.learning_rate=1e30", "deepspeed.gradient_clipping=0", *extra]


def test_sft_huge_lr_without_clipping_stops_at_the_bad_step(tmp_path, micro_base):
    from transformers import AutoModelForCausalLM

    from rlhf.stages import sft

    out = str(tmp_path / "sft")
    cfg = load_config(STAGES["sft"], os.path.join(ROOT, "configs/tiny/sft.yaml"), hf_stage_args(out, micro_base))
    with pytest.raises(TrainingError) as e:
        sft.run(cfg)
    step = step_of(str(e.value))
    assert str(e.value).startswith("sft: non-finite")
    ckpt = assert_stopped_before_saving(out, step, "checkpoint-")
    assert ckpt in str(e.value)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert all_finite(dict(model.named_parameters()))


def test_rm_huge_lr_without_clipping_stops_at_the_bad_step(tmp_path, micro_base):
    from transformers import AutoModelForSequenceClassification

    from rlhf.stages import rm

    out = str(tmp_path / "rm")
    cfg = load_config(STAGES["rm"], os.path.join(ROOT, "configs/tiny/rm.yaml"),
                      hf_stage_args(out, micro_base, "data.test_file=", "deepspeed.zero_stage=2"))
    with pytest.raises(TrainingError) as e:
        rm.run(cfg)
    step = step_of(str(e.value))
    assert str(e.value).startswith("rm: non-finite")
    ckpt = assert_stopped_before_saving(out, step, "checkpoint-")
    assert not os.path.exists(os.path.join(out, "reward_normalization.json"))
    model = AutoModelForSequenceClassification.from_pretrained(ckpt)
    assert all_finite(dict(model.named_parameters()))


# ---- the guard's own decisions -------------------------------------------------------------------------------


def test_guard_confirms_an_overflowing_sum_element_wise_and_skips_fp16_overflow():
    from rlhf.engine.guard import NonFiniteGuard

    guard = NonFiniteGuard("test", lambda: None)
    big = torch.nn.Linear(64, 64)
    with torch.no_grad():
        big.weight.fill_(3e38)  # finite, but the float32 sum overflows
    guard.check(1, big)
    NonFiniteGuard("test", lambda: None, fp16=True).check(2, big, grad_norm=float("inf"))  # the loss scaler's skip
    with pytest.raises(TrainingError, match="non-finite gradient at optimizer step 3"):
        guard.check(3, big, grad_norm=float("inf"))
    guard.observe_loss(torch.tensor(1.0))
    guard.observe_loss(torch.tensor(float("nan")))
    with pytest.raises(TrainingError, match="non-finite loss at optimizer step 4; .*No checkpoint had been written"):
        guard.check(4, big)
    guard.check(5, big)  # the flag is per step
    with torch.no_grad():
        big.bias[3] = math.inf
    big.weight.requires_grad_(False)
    with pytest.raises(TrainingError, match=r"non-finite weights \(after the update; the loss was finite\) at "
                                            r"optimizer step 6"):
        guard.check(6, big)
    big.bias.requires_grad_(False)
    guard.check(7, big)  # frozen weights are not trained, so not checked


# ---- two processes, ZeRO-3: one rank's partition goes bad, both ranks stop at that step ---------------------------


DRIVER = """
import os, sys
import rlhf.engine.core as core

real = core.wrap_trainable


def wrap(*a, **k):
    engine = real(*a, **k)
    step = engine.step
    count = {"n": 0}

    def poisoned_step(*sa, **sk):
        out = step(*sa, **sk)
        count["n"] += 1
        if count["n"] == 3 and int(os.environ["RANK"]) == 1:  # after optimizer step 3, on rank 1 only
            p = next(p for p in engine.module.parameters() if p.ds_tensor.numel())
            p.ds_tensor.data.view(-1)[0] = float("nan")
        return out

    engine.step = poisoned_step
    return engine


core.wrap_trainable = wrap
import rlhf.engine as E
E.wrap_trainable = wrap
from rlhf import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.distributed
def test_zero3_two_ranks_agree_to_stop(tmp_path, micro_model_config):
    from .distributed import runner as R

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = str(tmp_path / "p")
    args = pretrain_args(out, micro_model_config, "deepspeed.zero_stage=3", "deepspeed.micro_batch_size=4",
                         "train.learning_rate=1e-3")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(R.free_port()), str(driver), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=R.job_env(PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        raise AssertionError(f"the ranks did not stop together (hang):\n{log[-4000:]}") from None
    assert proc.returncode != 0
    # by match, not by line: the two ranks share one stderr, and print writes the text and its newline apart, so
    # the two messages can land on one line (seen once in a fresh-clone CI run)
    errors = re.findall(r"error: pretrain: non-finite weights .*? at optimizer step (\d+)", log)
    assert errors == ["3", "3"], log[-4000:]  # both ranks, step 3
    assert_stopped_before_saving(out, 3, "step-")


# ---- PPO: its own guard (ppo.max_nonfinite) ends in the same one-line error -----------------------------------------


def nan_reward(prompts: list[str], responses: list[str], categories: list[str | None]) -> list[float]:
    """A reward function that always fails: every score is NaN (reward.function=tests.test_faults_nonfinite:nan_reward)."""
    return [float("nan")] * len(responses)


def test_ppo_nonfinite_scores_end_in_one_error_line(tmp_path, micro_base):
    # a real process, as a user runs it: in-process, library loggers may hold a stream an earlier test closed
    out = str(tmp_path / "ppo")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([
        sys.executable, "-m", "rlhf.cli", "ppo", "configs/tiny/ppo.yaml", f"run.output_dir={out}", f"model.name_or_path={micro_base}",
        "reward.model=", "reward.function=tests.test_faults_nonfinite:nan_reward", f"critic.model={micro_base}",
        "run.progress=false", "data.heldout_prompt_file=", "data.ptx_eval_file=", "ppo.ptx_coef=0",
        "ppo.rollout_batch_size=4", "ppo.mini_batch_size=4", "deepspeed.micro_batch_size=4", "ppo.ppo_epochs=1",
        "generation.max_new_tokens=4", "ppo.penalize_missing_eos=false", "ppo.iterations=3", "ppo.max_nonfinite=2",
        "ppo.sample_every=1000",
    ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "ppo: 2 non-finite scores in a row (ppo.max_nonfinite) at iteration 2" in lines[0], err
    assert not os.path.exists(os.path.join(out, "summary.json"))
