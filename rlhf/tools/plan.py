"""``rlhf plan CONFIG [key=value ...] [--gpus N] [--nodes M] [--gpu-memory GiB]``: the per-rank memory a stage will
need, for every ZeRO stage and offload choice, before anything is loaded.

The models' shapes come from their ``config.json`` (each model is built on PyTorch's meta device: exact parameter
counts for any architecture transformers knows, no weights read). For the stage in CONFIG (detected from its
sections: ``ppo`` -> PPO, ``dpo`` -> DPO, ``reward`` -> reward model, ``model.from_config`` -> pretraining, else
SFT) the models are:

- SFT, pretraining: the policy (trainable); reward model: the backbone with a scalar head (trainable);
- DPO: the policy (trainable) and the reference (frozen; none with LoRA: the policy with adapters off);
- PPO: the actor (trainable), the reference (frozen; none with LoRA), the critic (trainable, the reward model's
  shape; none for ``rloo``/``grpo``) and the reward model (frozen; none with ``reward.function``).

Bytes per rank, with P parameters, T of them trainable (all, or the LoRA adapters), N ranks, b = 2 for bf16/fp16
and 4 for fp32 (``deepspeed.precision``), the mixed-precision layout of DeepSpeed's ZeRO (Rajbhandari et al. 2020,
section 3; the same multipliers as DeepSpeed's ``estimate_zero2_model_states_mem_needs``):

- weights P*b (ZeRO-3: P*b/N, plus the largest parameter gathered twice over for the layer in use and the one
  prefetched); a frozen model is weights only, partitioned under ZeRO-3 as the stage does (``wrap_frozen``);
- gradients T*b (ZeRO-2/3: /N); with bf16/fp16 also an fp32 copy of the gradient partition, 4T/N;
- optimizer: Adam's two fp32 moments 8T, plus an fp32 master copy 4T with bf16/fp16; /N from ZeRO-1 on;
- ``offload_optimizer`` moves the optimizer and the fp32 gradient copy to CPU memory, ``offload_param`` (ZeRO-3)
  the weights: those figures are reported as CPU memory per node instead.

Activations of one training micro batch (m sequences of s tokens; hidden h, k/v width k, MLP width I, L layers,
a heads, vocabulary V; b_a bytes per activation): per layer and token the block keeps its inputs for backward,
about 6h + 2k + 4I values (norm and projection inputs, q, k, v, attention output, gate, up, activation, product);
eager attention adds a*s per token (the attention probabilities); with gradient checkpointing a layer keeps only
its input h, and one layer is recomputed at a time. The logits add m*s*V*(b_a + 8) (the logits, their fp32 upcast
in the loss and its gradient). DPO has two sequences per pair (m pairs = 2m sequences); the reward model has
pairs too, and no logits over the vocabulary.

PPO's generation holds the whole actor (gathered under ZeRO-3, ``ppo.gather_for_generation``) and a KV cache of
2 * L * k * (prompt + response) * b values for each of the rank's rollout episodes; its experience forward passes
hold one micro batch of logits. The reported peak is the largest of the training step and the generation phase.

These are estimates: allocator fragmentation, the CUDA context (about 0.5-1 GiB), communication buckets and
temporary buffers are not modelled, so the recommendation keeps 10% of the device free. Against peaks measured
on CPU by ``rlhf bench zero`` (which prints this plan beside them) the plan was within -21% to +29% for 27M and
135M-parameter models and short by 45-73% below 5M parameters, where the fixed overhead dominates
(docs/scaling.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import yaml

from rlhf.errors import RlhfError

GIB = 2**30
HEADROOM = 0.9  # of --gpu-memory usable by the estimate
SETTINGS = [  # cheapest in communication first
    (0, False, False), (1, False, False), (2, False, False), (3, False, False),
    (2, True, False), (3, True, False), (3, True, True),
]


class PlanError(RlhfError, ValueError):
    """A config or model shape the planner cannot read; the message names it."""


@dataclass
class Shape:
    """What memory depends on, read from a model's config.json."""

    params: int          # causal LM parameters
    head_params: int     # parameters of the LM head alone (0 when tied to the embedding)
    largest: int         # the largest single parameter tensor
    hidden: int
    kv_width: int        # k (and v) width per token: kv heads x head dim
    intermediate: int
    layers: int
    heads: int
    vocab: int
    lora_per_rank: dict  # target module name -> sum over such layers of (in + out) features


