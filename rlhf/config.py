"""Typed configuration: YAML + ``key.sub=value`` overrides -> dataclasses.

Every field is declared once, with its type, default and a one-line doc (the string literal under it).
Loading is strict: an unknown key, a wrong type or a bad value is a :class:`ConfigError` naming the key,
the file and the line, and, for a typo, the closest valid key.

Sections are shared between stages (``run``, ``model``, ``train``, ``lora``, ``deepspeed``); each stage
has a root dataclass that composes the sections it reads (``SFTStageConfig`` ...). Derived values are
computed once by the stage (see :func:`rlhf.engine.resolve_batch`) and printed.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from rlhf.errors import RlhfError


class ConfigError(RlhfError, ValueError):
    """A configuration problem; the message names the file, line and key."""


# ----------------------------------------------------------------------------------------------------------
# Sections shared by the stages
# ----------------------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    """directory the stage writes: model, tokenizer, config.yaml, metrics.jsonl, summary.json, checkpoints/"""
    seed: int = 42
    """global seed; each rank seeds with seed + rank"""
    resume: str = "auto"
    """'auto': continue from the newest complete checkpoint, if any; 'never': start fresh; or a checkpoint dir"""
    overwrite: bool = False
    """write into output_dir although it holds files rlhf did not write, another stage's run or a run with other
    settings: the stage starts over there (its summary, metrics and checkpoints are deleted first)"""
    logging_steps: int = 1
    """write a metrics.jsonl line every this many optimizer steps"""
    save_steps: int = 50
    """write a resumable checkpoint every this many optimizer steps (and at the end)"""
    save_total_limit: int = 2
    """keep at most this many checkpoints (the newest ones)"""
    report_to: list[str] = field(default_factory=list)
    """extra metric sinks besides metrics.jsonl: 'tensorboard' and/or 'wandb'"""
    progress: bool = True
    """show a progress bar on rank 0"""

    def check(self) -> None:
        if self.resume in ("", None):
            raise ValueError("resume: use 'auto', 'never' or a checkpoint directory")
        bad = [r for r in self.report_to if r not in ("tensorboard", "wandb")]
        if bad:
            raise ValueError(f"report_to: unknown sink {bad[0]!r}; choose from 'tensorboard', 'wandb'")
        _positive(self, "logging_steps", "save_steps", "save_total_limit")


@dataclass
class ModelConfig:
    name_or_path: str = ""
    """hub id or local directory of a pretrained model (or the output directory of an earlier stage)"""
    from_config: str = ""
    """instead of name_or_path: a config.json to build a randomly initialised model from (pretraining)"""
    tokenizer: str = ""
    """tokenizer hub id or directory; defaults to name_or_path"""
    gguf_file: str = ""
    """file name of a GGUF checkpoint inside name_or_path (dequantised on load)"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype the weights are loaded in"""
    revision: str = ""
    """hub revision (branch, tag or commit); empty for the default"""
    trust_remote_code: bool = False
    """allow a hub model to run its own Python code; off unless you trust the repository"""
    attn_implementation: str = "sdpa"
    """attention kernel passed to transformers ('sdpa', 'eager', 'flash_attention_2')"""
    chat_template: str = ""
    """path of a Jinja chat template to use instead of the tokenizer's own"""

    def check(self) -> None:
        if bool(self.name_or_path) == bool(self.from_config):
            raise ValueError("set exactly one of name_or_path and from_config")

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.name_or_path


