"""No checkpoint or model file we load runs code.

Each file kind a resume reads is replaced by a pickle that would create a marker file when unpickled; resuming must
refuse it with a CheckpointError naming the file, and the marker must not exist. Untampered checkpoints of the
ZeRO stages whose files hold DeepSpeed objects still resume. A model directory with pickle weights only is one
clear error and is never unpickled.
"""

from __future__ import annotations

import glob
import os
import shutil

import pytest
import torch

from rlhf.config import PretrainStageConfig, RMStageConfig, SFTStageConfig, load_config
from rlhf.errors import CheckpointError
from rlhf.stages import pretrain, rm, sft

from .conftest import ROOT


class Payload:
    """Unpickling this creates ``marker``: what a crafted checkpoint would do with any code it likes."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tamper(path: str, marker: str) -> None:
    """Slip the payload into ``path`` (a file our own run wrote), keeping everything else it holds."""
    obj = torch.load(path, weights_only=False, map_location="cpu") if os.path.exists(path) else {}
    if isinstance(obj, dict):
        obj["extra"] = Payload(marker)
    else:  # e.g. training_args.bin, a pickled TrainingArguments
        obj = Payload(marker)
    torch.save(obj, path)


def resume_refused(run, out: str, path: str, marker: str) -> None:
    with pytest.raises(CheckpointError) as e:
        run()
    assert path in str(e.value) and "refused as unsafe" in str(e.value)
    assert not os.path.exists(marker), "the checkpoint's pickle ran"
    assert not os.path.exists(os.path.join(out, "summary.json"))


# ---- our engine loop (pretrain; PPO resumes through the same load_checkpoint) ---------------------------------


def pretrain_cfg(out, micro_model_config, zero, precision, *extra):
    return load_config(
        PretrainStageConfig, os.path.join(ROOT, "configs/tiny/pretrain.yaml"),
        [f"run.output_dir={out}", f"model.from_config={micro_model_config}", "run.progress=false",
         "data.block_size=32", "deepspeed.global_batch_size=4", "deepspeed.micro_batch_size=4", "train.warmup_steps=1",
         "run.save_steps=1", f"deepspeed.zero_stage={zero}", f"deepspeed.precision={precision}", *extra],
    )


ENGINE_RUNS = {"zero2-bf16": (2, "bf16"), "zero3-fp32": (3, "fp32")}


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory, micro_model_config) -> dict[str, str]:
    """One finished 1-step pretrain run per ZeRO setting, with its checkpoint step-1."""
    runs = {}
    for name, (zero, precision) in ENGINE_RUNS.items():
        out = str(tmp_path_factory.mktemp(name))
        pretrain.run(pretrain_cfg(out, micro_model_config, zero, precision, "train.max_steps=1"))
        runs[name] = out
    return runs


ENGINE_FILES = [
    ("zero2-bf16", "mp_rank_00_model_states.pt"),
    ("zero2-bf16", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"),
    ("zero3-fp32", "zero_pp_rank_0_mp_rank_00_model_states.pt"),
    ("zero3-fp32", "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
]


def as_interrupted(out: str, max_steps: int = 2) -> None:
    """Make a copied finished 1-step run look like a 2-step run interrupted after its step-1 checkpoint: no summary,
    and the saved config asks for ``max_steps`` (the run directory refuses a resume with other settings)."""
    import yaml

    os.remove(os.path.join(out, "summary.json"))
    path = os.path.join(out, "config.yaml")
    with open(path) as f:
        saved = yaml.safe_load(f)
    saved["train"]["max_steps"] = max_steps
    with open(path, "w") as f:
        yaml.safe_dump(saved, f, sort_keys=False)


@pytest.mark.parametrize("run_name,filename", ENGINE_FILES)
@pytest.mark.parametrize("resume", ["auto", "path"])
def test_engine_resume_refuses_a_pickle_in_any_checkpoint_file(tmp_path, engine_runs, micro_model_config, run_name,
                                                               filename, resume):
    out, marker = str(tmp_path / "run"), str(tmp_path / "pwned")
    shutil.copytree(engine_runs[run_name], out)
    as_interrupted(out)
    ckpt = os.path.join(out, "checkpoints", "step-1")
    path = os.path.join(ckpt, "model", filename)
    assert sorted(os.listdir(os.path.join(ckpt, "model"))) == sorted(f for r, f in ENGINE_FILES if r == run_name)
    tamper(path, marker)
    zero, precision = ENGINE_RUNS[run_name]
    cfg = pretrain_cfg(out, micro_model_config, zero, precision, "train.max_steps=2",
                       f"run.resume={ckpt if resume == 'path' else 'auto'}")
    resume_refused(lambda: pretrain.run(cfg), out, path, marker)


@pytest.mark.parametrize("run_name", list(ENGINE_RUNS))
def test_engine_resume_of_untampered_zero_checkpoints_still_works(tmp_path, engine_runs, micro_model_config,
                                                                   run_name):
    """ZeRO-1/2/3 optimizer states hold DeepSpeed objects (loss scaler, stage enum, fragment addresses): the
    allow-list must admit exactly those."""
    out = str(tmp_path / "run")
    shutil.copytree(engine_runs[run_name], out)
    as_interrupted(out)
    zero, precision = ENGINE_RUNS[run_name]
    summary = pretrain.run(pretrain_cfg(out, micro_model_config, zero, precision, "train.max_steps=2"))
    assert summary["steps"] == 2
    assert os.path.isdir(os.path.join(out, "checkpoints", "step-2"))


def test_cli_prints_a_refused_checkpoint_as_one_error_line(tmp_path, engine_runs, micro_model_config, capsys):
    from rlhf.cli import main

    out, marker = str(tmp_path / "run"), str(tmp_path / "pwned")
    shutil.copytree(engine_runs["zero2-bf16"], out)
    as_interrupted(out)
    path = os.path.join(out, "checkpoints", "step-1", "model", "mp_rank_00_model_states.pt")
    tamper(path, marker)
    code = main(["pretrain", "configs/tiny/pretrain.yaml", f"run.output_dir={out}",
                 f"model.from_config={micro_model_config}", "run.progress=false", "data.block_size=32",
                 "deepspeed.global_batch_size=4", "deepspeed.micro_batch_size=4", "train.warmup_steps=1",
                 "deepspeed.zero_stage=2", "deepspeed.precision=bf16", "train.max_steps=2"])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {path}: refused as unsafe" in err and "Traceback" not in err
    assert not os.path.exists(marker)


def test_allow_list_admits_deepspeed_records_and_nothing_else(tmp_path):
    """fp16 (GPU only, so not in the runs above) stores a DynamicLossScaler in the ZeRO optimizer states."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler

    from rlhf.engine.safeload import safe_loading

    f = str(tmp_path / "states.pt")
    torch.save({"loss_scaler": DynamicLossScaler(2.0**16, 1000, 1, 2, False, dtype=torch.float16)}, f)
    with safe_loading():
        scaler = torch.load(f, weights_only=False)["loss_scaler"]  # the caller's weights_only=False is overridden
    assert isinstance(scaler, DynamicLossScaler) and scaler.cur_scale == 2.0**16 and scaler.dtype == torch.float16
    tamper(f, str(tmp_path / "pwned"))
    with safe_loading(), pytest.raises(CheckpointError, match="needs io.open"):
        torch.load(f, weights_only=False)
    assert not os.path.exists(tmp_path / "pwned")
    assert torch.load is torch.serialization.load and torch.load.__module__ == "torch.serialization"