@dataclass
class ModelPart:
    role: str
    params: int
    trainable: int
    largest: int


def model_shape(config_json: str, trust_remote_code: bool = False) -> Shape:
    """Exact parameter counts of the causal LM in ``config_json`` (a file or a model directory), built on the meta
    device (nothing is allocated or read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        if os.path.isdir(config_json):
            cfg = AutoConfig.from_pretrained(config_json, trust_remote_code=trust_remote_code)
        else:
            with open(config_json, encoding="utf-8") as f:
                raw = json.load(f)
            cfg = AutoConfig.for_model(**raw)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise PlanError(f"{config_json}: cannot read a model config ({e})") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    seen, params, largest = set(), 0, 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            params += p.numel()
            largest = max(largest, p.numel())
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    lora: dict[str, int] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod is not head:
            short = name.rsplit(".", 1)[-1]
            lora[short] = lora.get(short, 0) + mod.in_features + mod.out_features
    g = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    hidden = getattr(g, "hidden_size", None) or getattr(g, "n_embd", None) or g.d_model
    heads = getattr(g, "num_attention_heads", None) or g.n_head
    kv_heads = getattr(g, "num_key_value_heads", None) or heads
    head_dim = getattr(g, "head_dim", None) or hidden // heads
    inter = getattr(g, "intermediate_size", None) or getattr(g, "ffn_dim", None) or getattr(g, "n_inner", None) \
        or 4 * hidden
    layers = getattr(g, "num_hidden_layers", None) or g.n_layer
    return Shape(params, 0 if tied or head is None else head.weight.numel(), largest, hidden, kv_heads * head_dim,
                 inter, layers, heads, g.vocab_size, lora)


def detect_stage(raw: dict) -> str:
    if "ppo" in raw:
        return "ppo"
    if "dpo" in raw:
        return "dpo"
    if "reward" in raw:
        return "rm"
    if (raw.get("model") or {}).get("from_config"):
        return "pretrain"
    return "sft"


def _trainable(shape: Shape, lora) -> int:
    if not lora.enabled:
        return shape.params
    missing = [t for t in lora.target_modules if t not in shape.lora_per_rank]
    if missing:
        raise PlanError(f"lora.target_modules: {', '.join(missing)} not in the model (its linear layers: "
                        f"{', '.join(sorted(shape.lora_per_rank))})")
    return lora.r * sum(shape.lora_per_rank[t] for t in lora.target_modules)


def parts(stage: str, cfg, shape: Shape) -> list[ModelPart]:
    """The models the stage holds, with their parameter counts."""
    head_free = shape.params - shape.head_params + shape.hidden  # backbone + scalar head
    if stage in ("sft", "pretrain"):
        return [ModelPart("policy", shape.params, _trainable(shape, cfg.lora), shape.largest)]
    if stage == "rm":
        t = _trainable(shape, cfg.lora) + (shape.hidden if cfg.lora.enabled else 0)
        return [ModelPart("reward model", head_free, min(t, head_free), shape.largest)]
    lora = cfg.lora.enabled
    out = [ModelPart("policy" if stage == "dpo" else "actor", shape.params, _trainable(shape, cfg.lora), shape.largest)]
    if not lora:
        out.append(ModelPart("reference", shape.params, 0, shape.largest))
    if stage == "ppo":
        if cfg.ppo.advantage_estimator == "gae":
            out.append(ModelPart("critic", head_free, head_free, shape.largest))
        if cfg.reward.model:
            out.append(ModelPart("reward model", head_free, 0, shape.largest))
    return out


def states(part: ModelPart, zero: int, off_opt: bool, off_param: bool, world: int, precision: str) -> tuple[int, int]:
    """(device bytes, CPU bytes) of one model's weights, gradients and optimizer on one rank."""
    b = 4 if precision == "fp32" else 2
    n = world  # ranks sharing the partitioned states
    w = part.params * b
    dev, cpu = 0, 0
    if zero == 3:
        if off_param:
            cpu += w // n
        else:
            dev += w // n
        dev += 2 * part.largest * b  # the gathered layer in use and the prefetched one
    else:
        dev += w
    t = part.trainable
    if t:
        grads = t * b // (n if zero >= 2 else 1)
        fp32_grads = 0 if precision == "fp32" else 4 * t // n
        optim = (8 + (0 if precision == "fp32" else 4)) * t // (n if zero >= 1 else 1)
        dev += grads
        if off_opt:
            cpu += optim + fp32_grads
        else:
            dev += optim + fp32_grads
    return dev, cpu