@dataclass
class TrainConfig:
    learning_rate: float = 1e-4
    """peak learning rate"""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    """shape after warm-up: constant, linear decay to 0, or cosine decay to min_lr_ratio x peak"""
    min_lr_ratio: float = 0.0
    """cosine schedule floor as a fraction of the peak (InstructGPT RM: 0.1)"""
    warmup_steps: int = 0
    """optimizer steps of linear warm-up from 0"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    adam_beta1: float = 0.9
    """AdamW beta1"""
    adam_beta2: float = 0.95
    """AdamW beta2 (InstructGPT App. C: 0.95)"""
    adam_eps: float = 1e-8
    """AdamW epsilon"""
    epochs: float = 1.0
    """passes over the training data (ignored when max_steps > 0)"""
    max_steps: int = 0
    """stop after this many optimizer steps; 0 = use epochs"""
    eval_steps: int = 0
    """evaluate on the held-out slice every this many steps; 0 = only at the end"""
    gradient_checkpointing: bool = True
    """SFT and RM: recompute activations in the backward pass (TRL's default: less memory, about a third more
    compute; turn off when memory allows, e.g. a small model on CPU)"""

    def check(self) -> None:
        _positive(self, "learning_rate", "adam_eps")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio: must be in [0, 1]")
        if self.max_steps < 0 or self.warmup_steps < 0 or self.eval_steps < 0:
            raise ValueError("max_steps, warmup_steps and eval_steps must be >= 0")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError("epochs: must be > 0 when max_steps is 0")


@dataclass
class LoraConfig:
    enabled: bool = False
    """train low-rank adapters (peft) instead of all weights"""
    r: int = 16
    """adapter rank"""
    alpha: int = 32
    """adapter scaling numerator (scale = alpha / r)"""
    dropout: float = 0.0
    """dropout on the adapter input (0: RLHF wants dropout off everywhere)"""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """module names that get adapters"""

    def check(self) -> None:
        _positive(self, "r", "alpha")
        if not self.target_modules:
            raise ValueError("target_modules: must name at least one module")


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 0
    """ZeRO stage: 0 data parallel, 1 shard optimizer state, 2 + gradients, 3 + parameters"""
    offload_optimizer: bool = False
    """keep optimizer state (and its step) in CPU memory (ZeRO 1-3)"""
    offload_param: bool = False
    """keep parameters in CPU memory between uses (ZeRO-3 only)"""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """training precision; fp16 uses dynamic loss scaling"""
    gradient_clipping: float = 1.0
    """clip the global gradient norm to this; 0 = off"""
    global_batch_size: int = 8
    """sequences per optimizer step over all processes; fixed when the world size changes"""
    micro_batch_size: int = 8
    """sequences per forward/backward on one process; accumulation = global / (micro x world)"""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """'none': global batch fixed, accumulation adapts; 'linear'/'sqrt': global batch grows with the world
    size and the learning rate is scaled by (world / reference_world_size) or its square root (Goyal et al. 2017)"""
    reference_world_size: int = 1
    """world size global_batch_size and learning_rate were tuned for (used by lr_scaling)"""

    def check(self) -> None:
        _positive(self, "global_batch_size", "micro_batch_size", "reference_world_size")
        if self.offload_param and self.zero_stage != 3:
            raise ValueError("offload_param: needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer: needs zero_stage 1, 2 or 3")
        if self.gradient_clipping < 0:
            raise ValueError("gradient_clipping: must be >= 0")


# ----------------------------------------------------------------------------------------------------------
# Stage roots
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PretrainDataConfig:
    train_files: list[str] = field(default_factory=lambda: ["data/pretrain/train.txt"])
    """pretraining text: .txt files, JSONL with a 'text' field, or a datasets name"""
    eval_file: str = "data/pretrain/heldout.txt"
    """held-out text for perplexity"""
    block_size: int = 256
    """tokens per training sequence (documents are concatenated with EOS and chunked)"""

    def check(self) -> None:
        _positive(self, "block_size")
        if not self.train_files:
            raise ValueError("train_files: name at least one file")


@dataclass
class PretrainTrainConfig(TrainConfig):
    """The optimisation settings every stage shares, and pretraining's own regulariser."""

    linearity_coef: float = 0.0
    """lambda of the cosine regulariser lambda * sum_i (1 - cos(h_i, h_{i-1})) over consecutive layers, added to
    the LM loss (Razzhigaev et al. 2024 used 0.5; it lowered layer linearity); 0 = off"""

    def check(self) -> None:
        super().check()
        if self.linearity_coef < 0:
            raise ValueError("linearity_coef: must be >= 0")