# ---- the Trainer path (SFT, RM: TRL trainers on the DeepSpeed engine) -------------------------------------------


def sft_cfg(out, base, zero, *extra):
    return load_config(
        SFTStageConfig, os.path.join(ROOT, "configs/tiny/sft.yaml"),
        [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", "run.save_steps=1",
         "data.eval_fraction=0.0", "deepspeed.global_batch_size=4", "deepspeed.micro_batch_size=4",
         "train.warmup_steps=1", f"deepspeed.zero_stage={zero}", *extra],
    )


def rm_cfg(out, base, zero, *extra):
    return load_config(
        RMStageConfig, os.path.join(ROOT, "configs/tiny/rm.yaml"),
        [f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false", "run.save_steps=1",
         "deepspeed.global_batch_size=4", "deepspeed.micro_batch_size=4", "train.warmup_steps=1",
         f"deepspeed.zero_stage={zero}", *extra],
    )


STAGES = {"sft": (sft, sft_cfg), "rm": (rm, rm_cfg)}
TRAINER_RUNS = {"sft-zero0": ("sft", 0), "sft-zero2": ("sft", 2), "rm-zero2": ("rm", 2)}


@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory, micro_base) -> dict[str, str]:
    """One finished 1-step run per stage and ZeRO setting, with its checkpoint-1."""
    runs = {}
    for name, (stage, zero) in TRAINER_RUNS.items():
        module, cfg = STAGES[stage]
        out = str(tmp_path_factory.mktemp(name))
        module.run(cfg(out, micro_base, zero, "train.max_steps=1"))
        runs[name] = out
    return runs