def activations(shape: Shape, seqs: int, tokens: int, act_bytes: int, checkpointing: bool, eager: bool,
                logits: bool = True) -> int:
    """Bytes kept for backward by one training micro batch of ``seqs`` sequences of ``tokens`` tokens."""
    per_token_layer = 6 * shape.hidden + 2 * shape.kv_width + 4 * shape.intermediate
    if eager:
        per_token_layer += shape.heads * tokens
    if checkpointing:
        blocks = shape.layers * shape.hidden + per_token_layer
    else:
        blocks = shape.layers * per_token_layer
    total = seqs * tokens * blocks * act_bytes
    if logits:
        total += seqs * tokens * shape.vocab * (act_bytes + 8)
    return total


def plan(stage: str, cfg, shape: Shape, world: int) -> dict:
    """Per-setting estimates: {(zero, offload_optimizer, offload_param): {...}} in bytes."""
    ds = cfg.deepspeed
    b = 4 if ds.precision == "fp32" else 2
    eager = getattr(cfg.model, "attn_implementation", "sdpa") == "eager"
    ckpt = getattr(cfg.train, "gradient_checkpointing", False)
    m = ds.micro_batch_size
    if stage == "pretrain":
        act = activations(shape, m, cfg.data.block_size, b, ckpt, eager)
    elif stage == "sft":
        act = activations(shape, m, cfg.data.max_length, b, ckpt, eager)
    elif stage == "rm":
        act = activations(shape, 2 * m, cfg.data.max_length, b, ckpt, eager, logits=False)
    elif stage == "dpo":
        act = activations(shape, 2 * m, cfg.data.max_length, b, ckpt, eager)
    else:
        s = cfg.data.max_prompt_length + cfg.generation.max_new_tokens
        act = activations(shape, m, s, b, ckpt, eager)
        if cfg.ppo.advantage_estimator == "gae":
            act += activations(shape, m, s, b, ckpt, eager, logits=False)  # the critic's backward
        if cfg.ppo.ptx_coef > 0:
            act += activations(shape, cfg.ppo.ptx_batch_size, cfg.data.ptx_block_size, b, ckpt, eager)
    models = parts(stage, cfg, shape)
    out = {}
    for zero, off_opt, off_param in SETTINGS:
        dev = cpu = 0
        per_model = {}
        for p in models:
            d, c = states(p, zero, off_opt, off_param, world, ds.precision)
            per_model[p.role] = d
            dev, cpu = dev + d, cpu + c
        gen = 0
        if stage == "ppo":
            local = max(1, cfg.ppo.rollout_batch_size // world)
            s = cfg.data.max_prompt_length + cfg.generation.max_new_tokens
            kv = 2 * shape.layers * shape.kv_width * s * local * b
            gathered = 0
            if zero == 3 and cfg.ppo.gather_for_generation:  # the other ranks' shards (all of it when offloaded)
                full = shape.params * b
                gathered = full if off_param else full - full // world
            gen = kv + gathered + local * shape.vocab * 4
        out[(zero, off_opt, off_param)] = {"states": dev, "per_model": per_model, "activations": act,
                                           "generation": gen, "peak": dev + max(act, gen), "cpu": cpu}
    return {"models": models, "settings": out}


def recommend(settings: dict, gpu_bytes: float) -> tuple | None:
    for key in SETTINGS:
        if settings[key]["peak"] <= HEADROOM * gpu_bytes:
            return key
    return None


def _name(key: tuple) -> str:
    zero, off_opt, off_param = key
    return f"ZeRO-{zero}" + (" + offload optimizer" if off_opt else "") + (" + offload params" if off_param else "")


def render(stage: str, cfg_path: str, shape: Shape, result: dict, world: int, nodes: int,
           gpu_gib: float | None) -> str:
    g = lambda x: f"{x / GIB:.2f}"  # noqa: E731
    lines = [f"[plan] {cfg_path}: stage {stage}, {world} rank(s) on {nodes} node(s); model {shape.params / 1e6:.1f}M "
             f"parameters (hidden {shape.hidden}, {shape.layers} layers, vocabulary {shape.vocab})"]
    lines.append("[plan] models: " + "; ".join(
        f"{p.role} {p.params / 1e6:.1f}M ({'frozen' if not p.trainable else f'{p.trainable / 1e6:.2f}M trainable'})"
        for p in result["models"]))
    head = f"{'setting':<44} {'states':>8} {'activations':>12} {'generation':>11} {'peak/rank':>10} {'CPU/node':>9}"
    lines += ["[plan] per-rank device memory in GiB (estimates; the peak is states + the larger of a training step's "
              "activations and generation):", head]
    for key in SETTINGS:
        r = result["settings"][key]
        lines.append(f"{_name(key):<44} {g(r['states']):>8} {g(r['activations']):>12} {g(r['generation']):>11} "
                     f"{g(r['peak']):>10} {g(r['cpu'] * world // nodes):>9}")
    if gpu_gib:
        best = recommend(result["settings"], gpu_gib * GIB)
        if best is None:
            lines.append(f"[plan] nothing fits in {gpu_gib:g} GiB per device with 10% kept free: lower "
                         "deepspeed.micro_batch_size, turn on train.gradient_checkpointing or LoRA, or add devices")
        else:
            zero, off_opt, off_param = best
            lines.append(f"[plan] recommended for {gpu_gib:g} GiB per device: {_name(best)} "
                         f"(deepspeed.zero_stage={zero} deepspeed.offload_optimizer={str(off_opt).lower()} "
                         f"deepspeed.offload_param={str(off_param).lower()}), peak "
                         f"{g(result['settings'][best]['peak'])} GiB")
    return "\n".join(lines)


def main(args) -> int:
    from rlhf.config import STAGES, load_config

    if not os.path.isfile(args.config):
        raise PlanError(f"{args.config}: no such config file")
    with open(args.config, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    stage = args.stage or detect_stage(raw)
    cfg = load_config(STAGES[stage], args.config, args.overrides)
    source = args.model_config or cfg.model.from_config or cfg.model.name_or_path
    if not source or not (os.path.isdir(source) or os.path.isfile(source)):
        raise PlanError(f"{source or 'model.name_or_path'}: the model's config.json is not on this machine "
                        "(pass --model-config FILE)")
    shape = model_shape(source, cfg.model.trust_remote_code)
    world = args.gpus * args.nodes
    result = plan(stage, cfg, shape, world)
    print(render(stage, args.config, shape, result, world, args.nodes, args.gpu_memory))
    return 0
