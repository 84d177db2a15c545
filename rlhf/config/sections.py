"""Sections shared by the stages: ``run``, ``model``, ``train``, ``lora``, ``deepspeed``, ``generation`` and the
judges (``rubric_judge``, ``reward_judge``, ``llm_judge``) of eval and compare.

Every field is declared once, with its type, default and a one-line doc: the string literal right under it, which
:func:`rlhf.config.field_docs` reads from this source for ``rlhf config``. A section's ``check()`` validates
values that its types alone cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlhf.config.errors import FieldError


def require_positive(obj: Any, *names: str) -> None:
    """For a ``check()``: refuse the first of the fields ``names`` of ``obj`` that is not > 0."""
    for name in names:
        if getattr(obj, name) <= 0:
            raise FieldError(name, f"must be > 0, got {getattr(obj, name)!r}")


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
            raise FieldError("resume", "use 'auto', 'never' or a checkpoint directory")
        bad = [r for r in self.report_to if r not in ("tensorboard", "wandb")]
        if bad:
            raise FieldError("report_to", f"unknown sink {bad[0]!r}; choose from 'tensorboard', 'wandb'")
        require_positive(self, "logging_steps", "save_steps", "save_total_limit")


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
    fused_adam: bool = False
    """pretrain and PPO (which build their own AdamW): PyTorch's fused AdamW kernel instead of its per-parameter
    loop; the same update up to rounding. Adam's updates are about 5% of a PPO iteration at hidden 512, which bounds
    the gain (docs/speed.md). SFT, RM and DPO train through TRL, whose default optimizer is this fused kernel already.
    Ignored with offload_optimizer (DeepSpeed's CPU Adam)"""
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
        require_positive(self, "learning_rate", "adam_eps")
        if not 0 <= self.min_lr_ratio <= 1:
            raise FieldError("min_lr_ratio", "must be in [0, 1]")
        if self.max_steps < 0 or self.warmup_steps < 0 or self.eval_steps < 0:
            raise ValueError("max_steps, warmup_steps and eval_steps must be >= 0")
        if self.max_steps == 0 and self.epochs <= 0:
            raise FieldError("epochs", "must be > 0 when max_steps is 0")


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
        require_positive(self, "r", "alpha")
        if not self.target_modules:
            raise FieldError("target_modules", "must name at least one module")


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
        require_positive(self, "global_batch_size", "micro_batch_size", "reference_world_size")
        if self.offload_param and self.zero_stage != 3:
            raise FieldError("offload_param", "needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise FieldError("offload_optimizer", "needs zero_stage 1, 2 or 3")
        if self.gradient_clipping < 0:
            raise FieldError("gradient_clipping", "must be >= 0")


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
    min_new_tokens: int = 0
    """EOS is suppressed until a response has this many tokens (0 = off). For benchmarks at a fixed response
    length (``rlhf bench trl``); the sampled tokens then do not follow logits / temperature exactly"""

    def check(self) -> None:
        require_positive(self, "max_new_tokens", "temperature", "top_p")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise FieldError("min_new_tokens", "must be between 0 and max_new_tokens")
        if self.top_p > 1 or self.top_k < 0:
            raise FieldError("top_p", "must be in (0, 1], and top_k >= 0")
        if not self.do_sample and (self.top_k or self.top_p < 1):
            raise FieldError("do_sample", "greedy decoding (false) ignores top_k and top_p; leave them at 0 and 1.0")


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
            raise FieldError("template", "must contain {conversation} or {prompt}")
        for key in ("{first}", "{second}"):
            if key not in self.template:
                raise FieldError("template", f"must contain {key}")


def judge_models(judges: list[str]) -> list[tuple[str, str]]:
    """(judge, config section) for each judge in ``judges`` that loads a model (eval and compare share these)."""
    sections = {"reward_model": "reward_judge", "llm": "llm_judge"}
    return [(j, sections[j]) for j in judges if j in sections]