@dataclass
class PretrainStageConfig:
    """``rlhf pretrain``: causal-LM training from scratch (builds the tiny default's base model)."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


@dataclass
class SFTDataConfig:
    train_file: str = "data/palms/values_targeted.jsonl"
    """SFT data: JSONL/Parquet with {prompt, completion} or {messages}, or a datasets name"""
    categories_file: str = "data/palms/categories.yaml"
    """category ids the data may use ('' = any category allowed)"""
    eval_fraction: float = 0.1
    """fraction of rows held out (seeded) to measure completion loss; 0 = none"""
    max_length: int = 512
    """maximum tokens of prompt + completion; longer rows are an error (see on_overlength)"""
    on_overlength: Literal["error", "truncate", "drop"] = "error"
    """what to do with a row over max_length"""
    on_invalid: Literal["error", "drop"] = "error"
    """what to do with an invalid row (bad JSON, missing or empty fields, unknown category): 'error' refuses the
    file listing every one; 'drop' trains without them and reports them in the log and summary.json"""

    def check(self) -> None:
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction: must be in [0, 1)")
        _positive(self, "max_length")


@dataclass
class SFTStageConfig:
    """``rlhf sft``: supervised fine-tuning with loss on completion tokens only (TRL SFTTrainer)."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


@dataclass
class RMDataConfig:
    train_file: str = "data/preferences/train.jsonl"
    """preference pairs to train on: {prompt, chosen, rejected}, {chosen, rejected} or HH transcripts"""
    test_file: str = "data/preferences/test.jsonl"
    """held-out pairs for the final evaluation ('' = none)"""
    categories_file: str = "data/palms/categories.yaml"
    """category ids the data may use ('' = any)"""
    max_length: int = 512
    """maximum tokens of prompt + response"""
    on_overlength: Literal["error", "truncate", "drop"] = "error"
    """what to do with a pair over max_length"""
    on_invalid: Literal["error", "drop"] = "error"
    """what to do with an invalid pair (bad JSON, prompts of chosen and rejected that differ, an empty response):
    'error' refuses the file listing every one; 'drop' trains without them and reports them in the log and
    summary.json"""
    normalize_reference_file: str = ""
    """pairs whose chosen responses set the reward normalisation (mean 0, std 1); '' = train_file"""
    max_train_pairs: int = 0
    """train (and measure train accuracy) on the first N pairs of train_file only; 0 = all (a CPU time budget)"""
    extra_train_files: list[str] = field(default_factory=list)
    """more pairs trained on together with train_file, e.g. the pairs.jsonl of 'rlhf compare' (ranked samples of
    the SFT model); the normalisation still defaults to train_file's chosen responses"""

    def check(self) -> None:
        _positive(self, "max_length")
        if self.max_train_pairs < 0:
            raise ValueError("max_train_pairs: must be >= 0 (0 = all pairs)")


@dataclass
class RewardConfig:
    center_rewards_coefficient: float = 0.0
    """weight of the centring penalty mean((r_c + r_r)^2) (Eisenstein et al. 2023 suggest 0.01)"""
    head_init_std: float = 0.0
    """std of the new scalar head's weights; 0 = 1/sqrt(hidden + 1) (N+ detail 12)"""
    ece_bins: int = 10
    """bins of the expected calibration error"""

    def check(self) -> None:
        if self.center_rewards_coefficient < 0 or self.head_init_std < 0:
            raise ValueError("center_rewards_coefficient: must be >= 0")
        _positive(self, "ece_bins")


