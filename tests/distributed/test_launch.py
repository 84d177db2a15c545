"""launch/ recipes: every script parses, prints its usage without arguments, and single.sh runs a tiny stage.
(multi_gpu.sh with torchrun and with the DeepSpeed launcher, and accelerate.sh, run the ZeRO-3 jobs of
test_zero_equivalence.py; multi_node.sh and slurm.sbatch need several machines and are only parsed here.)"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from . import runner as R
from .conftest import summary

pytestmark = pytest.mark.distributed

SCRIPTS = ["single.sh", "multi_gpu.sh", "accelerate.sh", "multi_node.sh", "slurm.sbatch"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_prints_usage(script):
    path = os.path.join(R.ROOT, "launch", script)
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    with open(path) as f:
        text = f.read()
    assert "set -euo pipefail" in text and "Usage:" in text and "STAGE CONFIG" in text
    res = subprocess.run(["bash", path], capture_output=True, text=True, env=R.job_env())
    assert res.returncode == 2 and "Usage:" in res.stderr, res.stderr


def test_accelerate_configs_are_zero2_and_zero3():
    for z in (2, 3):
        with open(os.path.join(R.ROOT, "configs", "accelerate", f"zero{z}.yaml")) as f:
            cfg = yaml.safe_load(f)
        assert cfg["distributed_type"] == "DEEPSPEED" and cfg["deepspeed_config"]["zero_stage"] == z


def test_single_sh_runs_a_tiny_stage(ref_pretrain):
    # the pretrain reference of the distributed tests is launched by launch/single.sh
    s = summary(ref_pretrain)
    assert s["steps"] == 4 and s["train_loss"] > 0
    assert os.path.exists(os.path.join(ref_pretrain, "model.safetensors"))
    assert os.path.isdir(os.path.join(ref_pretrain, "checkpoints", "step-4"))
