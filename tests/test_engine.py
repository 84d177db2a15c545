"""The shared DeepSpeed backend: batch arithmetic, the config dict, rendezvous env, LR schedule."""

from __future__ import annotations

import importlib
import math
import os

import pytest
import torch

from rlhf.config import DeepSpeedConfig, TrainConfig
from rlhf.engine import deepspeed_config, init_env, lr_lambda, resolve_batch
from rlhf.engine.dist import skip_shm_op_when_alone


@pytest.mark.parametrize(
    "world,global_bs,micro,expect",
    [(1, 32, 8, (32, 8, 4)), (2, 32, 8, (32, 8, 2)), (4, 32, 8, (32, 8, 1)), (8, 32, 8, (32, 4, 1)), (3, 24, 16, (24, 8, 1))],
)
def test_global_batch_stays_fixed_and_accumulation_adapts(world, global_bs, micro, expect):
    plan = resolve_batch(DeepSpeedConfig(global_batch_size=global_bs, micro_batch_size=micro), world)
    assert (plan.global_batch, plan.micro_batch, plan.grad_accum) == expect
    assert plan.global_batch == plan.micro_batch * plan.grad_accum * world and plan.lr_scale == 1


def test_uneven_split_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="deepspeed.global_batch_size"):
        resolve_batch(DeepSpeedConfig(global_batch_size=10, micro_batch_size=4), 3)