@dataclass
class RMStageConfig:
    """``rlhf rm``: Bradley-Terry reward model on preference pairs (TRL RewardTrainer)."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: RMDataConfig = field(default_factory=RMDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


@dataclass
class PPODataConfig:
    prompt_file: str = "data/prompts/train.jsonl"
    """prompts to optimise on: {prompt} rows (optional category)"""
    heldout_prompt_file: str = "data/prompts/test.jsonl"
    """held-out prompts scored at the end (reward of the final actor vs the starting one); '' = none"""
    categories_file: str = "data/palms/categories.yaml"
    """category ids the prompts may use ('' = any)"""
    max_prompt_length: int = 128
    """prompts longer than this many tokens are an error"""
    ptx_files: list[str] = field(default_factory=lambda: ["data/pretrain/train.txt"])
    """pretraining text for the ptx term (.txt, {text} JSONL or a datasets name)"""
    ptx_eval_file: str = "data/pretrain/heldout.txt"
    """held-out pretraining text: its loss is reported at the start and end ('' = none)"""
    ptx_block_size: int = 128
    """tokens per ptx sequence"""

    def check(self) -> None:
        _positive(self, "max_prompt_length", "ptx_block_size")


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    """response length limit; responses that reach it without EOS are penalised (ppo.missing_eos_penalty)"""
    temperature: float = 0.7
    """sampling temperature; log-probs are computed from logits / temperature too (N+ detail 3)"""
    top_k: int = 0
    """0 = no top-k filtering (N+)"""
    top_p: float = 1.0
    """1.0 = no nucleus filtering (N+)"""
    do_sample: bool = True
    """sample (True) or decode greedily (False: deterministic rollouts, e.g. to compare runs across world sizes)"""

    def check(self) -> None:
        _positive(self, "max_new_tokens", "temperature", "top_p")
        if self.top_p > 1 or self.top_k < 0:
            raise ValueError("top_p: must be in (0, 1], and top_k >= 0")
        if not self.do_sample and (self.top_k or self.top_p < 1):
            raise ValueError("do_sample: greedy decoding (false) ignores top_k and top_p; leave them at 0 and 1.0")


@dataclass
class RewardSourceConfig:
    model: str = ""
    """reward model directory from 'rlhf rm' (scores are normalised with its saved gain and bias)"""
    function: str = ""
    """instead of a model: a Python callable 'package.module:function' (prompts, responses, categories) -> scores"""
    clip: float = 0.0
    """clip scores to [-clip, clip] (before ppo.missing_eos_penalty is subtracted); 0 = off"""

    def check(self) -> None:
        if bool(self.model) == bool(self.function):
            raise ValueError("model: set exactly one of reward.model and reward.function")
        if self.function and ":" not in self.function:
            raise ValueError("function: expected 'package.module:function'")


@dataclass
class CriticConfig:
    model: str = ""
    """critic initialisation: a sequence-classification model dir; '' = the reward model (InstructGPT)"""
    learning_rate: float = 1e-5
    """critic learning rate (its own optimizer)"""

    def check(self) -> None:
        _positive(self, "learning_rate")


@dataclass
class PPOConfig:
    iterations: int = 100
    """rollout-and-train iterations"""
    rollout_batch_size: int = 64
    """prompts sampled per iteration, over all processes"""
    mini_batch_size: int = 16
    """episodes per optimizer step, over all processes"""
    ppo_epochs: int = 1
    """passes over each rollout (InstructGPT: 1; N+: 4)"""
    kl_coef: float = 0.05
    """beta: weight of the per-token KL penalty to the reference model (N+: 0.05; InstructGPT: 0.02)"""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """per-token KL estimator in the reward (k1 = log-ratio, as InstructGPT)"""
    adaptive_kl: bool = False
    """adapt beta towards kl_target (Ziegler et al. 2019)"""
    kl_target: float = 6.0
    """target of the summed per-sample KL for adaptive_kl"""
    kl_horizon: int = 10000
    """horizon of the adaptive controller"""
    gamma: float = 1.0
    """GAE discount (N+, InstructGPT: 1, no discount)"""
    lam: float = 0.95
    """GAE lambda (N+: 0.95)"""
    clip_range: float = 0.2
    """policy ratio clip epsilon (InstructGPT, N+: 0.2)"""
    clip_range_value: float = 0.2
    """value clip around the old values (N+: 0.2)"""
    vf_coef: float = 0.1
    """weight of the value loss (N+: 0.1)"""
    ptx_coef: float = 0.0
    """gamma of InstructGPT eq. 2: weight of the pretraining LM loss; 0 = plain PPO (InstructGPT used 27.8)"""
    ptx_batch_size: int = 4
    """pretraining sequences per micro-batch for the ptx term"""
    ptx_linearity_coef: float = 0.0
    """lambda of the cosine regulariser inside the ptx term: ptx_coef * (LM loss + lambda * sum_i (1 - cos(h_i,
    h_{i-1}))), as train.linearity_coef in pretraining (Razzhigaev et al. 2024: 0.5); needs ptx_coef > 0; 0 = off"""
    missing_eos_penalty: float = 1.0
    """amount subtracted from the score of a response that did not end with EOS (TRL's missing_eos_penalty), so
    not ending never pays, whatever the reward's scale. Changed: this key used to be the score that replaced it (N+
    'EOS trick'); a negative value, which would now raise the score, is refused; to replace, set missing_eos_score"""
    missing_eos_score: float | None = None
    """instead of subtracting missing_eos_penalty: replace the score of a response without EOS by this value (N+
    'EOS trick': -1 on normalised reward-model scores). Only safe below the reward's typical scores: every
    iteration where it raises the responses it replaces on average prints a warning; null = subtract"""
    penalize_missing_eos: bool = True
    """apply missing_eos_penalty (or missing_eos_score) to responses without EOS"""
    whiten_rewards: bool = False
    """whiten per-token rewards before GAE (off in N+)"""
    ema_decay: float = 0.0
    """keep an exponential moving average of the actor (InstructGPT: 0.992); 0 = off"""
    max_nonfinite: int = 3
    """abort after this many non-finite losses or scores in a row (each one skips its update)"""
    sample_every: int = 10
    """print a table of sampled prompt/response/score rows every this many iterations"""
    gather_for_generation: bool = True
    """ZeRO-3: gather the actor's parameters once per rollout for generation (fast); False: layer by layer per token"""
    gold_rubric: str = ""
    """a rubric file (data/palms/rubric.yaml): also score every rollout response with this rule-based judge and log
    gold_rubric_mean beside the proxy reward, so over-optimisation of the reward model shows (Gao et al. 2022);
    empty: off"""

    def check(self) -> None:
        _positive(self, "iterations", "rollout_batch_size", "mini_batch_size", "ppo_epochs", "ptx_batch_size",
                  "clip_range", "max_nonfinite", "sample_every", "kl_target", "kl_horizon")
        if self.kl_coef < 0 or self.ptx_coef < 0 or self.vf_coef < 0:
            raise ValueError("kl_coef: kl_coef, ptx_coef and vf_coef must be >= 0")
        if self.ptx_linearity_coef < 0:
            raise ValueError("ptx_linearity_coef: must be >= 0")
        if self.ptx_linearity_coef > 0 and self.ptx_coef == 0:
            raise ValueError("ptx_linearity_coef: the regulariser is part of the ptx term; set ppo.ptx_coef > 0 too")
        if self.rollout_batch_size % self.mini_batch_size:
            raise ValueError("mini_batch_size: must divide rollout_batch_size")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay: must be in [0, 1)")
        if self.missing_eos_penalty < 0:
            raise ValueError(
                f"missing_eos_penalty: {self.missing_eos_penalty} would raise the score of responses without EOS; it "
                f"is subtracted from the score (as TRL's missing_eos_penalty): give a positive amount, e.g. "
                f"{-self.missing_eos_penalty:g}, or set ppo.missing_eos_score={self.missing_eos_penalty:g} to replace "
                "the score by it as this key used to"
            )


