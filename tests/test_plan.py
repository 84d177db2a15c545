"""``rlhf plan``: parameter counts against built models and a published figure, model-state bytes against DeepSpeed's
own estimator and a hand computation, activations by hand, and the CLI's table, recommendation and errors."""

from __future__ import annotations

import json
import os

import pytest

from rlhf.cli import main as cli_main
from rlhf.config import STAGES, load_config
from rlhf.tools import plan as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs/tiny/model.json")
LLAMA7B = os.path.join(ROOT, "configs/shapes/llama-2-7b.json")


def test_parameter_counts_match_a_built_model_and_peft():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = P.model_shape(TINY)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**json.load(open(TINY))))
    assert shape.params == sum(p.numel() for p in model.parameters())  # tied embedding counted once
    assert shape.head_params == 0 and shape.largest == 4096 * 192
    assert (shape.hidden, shape.kv_width, shape.intermediate, shape.layers, shape.heads, shape.vocab) == \
        (192, 192, 512, 4, 6, 4096)
    cfg = load_config(STAGES["sft"], os.path.join(ROOT, "configs/tiny/sft.yaml"),
                      ["lora.enabled=true", "lora.r=8", "lora.target_modules=[q_proj,v_proj,down_proj]"])
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    expected = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert P.parts("sft", cfg, shape)[0].trainable == expected


def test_llama_2_7b_has_its_published_parameter_count():
    # Touvron et al. 2023 (Llama 2), the 7B model: 6,738,415,616 parameters (untied 32000 x 4096 LM head)
    shape = P.model_shape(LLAMA7B)
    assert shape.params == 6_738_415_616 and shape.head_params == 32000 * 4096


def test_model_states_match_deepspeeds_estimator_and_a_hand_count():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    n_params, largest, world = 8_000_000, 1_000_000, 8
    part = P.ModelPart("policy", n_params, n_params, largest)
    # ZeRO-2, bf16, no offload: 2P weights + (2 + 4 + 4 + 8) P / N, DeepSpeed's multipliers exactly
    dev, cpu = P.states(part, 2, False, False, world, "bf16")
    assert dev == estimate_zero2_model_states_mem_needs(n_params, world, 1, cpu_offload=False)[1] and cpu == 0
    # ZeRO-3: DeepSpeed counts 4 bytes of the largest layer and 18 P / N; the plan also keeps the 16-bit weight
    # partition (2 P / N) the stage holds
    dev3, _ = P.states(part, 3, False, False, world, "bf16")
    ds3 = estimate_zero3_model_states_mem_needs(n_params, largest, world, 1, cpu_offload=False,
                                                cpu_offload_params=False)[1]
    assert dev3 - ds3 == 2 * n_params // world
    # fp32, ZeRO-0: 4 (weights) + 4 (gradients) + 8 (Adam) bytes per parameter; frozen: weights only
    assert P.states(part, 0, False, False, 1, "fp32") == (16 * n_params, 0)
    assert P.states(P.ModelPart("reference", n_params, 0, largest), 1, False, False, world, "bf16") == (2 * n_params, 0)
    # ZeRO-3 with both offloads: the device keeps the gathered layers and the 16-bit gradient partition
    dev, cpu = P.states(part, 3, True, True, world, "bf16")
    assert dev == 2 * largest * 2 + 2 * n_params // world
    assert cpu == 2 * n_params // world + 12 * n_params // world + 4 * n_params // world


def test_activations_by_hand():
    shape = P.model_shape(TINY)
    per = 6 * 192 + 2 * 192 + 4 * 512  # values kept per token and layer
    assert P.activations(shape, 2, 10, 4, False, False) == 2 * 10 * (4 * per * 4 + 4096 * (4 + 8))
    assert P.activations(shape, 2, 10, 4, True, False, logits=False) == 2 * 10 * (4 * 192 + per) * 4
    assert P.activations(shape, 1, 10, 2, False, True, logits=False) == 10 * 4 * (per + 6 * 10) * 2