@pytest.mark.parametrize("rule,factor", [("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scaling_rules(rule, factor):
    ds = DeepSpeedConfig(global_batch_size=16, micro_batch_size=8, lr_scaling=rule, reference_world_size=1)
    plan = resolve_batch(ds, 4)
    assert plan.global_batch == 64 and plan.lr_scale == pytest.approx(factor)


def test_deepspeed_dict_follows_the_section():
    ds = DeepSpeedConfig(zero_stage=3, offload_optimizer=True, offload_param=True, precision="bf16",
                         gradient_clipping=0.5, global_batch_size=16, micro_batch_size=4)
    plan = resolve_batch(ds, 2)
    cfg = deepspeed_config(ds, plan, TrainConfig(learning_rate=2e-5))
    assert cfg["train_batch_size"] == 16 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 2 and cfg["gradient_clipping"] == 0.5
    z = cfg["zero_optimization"]
    assert z["stage"] == 3 and z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    assert z["stage3_gather_16bit_weights_on_model_save"] is True
    assert cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    assert cfg["optimizer"]["params"]["lr"] == 2e-5  # offloaded optimizer state needs DeepSpeed's CPU Adam
    plain = deepspeed_config(DeepSpeedConfig(gradient_clipping=0), resolve_batch(DeepSpeedConfig(), 1))
    assert "optimizer" not in plain and plain["zero_optimization"] == {"stage": 0}
    assert plain["gradient_clipping"] == 0  # written out: DeepSpeed reads a missing key as 1.0


@pytest.mark.parametrize("clipping", [0.0, 0.5])
def test_gradient_clipping_zero_turns_clipping_off_in_the_engine(clipping):
    """deepspeed.gradient_clipping=0 means off; DeepSpeed's own default for an absent key is 1.0, which the engine
    applied silently when the key was left out for 0."""
    import rlhf.engine as E

    E.init_distributed()
    model = torch.nn.Linear(4, 2)
    ds = DeepSpeedConfig(gradient_clipping=clipping)
    plan = resolve_batch(ds, 1)
    train = TrainConfig()
    engine = E.wrap_trainable(model, deepspeed_config(ds, plan, train, model), train, 10, plan)
    assert engine.gradient_clipping() == clipping


def test_single_process_needs_no_launcher(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    init_env()
    assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1" and os.environ["LOCAL_RANK"] == "0"
    assert int(os.environ["MASTER_PORT"]) > 0 and os.environ["MASTER_ADDR"]


def test_launcher_env_is_left_alone(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29555")
    init_env()
    assert os.environ["RANK"] == "1" and os.environ["MASTER_PORT"] == "29555"


def test_one_process_skips_the_shared_memory_op_and_more_keep_it(monkeypatch):
    """DeepSpeed would JIT-compile its shared-memory collective op even for one process; rlhf skips it there."""
    ds_torch_comm = importlib.import_module("deepspeed.comm.torch")  # not `import ... as`: see the function
    real = ds_torch_comm.build_shm_op
    monkeypatch.setattr(ds_torch_comm, "build_shm_op", real)  # restored after the test
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not skip_shm_op_when_alone() and ds_torch_comm.build_shm_op is real
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert skip_shm_op_when_alone() and ds_torch_comm.build_shm_op() is None


def test_lr_schedule_warmup_then_cosine_to_floor():
    f = lr_lambda(TrainConfig(lr_scheduler="cosine", warmup_steps=4, min_lr_ratio=0.1), total_steps=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(14) == pytest.approx(0.1)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    g = lr_lambda(TrainConfig(lr_scheduler="linear"), total_steps=10)
    assert g(0) == 1.0 and g(5) == pytest.approx(0.5) and g(10) == 0.0


def test_accelerate_launch_must_agree_with_the_deepspeed_section(monkeypatch):
    from rlhf.engine import adopt_accelerate_launch

    env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
           "ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "none",
           "ACCELERATE_CONFIG_DS_FIELDS": "zero_stage,offload_param_device,mixed_precision"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="deepspeed.zero_stage: the accelerate config says '3'"):
        adopt_accelerate_launch(DeepSpeedConfig(zero_stage=2))
    with pytest.raises(ValueError, match="deepspeed.precision"):
        adopt_accelerate_launch(DeepSpeedConfig(zero_stage=3, precision="bf16"))
    adopt_accelerate_launch(DeepSpeedConfig(zero_stage=3))  # agrees: accelerate's DeepSpeed settings are dropped
    assert "ACCELERATE_DEEPSPEED_ZERO_STAGE" not in os.environ and "ACCELERATE_CONFIG_DS_FIELDS" not in os.environ


def test_resolved_scaling_is_described_with_the_learning_rate():
    from rlhf.engine import describe_engine

    ds = DeepSpeedConfig(zero_stage=2, global_batch_size=16, micro_batch_size=8, lr_scaling="sqrt",
                         reference_world_size=1, precision="fp16")
    text = describe_engine(ds, resolve_batch(ds, 4), TrainConfig(learning_rate=1e-4, warmup_steps=10))
    assert "ZeRO-2" in text and "dynamic loss scaling" in text and "global batch 64 = micro 8 x accumulation 2 x world 4" in text
    assert "learning rate 0.0002 = 0.0001 x 2 (sqrt in world 4 / 1; warm-up 10 steps)" in text


def test_single_process_gathers_and_generation_context_are_no_ops():
    import torch

    from rlhf.engine import all_gather_rows, gathered_for_generation

    t = torch.arange(6).view(2, 3)
    assert all_gather_rows(t, pad_left=True) is t
    with gathered_for_generation(torch.nn.Linear(2, 2)) as synced:
        assert synced is False


def test_zero_buckets_follow_the_hidden_size():
    from types import SimpleNamespace

    model = SimpleNamespace(config=SimpleNamespace(hidden_size=64))
    plan = resolve_batch(DeepSpeedConfig(), 1)
    z3 = deepspeed_config(DeepSpeedConfig(zero_stage=3), plan, model=model)["zero_optimization"]
    assert z3["reduce_bucket_size"] == 64 * 64 and z3["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)
    assert z3["stage3_param_persistence_threshold"] == 640
    z2 = deepspeed_config(DeepSpeedConfig(zero_stage=2), plan, model=model)["zero_optimization"]
    assert z2["allgather_bucket_size"] == 4096 and "stage3_prefetch_bucket_size" not in z2
    assert deepspeed_config(DeepSpeedConfig(), plan, model=model)["zero_optimization"] == {"stage": 0}


def test_zero3_generation_gathers_once_or_falls_back_with_a_message(micro_model_config, monkeypatch, capsys):
    """Under ZeRO-3 the actor is gathered whole for generation when it fits; when it does not, a warning gives the
    numbers and generation runs with the parameters still partitioned (gathered layer by layer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhf import engine as E
    from rlhf.engine import core

    E.init_distributed()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(micro_model_config))
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    engine = E.wrap_frozen(model, DeepSpeedConfig(zero_stage=3), resolve_batch(DeepSpeedConfig(), 1), E.device())
    big = [p for p in engine.module.parameters() if p.ds_numel > 640]
    assert big and all(p.numel() == 0 for p in big)  # partitioned outside generation

    with E.gathered_for_generation(engine) as synced:
        assert synced is False and all(p.numel() == p.ds_numel for p in big)  # one full copy for the rollout
        with torch.no_grad():
            torch.testing.assert_close(engine.module(input_ids=ids).logits, want)
    assert all(p.numel() == 0 for p in big) and "gathering the actor" not in capsys.readouterr().err

    need = sum(p.ds_numel * p.element_size() for p in big)
    monkeypatch.setattr(core, "free_memory_bytes", lambda: need)  # fits only without the headroom
    monkeypatch.setattr(core, "_fallback_warned", False)
    with E.gathered_for_generation(engine) as synced:
        assert synced is False  # one process: no lockstep needed
        assert all(p.numel() == 0 for p in big)  # not gathered up front
        with torch.no_grad():
            torch.testing.assert_close(engine.module(input_ids=ids).logits, want)  # per-layer gathering still works
    err = capsys.readouterr().err
    assert f"needs {need / 2**30:.2f} GiB" in err and "gathered layer by layer" in err
    assert "ppo.gather_for_generation=false" in err


@pytest.mark.parametrize("on", [True, False])
def test_gradient_checkpointing_reaches_the_trl_trainers(tmp_path, on):
    """train.gradient_checkpointing decides TRL's setting (TRL turns it on by default)."""
    from trl import RewardConfig, SFTConfig

    from rlhf.config import RunConfig
    from rlhf.engine.hf import trainer_kwargs

    ds = DeepSpeedConfig()
    kw = trainer_kwargs(RunConfig(), TrainConfig(gradient_checkpointing=on), ds, resolve_batch(ds, 1), str(tmp_path))
    assert SFTConfig(**kw).gradient_checkpointing is on and RewardConfig(**kw).gradient_checkpointing is on


def _train_engine(reduce: bool, clipping: float, fused: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                              list]:
    """Three accumulation-boundary steps of a small MLP through ``wrap_trainable`` in one process (fp32, ZeRO-0),
    with DeepSpeed's one-process gradient reduction left on (``reduce``) or skipped as rlhf does: the gradients
    after every backward, the final weights and ``get_global_grad_norm()`` after each boundary step."""
    import torch

    import rlhf.engine as E

    E.init_distributed()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    ds = DeepSpeedConfig(global_batch_size=8, micro_batch_size=4, gradient_clipping=clipping)
    plan = resolve_batch(ds, 1)
    train = TrainConfig(learning_rate=1e-2, fused_adam=fused)
    engine = E.wrap_trainable(model, deepspeed_config(ds, plan, train, model), train, 10, plan)
    assert all(g["fused"] is (True if fused else None) for g in engine.optimizer.param_groups)
    assert engine.enable_backward_allreduce is False  # one process, ZeRO-0 fp32: skipped by wrap_trainable
    engine.enable_backward_allreduce = reduce
    g = torch.Generator().manual_seed(1)
    grads, norms = [], []
    for i in range(6):  # 3 optimizer steps of 2 micro batches
        x, y = torch.randn(4, 16, generator=g), torch.randn(4, 4, generator=g)
        engine.backward(((engine(x) - y) ** 2).mean())
        grads += [p.grad.clone() for p in engine.module.parameters()]
        engine.step()
        if i % 2:
            norms.append(engine.get_global_grad_norm())
    return grads, [p.detach().clone() for p in engine.module.parameters()], norms


@pytest.mark.parametrize("clipping", [0.0, 0.05])
def test_skipping_one_process_gradient_reduction_is_bit_identical(clipping):
    skipped, reduced = _train_engine(False, clipping), _train_engine(True, clipping)
    assert len(skipped[0]) == len(reduced[0]) == 24
    assert all(torch.equal(a, b) for a, b in zip(skipped[0], reduced[0]))
    assert all(torch.equal(a, b) for a, b in zip(skipped[1], reduced[1]))
    torch.manual_seed(0)
    start = torch.nn.Linear(16, 64).weight  # the first layer as _train_engine built it, before training
    assert (skipped[1][0] - start).abs().max() > 1e-3  # it trained


def test_fp32_engine_reports_the_gradient_norm_it_clips_with():
    """fp32 ZeRO-0 DeepSpeed computes the global norm to clip and discards it (get_global_grad_norm() None, so the
    non-finite guard and the Trainer's grad_norm log had nothing); wrap_trainable keeps it. Each boundary step's
    norm equals the 2-norm of the accumulated gradients recorded after that step's second backward, before clipping."""
    grads, _, norms = _train_engine(False, 0.05)
    per_backward = [grads[i:i + 4] for i in range(0, 24, 4)]  # 4 parameters per backward
    want = [torch.stack([g.norm() for g in per_backward[b]]).norm().item() for b in (1, 3, 5)]
    assert all(n is not None for n in norms), norms
    got = [float(n) for n in norms]
    assert got == pytest.approx(want, rel=1e-6) and min(want) > 0.05  # above the threshold: clipping acted
    assert _train_engine(False, 0.0)[2] == [None] * 3  # no clipping: DeepSpeed computes no norm, none is made up


def test_fused_adam_option_gives_the_same_update_to_rounding():
    """train.fused_adam: PyTorch's fused AdamW in wrap_trainable (pretrain, PPO). Three steps of the MLP above end
    within float rounding of the per-parameter loop's weights (the step is the same formula, evaluated in one kernel)."""
    loop, fused = _train_engine(False, 0.05), _train_engine(False, 0.05, fused=True)
    assert torch.equal(loop[0][0], fused[0][0])  # the first backward precedes any update: the same gradient
    gap = max((a - b).abs().max().item() for a, b in zip(loop[1], fused[1]))
    assert gap < 1e-6, gap