@dataclass
class PPOStageConfig:
    """``rlhf ppo``: PPO-ptx against a reward model or function (InstructGPT eq. 2)."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PPODataConfig = field(default_factory=PPODataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    reward: RewardSourceConfig = field(default_factory=RewardSourceConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=3e-6, lr_scheduler="linear", adam_eps=1e-5))
    lora: LoraConfig = field(default_factory=LoraConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


@dataclass
class EvalDataConfig:
    prompt_file: str = "data/palms/eval_prompts.jsonl"
    """held-out prompts to evaluate on: {prompt} rows with category"""
    categories_file: str = "data/palms/categories.yaml"
    """category ids the prompts may use ('' = any)"""
    ptx_eval_file: str = "data/pretrain/heldout.txt"
    """held-out pretraining text for the capability check (perplexity per model); '' = skip"""
    block_size: int = 128
    """tokens per perplexity block"""
    max_blocks: int = 0
    """perplexity on the first N blocks of ptx_eval_file only (the same blocks for every model); 0 = all"""
    max_prompts: int = 0
    """evaluate on the first N prompts of prompt_file only; 0 = all (for quick smoke runs)"""

    def check(self) -> None:
        _positive(self, "block_size")
        if self.max_prompts < 0 or self.max_blocks < 0:
            raise ValueError("max_prompts: max_prompts and max_blocks must be >= 0 (0 = all)")


@dataclass
class EvalConfig:
    baseline: str = "sft"
    """name (a key of models) every candidate is compared against"""
    judges: list[str] = field(default_factory=lambda: ["rubric", "reward_model"])
    """judges to run: rubric, reward_model, llm, human"""
    samples_per_prompt: int = 1
    """responses generated per prompt and model (PALMS rated 3)"""
    bootstrap_resamples: int = 1000
    """paired bootstrap resamples over prompts for the 95% intervals"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype the evaluated models are loaded in"""
    batch_size: int = 16
    """prompts per generation / scoring batch"""
    generations_dir: str = ""
    """where generations are cached ('' = OUT/generations); evals of the same models can share one (entries are
    keyed by model weights, prompts and generation settings, so a mismatch regenerates)"""

    def check(self) -> None:
        bad = [j for j in self.judges if j not in ("rubric", "reward_model", "llm", "human")]
        if bad:
            raise ValueError(f"judges: unknown judge {bad[0]!r}; choose from rubric, reward_model, llm, human")
        _positive(self, "samples_per_prompt", "bootstrap_resamples", "batch_size")
        if self.bootstrap_resamples < 1000:
            raise ValueError("bootstrap_resamples: use at least 1000 resamples for a 95% interval")