def copy_run(src: str, out: str) -> str:
    shutil.copytree(src, out)
    as_interrupted(out)
    return os.path.join(out, "checkpoints", "checkpoint-1")


TRAINER_FILES = [
    ("sft-zero0", "global_step1/mp_rank_00_model_states.pt"),
    ("sft-zero0", "rng_state.pth"),
    ("sft-zero0", "scheduler.pt"),
    ("sft-zero2", "global_step1/mp_rank_00_model_states.pt"),
    ("sft-zero2", "global_step1/zero_pp_rank_0_mp_rank_00_optim_states.pt"),
    ("rm-zero2", "global_step1/mp_rank_00_model_states.pt"),
    ("rm-zero2", "global_step1/zero_pp_rank_0_mp_rank_00_optim_states.pt"),
    ("rm-zero2", "rng_state.pth"),
    ("rm-zero2", "scheduler.pt"),
]


@pytest.mark.parametrize("run_name,filename", TRAINER_FILES)
def test_trainer_resume_refuses_a_pickle_in_any_checkpoint_file(tmp_path, trainer_runs, micro_base, run_name,
                                                                filename):
    out, marker = str(tmp_path / "run"), str(tmp_path / "pwned")
    ckpt = copy_run(trainer_runs[run_name], out)
    pickles = {os.path.relpath(p, ckpt) for p in glob.glob(os.path.join(ckpt, "**", "*"), recursive=True)
               if p.endswith((".pt", ".pth", ".bin"))}
    tested = {f for _, f in TRAINER_FILES} | {"training_args.bin"}  # training_args.bin is never read: test below
    assert filename in pickles and pickles <= tested, "a checkpoint file kind has no test"
    path = os.path.join(ckpt, filename)
    tamper(path, marker)
    stage, zero = TRAINER_RUNS[run_name]
    module, cfg = STAGES[stage]
    resume_refused(lambda: module.run(cfg(out, micro_base, zero, "train.max_steps=2")), out, path, marker)


def test_trainer_resume_never_reads_training_args_or_an_optimizer_pickle(tmp_path, trainer_runs, micro_base):
    """training_args.bin (a pickled SFTConfig) is written but not read on resume; DeepSpeed keeps the optimizer in
    its own files, so an optimizer.pt beside them is not read either."""
    out, marker = str(tmp_path / "run"), str(tmp_path / "pwned")
    ckpt = copy_run(trainer_runs["sft-zero0"], out)
    tamper(os.path.join(ckpt, "training_args.bin"), marker)
    tamper(os.path.join(ckpt, "optimizer.pt"), marker)
    summary = sft.run(sft_cfg(out, micro_base, 0, "train.max_steps=2"))
    assert summary["steps"] == 2 and not os.path.exists(marker)