def test_ppo_models_follow_lora_the_estimator_and_the_reward_source():
    shape = P.model_shape(TINY)
    ppo = os.path.join(ROOT, "configs/tiny/ppo.yaml")
    roles = lambda *o: [p.role for p in P.parts("ppo", load_config(STAGES["ppo"], ppo, list(o)), shape)]  # noqa: E731
    assert roles() == ["actor", "reference", "critic", "reward model"]
    assert roles("lora.enabled=true") == ["actor", "critic", "reward model"]
    assert roles("ppo.advantage_estimator=grpo", "ppo.samples_per_prompt=4") == ["actor", "reference", "reward model"]


def test_recommendation_is_the_lowest_setting_that_fits():
    settings = {k: {"peak": 100 - 10 * i} for i, k in enumerate(P.SETTINGS)}
    assert P.recommend(settings, 100 / 0.9) == (0, False, False)
    assert P.recommend(settings, 75 / 0.9) == (3, False, False)  # peaks 100, 90, 80, 70: the fourth
    assert P.recommend(settings, 10) is None


def test_cli_prints_every_setting_and_recommends(capsys):
    rc = cli_main(["plan", os.path.join(ROOT, "configs/tiny/ppo.yaml"), "--model-config", TINY, "--gpus", "2",
                   "--gpu-memory", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0 and "stage ppo, 2 rank(s)" in out
    assert "actor 2.6M" in out and "critic" in out and "reference" in out
    assert all(P._name(k) in out for k in P.SETTINGS)
    assert "recommended for 0.5 GiB per device: ZeRO-0" in out
    rc = cli_main(["plan", os.path.join(ROOT, "configs/tiny/ppo.yaml"), "--model-config", LLAMA7B, "--gpus", "8",
                   "--gpu-memory", "80"])
    out = capsys.readouterr().out
    assert rc == 0 and "6738.4M parameters" in out and "recommended for 80 GiB per device: ZeRO-3" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = cli_main(["plan", os.path.join(ROOT, "configs/tiny/sft.yaml"), f"model.name_or_path={tmp_path}/missing"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.startswith("error:") and "--model-config" in err
    rc = cli_main(["plan", os.path.join(ROOT, "configs/tiny/sft.yaml"), "lora.enabled=true",
                   "lora.target_modules=[nope]", "--model-config", TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "lora.target_modules: nope not in the model" in err


@pytest.mark.parametrize("stage,config", [("sft", "sft.yaml"), ("rm", "rm.yaml"), ("dpo", "dpo.yaml"),
                                          ("ppo", "ppo.yaml"), ("pretrain", "pretrain.yaml")])
def test_stage_is_detected_from_the_config(stage, config):
    import yaml

    assert P.detect_stage(yaml.safe_load(open(os.path.join(ROOT, "configs/tiny", config)))) == stage


def test_zero3_generation_holds_the_gathered_actor():
    """Under ZeRO-3 with ppo.gather_for_generation the generation phase adds the other ranks' weight shards (all of
    the weights when they are offloaded); without gathering, or below ZeRO-3, it adds none."""
    shape = P.model_shape(TINY)
    cfg = load_config(STAGES["ppo"], os.path.join(ROOT, "configs/tiny/ppo.yaml"), [])
    res = P.plan("ppo", cfg, shape, 4)["settings"]
    full = shape.params * 4
    assert res[(3, False, False)]["generation"] - res[(2, False, False)]["generation"] == full - full // 4
    assert res[(3, True, True)]["generation"] - res[(2, False, False)]["generation"] == full
    off = P.plan("ppo", load_config(STAGES["ppo"], os.path.join(ROOT, "configs/tiny/ppo.yaml"),
                                    ["ppo.gather_for_generation=false"]), shape, 4)["settings"]
    assert off[(3, False, False)]["generation"] == off[(2, False, False)]["generation"]