@dataclass
class RubricJudgeConfig:
    file: str = "data/palms/rubric.yaml"
    """the rubric (offline stand-in for human raters; see the file header)"""
    tie_band: float = 0.0
    """score differences up to this are ties"""


@dataclass
class RewardJudgeConfig:
    model: str = ""
    """reward model directory (normalised scores); required when judges include reward_model"""
    tie_band: float = 0.0
    """normalised score differences up to this are ties"""
    missing_eos_score: float = -3.0
    """score of a response that did not end with EOS (as the PPO EOS trick)"""


@dataclass
class LLMJudgeConfig:
    model: str = ""
    """causal LM (dir or hub id) asked which answer is better, in both orders; required for judges: [llm]"""
    template: str = (
        "Two assistants answered a user. Which answer is more helpful, honest and harmless?\n\n"
        "{conversation}\n\nAnswer A: {first}\n\nAnswer B: {second}\n\nThe better answer is Answer"
    )
    """prompt template with {conversation} (the prompt conversation, 'System: ...', 'User: ...' paragraphs) or
    {prompt} (its last user message), {first}, {second}; the judge compares the next-token logits of ' A' and ' B'"""

    def check(self) -> None:
        if "{conversation}" not in self.template and "{prompt}" not in self.template:
            raise ValueError("template: must contain {conversation} or {prompt}")
        for key in ("{first}", "{second}"):
            if key not in self.template:
                raise ValueError(f"template: must contain {key}")


@dataclass
class EvalStageConfig:
    """``rlhf eval``: win rates of candidate models against a baseline, by pluggable judges."""

    run: RunConfig = field(default_factory=RunConfig)
    models: dict[str, str] = field(default_factory=dict)
    """name -> model directory or hub id; the baseline is one of them"""
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rubric_judge: RubricJudgeConfig = field(default_factory=RubricJudgeConfig)
    reward_judge: RewardJudgeConfig = field(default_factory=RewardJudgeConfig)
    llm_judge: LLMJudgeConfig = field(default_factory=LLMJudgeConfig)

    def check(self) -> None:
        if len(self.models) < 2:
            raise ValueError("models: name at least a baseline and one candidate (name: path)")
        if self.eval.baseline not in self.models:
            raise ValueError(f"models: the baseline {self.eval.baseline!r} (eval.baseline) is not among {sorted(self.models)}")
        for judge, section in judge_models(self.eval.judges):
            if not getattr(self, section).model:
                raise ValueError(f"models: judges include {judge} but {section}.model is empty")


def judge_models(judges: list[str]) -> list[tuple[str, str]]:
    """(judge, config section) for each judge in ``judges`` that loads a model (eval and compare share these)."""
    sections = {"reward_model": "reward_judge", "llm": "llm_judge"}
    return [(j, sections[j]) for j in judges if j in sections]


@dataclass
class CompareDataConfig:
    prompt_file: str = "data/prompts/train.jsonl"
    """prompts to sample responses to: {prompt} rows with category (training prompts, never the eval prompts)"""
    categories_file: str = "data/palms/categories.yaml"
    """category ids the prompts may use ('' = any)"""
    max_prompt_length: int = 128
    """prompts longer than this many tokens are an error"""
    max_prompts: int = 0
    """sample for the first N prompts of prompt_file only; 0 = all (a CPU time budget)"""

    def check(self) -> None:
        _positive(self, "max_prompt_length")
        if self.max_prompts < 0:
            raise ValueError("max_prompts: must be >= 0 (0 = all)")