@pytest.mark.parametrize("run_name", ["sft-zero2", "rm-zero2"])
def test_trainer_resume_of_untampered_zero_checkpoints_still_works(tmp_path, trainer_runs, micro_base, run_name):
    out = str(tmp_path / "run")
    copy_run(trainer_runs[run_name], out)
    stage, zero = TRAINER_RUNS[run_name]
    module, cfg = STAGES[stage]
    summary = module.run(cfg(out, micro_base, zero, "train.max_steps=2"))
    assert summary["steps"] == 2


# ---- model loading: safetensors only ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pickle_only_model(tmp_path_factory, micro_base) -> tuple[str, str]:
    """The micro base with its weights in pytorch_model.bin only, a pickle that would create a marker file."""
    from safetensors.torch import load_file

    d = tmp_path_factory.mktemp("pickle_model")
    for name in os.listdir(micro_base):
        if name.endswith((".json", ".jinja")) and name != "summary.json":
            shutil.copy(os.path.join(micro_base, name), d / name)
    marker = str(d.parent / f"{d.name}-pwned")
    state = dict(load_file(os.path.join(micro_base, "model.safetensors")))
    torch.save({**state, "payload": Payload(marker)}, d / "pytorch_model.bin")
    return str(d), marker


def _loaders():
    from types import SimpleNamespace

    from rlhf.config import ModelConfig
    from rlhf.models import importer
    from rlhf.models.loading import load_causal_lm
    from rlhf.models.reward import RewardScorer, load_reward_backbone
    from rlhf.stages import eval as eval_stage
    from rlhf.tools import analyze, label

    return {
        "load_causal_lm": lambda p, tmp: load_causal_lm(ModelConfig(name_or_path=p)),
        "load_reward_backbone": lambda p, tmp: load_reward_backbone(ModelConfig(name_or_path=p), None),
        "RewardScorer.from_dir": lambda p, tmp: RewardScorer.from_dir(p),
        "model import": lambda p, tmp: importer.import_model(p, str(tmp / "imported")),
        "eval load_policy": lambda p, tmp: eval_stage.load_policy(p, "float32", "cpu"),
        "analyze load_model": lambda p, tmp: analyze.load_model(p, "cpu"),
        "label llm judge": lambda p, tmp: label.make_judge(SimpleNamespace(judge="llm", model=p)),
    }


@pytest.mark.parametrize("loader", ["load_causal_lm", "load_reward_backbone", "RewardScorer.from_dir", "model import",
                                    "eval load_policy", "analyze load_model", "label llm judge"])
def test_a_model_dir_with_only_pickle_weights_is_refused_unread(tmp_path, pickle_only_model, loader):
    path, marker = pickle_only_model
    with pytest.raises(CheckpointError) as e:
        _loaders()[loader](path, tmp_path)
    assert str(e.value).startswith(f"{path}: its weights are only in pytorch_model.bin")
    assert "safetensors only" in str(e.value)
    assert not os.path.exists(marker)


def test_a_model_dir_without_weights_is_one_error(tmp_path, pickle_only_model):
    from rlhf.config import ModelConfig
    from rlhf.models.loading import load_causal_lm

    d = tmp_path / "no_weights"
    shutil.copytree(pickle_only_model[0], d, ignore=shutil.ignore_patterns("*.bin"))
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        load_causal_lm(ModelConfig(name_or_path=str(d)))


def test_cli_refuses_pickle_weights_with_one_error_line(tmp_path, pickle_only_model, capsys):
    from rlhf.cli import main

    path, marker = pickle_only_model
    code = main(["model", "import", path, str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {path}: its weights are only in pytorch_model.bin")
    assert "Traceback" not in err and not os.path.exists(marker) and not os.path.exists(tmp_path / "out")
