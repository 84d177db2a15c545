"""SLURM for real on one machine: launch/slurm_local.sh starts munge, slurmctld and two slurmd "nodes" on
127.0.0.1; ``sbatch --nodes 2 launch/slurm.sbatch`` trains the micro pretrain stage with one task per node (each a
torchrun of one process, meeting through the c10d rendezvous) under ZeRO-3, to the weights of the one-process
run, and the job's model loads with plain transformers. Slow; skipped, saying why, only where SLURM cannot be set
up (not root, or the packages cannot be installed)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from . import runner as R

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (launch/slurm_local.sh starts system daemons)")
    state = tempfile.mkdtemp(prefix="rlhf-slurm-")  # not under pytest's 0700 directory: the daemons run as slurm
    env = R.job_env(STATE=state)
    proc = subprocess.run(["bash", "launch/slurm_local.sh"], cwd=R.ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 and not shutil.which("slurmctld"):
        pytest.skip(f"SLURM could not be installed here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield {**env, "SLURM_CONF": os.path.join(state, "slurm.conf")}
    subprocess.run(["bash", "launch/slurm_local.sh", "stop"], cwd=R.ROOT, env=env, timeout=60)
    shutil.rmtree(state, ignore_errors=True)


def test_sbatch_two_nodes_trains_like_one_process(slurm, ref_pretrain, micro_model_config, tmp_path):
    from transformers import AutoModelForCausalLM

    out = str(tmp_path / "pretrain")
    env = {**slurm, "GPUS_PER_NODE": "1", "MASTER_PORT": str(R.free_port())}
    cmd = ["sbatch", "--wait", "--nodes", "2", "--gpus-per-node=0", "--cpus-per-task=1", "--chdir", R.ROOT,
           "--output", str(tmp_path / "slurm-%j.out"), "launch/slurm.sbatch", "pretrain", "configs/tiny/pretrain.yaml",
           *R.pretrain_args(out, micro_model_config), "deepspeed.zero_stage=3"]
    proc = subprocess.run(cmd, cwd=R.ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = "".join(open(f).read() for f in glob.glob(str(tmp_path / "slurm-*.out")))
    assert proc.returncode == 0, proc.stdout + proc.stderr + log[-4000:]
    assert "x world 2" in log, log[-3000:]
    diff, mean, where = R.max_weight_diff(ref_pretrain, out)
    assert diff <= R.ATOL and mean <= R.MEAN_ATOL, f"max {diff:.3g} at {where}, mean {mean:.3g}"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.num_parameters() > 0