@dataclass
class CompareConfig:
    responses_per_prompt: int = 4
    """K responses sampled per prompt; every pair of them is judged (InstructGPT ranked K = 4..9)"""
    judge: Literal["rubric", "reward_model", "llm"] = "rubric"
    """the labeller: rubric (offline stand-in for human raters), reward_model or llm"""
    batch_size: int = 64
    """responses generated per batch (and per resumable unit)"""
    keep_incomplete: bool = False
    """also keep pairs with a response cut off before EOS (the reward model sees every response with EOS)"""

    def check(self) -> None:
        if self.responses_per_prompt < 2:
            raise ValueError("responses_per_prompt: need at least 2 responses per prompt to compare")
        _positive(self, "batch_size")


@dataclass
class CompareStageConfig:
    """``rlhf compare``: sample K responses per prompt from a model, let a judge label every pair (comparison data)."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: CompareDataConfig = field(default_factory=CompareDataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    rubric_judge: RubricJudgeConfig = field(default_factory=RubricJudgeConfig)
    reward_judge: RewardJudgeConfig = field(default_factory=RewardJudgeConfig)
    llm_judge: LLMJudgeConfig = field(default_factory=LLMJudgeConfig)

    def check(self) -> None:
        if not self.model.name_or_path:
            raise ValueError("model: name_or_path: the model to sample from (the SFT model)")
        for judge, section in judge_models([self.compare.judge]):
            if not getattr(self, section).model:
                raise ValueError(f"compare: judge is {judge} but {section}.model is empty")


@dataclass
class PipelineStage:
    name: str = ""
    """the stage's name; its output directory is run_dir/name and {name} in overrides refers to it"""
    command: Literal["pretrain", "sft", "compare", "rm", "ppo", "eval"] = "sft"
    """which stage to run"""
    config: str = ""
    """the stage's own config file"""
    overrides: list[str] = field(default_factory=list)
    """key.sub=value overrides for the stage; {other_stage} is replaced by that stage's output directory"""
    expected_minutes: float = 1.0
    """rough duration, for the time-left estimate"""

    def check(self) -> None:
        if not self.name or not re.fullmatch(r"[A-Za-z0-9_]+", self.name):
            raise ValueError("name: use letters, digits and _ only")
        if not self.config:
            raise ValueError("config: name the stage's config file")


@dataclass
class PipelineConfig:
    """``rlhf pipeline``: stages run in order in one run directory."""

    run_dir: str = "runs/pipeline"
    """directory holding one output directory per stage"""
    stages: list[PipelineStage] = field(default_factory=list)
    """the stages, in order"""
    overrides: list[str] = field(default_factory=list)
    """overrides applied to every stage (e.g. run.progress=false, leaving the pipeline's overall view alone)"""
    progress: bool = True
    """one overall progress view on rank 0 (stage, step, time left): a live line on a terminal, else a log line"""
    progress_log_seconds: float = 30.0
    """when the output is not a terminal (a log file), write the overall progress line at most this often"""

    def check(self) -> None:
        if self.progress_log_seconds <= 0:
            raise ValueError("progress_log_seconds: must be > 0")
        names = [s.name for s in self.stages]
        if not names:
            raise ValueError("stages: list at least one stage")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"stages: duplicate stage name {sorted(dup)[0]!r}")


