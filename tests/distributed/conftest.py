"""Session fixtures of the distributed tests: single-process reference runs of every stage, which double as the
inputs of the next stage (base -> SFT and RM -> PPO; SFT -> DPO), and a cache of the multi-process runs.

The references run as subprocesses through launch/single.sh with one thread, like each rank of a 2-process job.
They are not the in-process micro_base / micro_sft / micro_rm of tests/conftest.py: a reference must be a run
with exactly the tiny arguments of tests/distributed/runner.py, and building those models in the pytest process
(two threads on the 2 shared cores) took over four minutes here against under a minute for these. The micro
model config (tests/conftest.py MICRO_MODEL) is shared.
"""

from __future__ import annotations

import json
import os

import pytest

from . import runner as R


@pytest.fixture(scope="session")
def dist_data(tmp_path_factory) -> dict[str, str]:
    """Small held-out files: 16 preference pairs (RM test set) and a few documents of held-out text (ptx eval)."""
    d = tmp_path_factory.mktemp("dist_data")
    pairs = d / "pairs.jsonl"
    with open(os.path.join(R.ROOT, "data/preferences/test.jsonl")) as f:
        pairs.write_text("".join(f.readlines()[:16]))
    text = d / "heldout.txt"
    with open(os.path.join(R.ROOT, "data/pretrain/heldout.txt")) as f:
        text.write_text("\n\n".join(f.read().split("\n\n")[:12]))
    return {"pairs": str(pairs), "text": str(text)}


@pytest.fixture(scope="session")
def ref_pretrain(tmp_path_factory, micro_model_config) -> str:
    """1 process (launch/single.sh), ZeRO-0: the pretrain reference and the base model of SFT and RM."""
    out = str(tmp_path_factory.mktemp("ref_pretrain"))
    R.run_stage("pretrain", "configs/tiny/pretrain.yaml", R.pretrain_args(out, micro_model_config), 1, "single")
    return out


@pytest.fixture(scope="session")
def ref_sft(tmp_path_factory, ref_pretrain) -> str:
    out = str(tmp_path_factory.mktemp("ref_sft"))
    R.run_stage("sft", "configs/tiny/sft.yaml", R.sft_args(out, ref_pretrain), 1, "single")
    return out


@pytest.fixture(scope="session")
def ref_rm(tmp_path_factory, ref_pretrain, dist_data) -> str:
    out = str(tmp_path_factory.mktemp("ref_rm"))
    R.run_stage("rm", "configs/tiny/rm.yaml", R.rm_args(out, ref_pretrain, dist_data["pairs"]), 1, "single")
    return out


@pytest.fixture(scope="session")
def ref_dpo(tmp_path_factory, ref_sft, dist_data) -> str:
    out = str(tmp_path_factory.mktemp("ref_dpo"))
    R.run_stage("dpo", "configs/tiny/dpo.yaml", R.dpo_args(out, ref_sft, dist_data["pairs"]), 1, "single")
    return out


@pytest.fixture(scope="session")
def ref_ppo(tmp_path_factory, ref_sft, ref_rm, dist_data) -> str:
    out = str(tmp_path_factory.mktemp("ref_ppo"))
    R.run_stage("ppo", "configs/tiny/ppo.yaml", R.ppo_args(out, ref_sft, ref_rm, dist_data["text"]), 1, "single")
    return out


# the ZeRO-3 run of each stage goes through a different launcher, so every recipe runs for real at least once
ZERO3_LAUNCHER = {"pretrain": "multi_gpu", "sft": "accelerate", "rm": "torchrun", "dpo": "torchrun", "ppo": "deepspeed"}


NEEDS = {"pretrain": (), "sft": ("pretrain",), "rm": ("pretrain",), "dpo": ("sft",), "ppo": ("sft", "rm")}


@pytest.fixture(scope="session")
def zero_run(tmp_path_factory, micro_model_config, dist_data):
    """``zero_run(stage, zero_stage, request)`` -> (output dir, console output) of a 2-process run of ``stage``,
    started once per session; ``request`` (the test's) provides the reference models it starts from."""
    cache: dict[tuple[str, int], tuple[str, str]] = {}

    def get(stage: str, zero: int, request) -> tuple[str, str]:
        if (stage, zero) not in cache:
            out = str(tmp_path_factory.mktemp(f"{stage}_zero{zero}"))
            ref = {name: request.getfixturevalue(f"ref_{name}") for name in NEEDS[stage]}
            config = f"configs/tiny/{stage}.yaml"
            args = R.stage_args(stage, out, ref, micro_model_config, dist_data)
            launcher = ZERO3_LAUNCHER[stage] if zero == 3 else "torchrun"
            log = R.run_stage(stage, config, [*args, f"deepspeed.zero_stage={zero}"], 2, launcher)
            cache[stage, zero] = (out, log)
        return cache[stage, zero]

    return get


def summary(out: str) -> dict:
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def metrics(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f]