STAGES: dict[str, type] = {
    "pretrain": PretrainStageConfig,
    "sft": SFTStageConfig,
    "compare": CompareStageConfig,
    "rm": RMStageConfig,
    "ppo": PPOStageConfig,
    "eval": EvalStageConfig,
}


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ValueError(f"{name}: must be > 0, got {getattr(obj, name)!r}")


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docs of a dataclass's fields: the string literal right under each field (inherited ones too)."""
    docs: dict[str, str] = {}
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
            break
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return docs
    body = tree.body[0].body  # type: ignore[attr-defined]
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted key paths of a YAML mapping to their 1-based line numbers."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1
                walk(v, key + ".")

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def _duplicate_key(text: str, name: str) -> None:
    """Strict loading: a key given twice in one mapping is a ConfigError (YAML itself lets the last one win)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return  # reported by the load that follows

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    line = k.start_mark.line + 1
                    if k.value in seen:
                        raise ConfigError(f"{name}:{line}: duplicate key '{prefix}{k.value}' (first at line "
                                          f"{seen[k.value]}); keep one of them")
                    seen[k.value] = line
                walk(v, f"{prefix}{k.value}.")
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{prefix.rstrip('.')}[{i}].")

    if root is not None:
        walk(root, "")


class _Source:
    """Where values came from, for error messages."""

    def __init__(self, path: str, lines: dict[str, int], override_keys: set[str]):
        self.path, self.lines, self.override_keys = path, lines, override_keys

    def where(self, key: str) -> str:
        if key in self.override_keys:
            return f"command-line override '{key}'"
        line = self.lines.get(key)
        # fall back to the closest enclosing key that has a line
        parent = key
        while line is None and "." in parent:
            parent = parent.rsplit(".", 1)[0]
            line = self.lines.get(parent)
        return f"{self.path}:{line}" if line else self.path


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return repr(tp).replace("typing.", "")
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, src: _Source) -> Any:
    """Check/convert ``value`` to type ``tp``; raise ConfigError naming key and place."""
    origin = typing.get_origin(tp)

    def bad(extra: str = "") -> ConfigError:
        msg = f"{src.where(key)}: key '{key}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        return ConfigError(msg + extra)

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad(" (a mapping of its fields)")
        return _build(tp, value, key + ".", src)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise bad(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, src)
            except ConfigError:
                continue
        raise bad()
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item_tp is str:
            value = [value] if value != "" else []
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [_coerce(v, item_tp, f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad()
        return {_coerce(k, k_tp, key, src): _coerce(v, v_tp, f"{key}.{k}", src) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads '1e-5' as a string
            try:
                number = float(value)
            except ValueError:
                raise bad() from None
        if number is None:
            raise bad()
        if not math.isfinite(number):  # .nan / .inf in YAML, nan / inf on the command line
            raise bad(" (a finite number: nan and inf are not allowed)")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise bad()
    raise bad()


def _build(cls: type, data: dict, prefix: str, src: _Source) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            valid = ", ".join(names)
            raise ConfigError(f"{src.where(key)}: unknown key '{key}'{hint}; valid keys here: {valid}")
        kwargs[k] = _coerce(v, hints[k], key, src)
    for k in names:  # sections left out of the file still get their defaults validated
        if k not in kwargs and dataclasses.is_dataclass(hints[k]):
            kwargs[k] = _build(hints[k], {}, f"{prefix}{k}.", src)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            msg = str(e)
            field_name = msg.split(":", 1)[0].strip()
            key = f"{prefix}{field_name}" if field_name in names else prefix.rstrip(".")
            raise ConfigError(f"{src.where(key)}: key '{key}': {msg.split(':', 1)[-1].strip()}") from None
    return obj


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value); the value is read as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def load_config(cls: type, path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Load ``path`` (YAML) into dataclass ``cls``, apply ``overrides``, validate, and return it."""
    text, data, name = "", {}, "<defaults>"
    if path is not None:
        name = str(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"{name}: cannot read config: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{name}: cannot read config: not UTF-8 text (byte {e.start + 1})") from None
        _duplicate_key(text, name)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{name}:{mark.line + 1}" if mark else name
            raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: the top level must be a mapping of sections")
        # A stage's saved OUT/config.yaml can be passed back as a config: its `derived` section (world size,
        # batch arithmetic, parameter counts) is output, recomputed on every run, so it is not read.
        if "derived" in data and "derived" not in {f.name for f in dataclasses.fields(cls)}:
            data.pop("derived")
    keys: set[str] = set()
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
        keys.add(key)
    return _build(cls, data, "", _Source(name, _key_lines(text), keys))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any, extra: dict | None = None) -> str:
    """The resolved config as YAML (what every stage saves beside its output)."""
    data = to_dict(cfg)
    if extra:
        data = {**data, **extra}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def describe(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every field, recursively: the reference for ``rlhf config``.

    Defaults come from a default instance, so a stage that overrides a section's defaults shows its own.
    """
    rows = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    instance = instance if instance is not None else cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.", value)
            continue
        rows.append((prefix + f.name, _type_name(tp), value, docs.get(f.name, "")))
    return rows
