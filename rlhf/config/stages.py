"""Stage roots: each stage's own sections (``data``, ``reward``, ``ppo`` ...) and its root dataclass, which
composes them with the shared ones (``SFTStageConfig`` ...); the pipeline's config; and :data:`STAGES`, the stage
name -> root class map the CLI dispatches on. Field docs are the string literals under the fields, as in
:mod:`rlhf.config.sections`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from rlhf.config.errors import FieldError
from rlhf.config.sections import (
    DeepSpeedConfig,
    GenerationConfig,
    LLMJudgeConfig,
    LoraConfig,
    ModelConfig,
    RewardJudgeConfig,
    RubricJudgeConfig,
    RunConfig,
    TrainConfig,
    judge_models,
    require_positive,
)


@dataclass
class PretrainDataConfig:
    train_files: list[str] = field(default_factory=lambda: ["data/pretrain/train.txt"])
    """pretraining text: .txt files, JSONL with a 'text' field, or a datasets name"""
    eval_file: str = "data/pretrain/heldout.txt"
    """held-out text for perplexity"""
    block_size: int = 256
    """tokens per training sequence (documents are concatenated with EOS and chunked)"""

    def check(self) -> None:
        require_positive(self, "block_size")
        if not self.train_files:
            raise FieldError("train_files", "name at least one file")


@dataclass
class PretrainTrainConfig(TrainConfig):
    """The optimisation settings every stage shares, and pretraining's own regulariser."""

    linearity_coef: float = 0.0
    """lambda of the cosine regulariser lambda * sum_i (1 - cos(h_i, h_{i-1})) over consecutive layers, added to
    the LM loss (Razzhigaev et al. 2024 used 0.5; it lowered layer linearity); 0 = off"""

    def check(self) -> None:
        super().check()
        if self.linearity_coef < 0:
            raise FieldError("linearity_coef", "must be >= 0")


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
            raise FieldError("eval_fraction", "must be in [0, 1)")
        require_positive(self, "max_length")


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
    extra_test_files: list[str] = field(default_factory=list)
    """more held-out pairs, each file scored on its own (summary.json 'extra_test'), e.g. 'rlhf compare' pairs of
    held-out prompts: the reward model's agreement with the judge that ranked them, on the policy's own samples"""
    group_by_prompt: bool = False
    """InstructGPT's batching: all pairs that share a prompt (in one file) form one batch element; each distinct
    response is scored once and the element's loss is the mean over its C(K, 2) pairs, so a prompt with K ranked
    responses weighs as much as one hand-written pair and its correlated pairs are not seen as independent rows.
    global_batch_size then counts prompts, not pairs"""

    def check(self) -> None:
        require_positive(self, "max_length")
        if self.max_train_pairs < 0:
            raise FieldError("max_train_pairs", "must be >= 0 (0 = all pairs)")


@dataclass
class RewardConfig:
    center_rewards_coefficient: float = 0.0
    """weight of the centring penalty mean((r_c + r_r)^2) (Eisenstein et al. 2023 suggest 0.01)"""
    head_init_std: float = 0.0
    """std of the new scalar head's weights; 0 = 1/sqrt(hidden + 1) (N+ detail 12)"""
    ece_bins: int = 10
    """bins of the expected calibration error"""

    def check(self) -> None:
        if self.center_rewards_coefficient < 0:
            raise FieldError("center_rewards_coefficient", "must be >= 0")
        if self.head_init_std < 0:
            raise FieldError("head_init_std", "must be >= 0")
        require_positive(self, "ece_bins")


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
class DPODataConfig:
    train_file: str = "data/preferences/train.jsonl"
    """preference pairs to train on: {prompt, chosen, rejected}, {chosen, rejected} or HH transcripts (a 'margin'
    field is read and ignored: DPO's loss has none)"""
    test_file: str = "data/preferences/test.jsonl"
    """held-out pairs: preference accuracy and margin of the implicit reward before and after training ('' = none)"""
    categories_file: str = "data/palms/categories.yaml"
    """category ids the data may use ('' = any)"""
    max_length: int = 512
    """maximum tokens of prompt + response (the longer of chosen and rejected)"""
    on_overlength: Literal["error", "truncate", "drop"] = "error"
    """what to do with a pair over max_length ('truncate' keeps the prompt and cuts both responses)"""
    on_invalid: Literal["error", "drop"] = "error"
    """what to do with an invalid pair (bad JSON, prompts of chosen and rejected that differ, an empty response,
    chosen == rejected): 'error' refuses the file listing every one; 'drop' trains without them and reports them"""
    max_train_pairs: int = 0
    """train on the first N pairs of train_file only; 0 = all (a CPU time budget)"""
    extra_train_files: list[str] = field(default_factory=list)
    """more pairs trained on together with train_file, e.g. the pairs.jsonl of 'rlhf compare'"""

    def check(self) -> None:
        require_positive(self, "max_length")
        if self.max_train_pairs < 0:
            raise FieldError("max_train_pairs", "must be >= 0 (0 = all pairs)")


@dataclass
class DPOConfig:
    beta: float = 0.1
    """beta of Rafailov et al. 2023 eq. 7: the implicit reward is beta * log(pi / pi_ref); higher keeps the policy
    closer to the reference (for 'ipo' it is tau of Azar et al. 2023)"""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
                       "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"] = "sigmoid"
    """TRL DPOTrainer's loss: 'sigmoid' is DPO (eq. 7), 'ipo' IPO (Azar et al. 2023), 'robust' cDPO-style robust DPO
    with label_smoothing, the others as TRL documents them"""
    label_smoothing: float = 0.0
    """probability that a preference label is flipped, for 'robust' (must be < 0.5) and 'exo_pair' (must be > 0);
    the other losses ignore it"""

    def check(self) -> None:
        require_positive(self, "beta")
        if not 0 <= self.label_smoothing < 0.5:
            raise FieldError("label_smoothing", "must be in [0, 0.5)")
        if self.loss_type == "exo_pair" and self.label_smoothing == 0:
            raise FieldError("label_smoothing", "loss_type 'exo_pair' needs label_smoothing > 0 (EXO suggests 1e-3)")
        if self.label_smoothing > 0 and self.loss_type not in ("robust", "exo_pair", "aot", "aot_unpaired"):
            raise FieldError("label_smoothing", f"loss_type {self.loss_type!r} does not use it; leave it at 0")


@dataclass
class DPOStageConfig:
    """``rlhf dpo``: Direct Preference Optimisation of the SFT model on preference pairs (TRL DPOTrainer)."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DPODataConfig = field(default_factory=DPODataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-6, lr_scheduler="constant"))
    dpo: DPOConfig = field(default_factory=DPOConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)

    def check(self) -> None:
        if self.train.eval_steps and not self.data.test_file:
            raise FieldError("train", "eval_steps > 0 evaluates on data.test_file, which is empty")
        if self.lora.enabled and "lm_head" in self.lora.target_modules:
            raise FieldError("lora", "target_modules: TRL's DPO reads log-probabilities through lm_head's weight "
                             "directly, so an adapter there would never train; leave lm_head out")


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
        require_positive(self, "max_prompt_length", "ptx_block_size")


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
            raise FieldError("model", "set exactly one of reward.model and reward.function")
        if self.function and ":" not in self.function:
            raise FieldError("function", "expected 'package.module:function'")


@dataclass
class CriticConfig:
    model: str = ""
    """critic initialisation: a sequence-classification model dir; '' = the reward model (InstructGPT)"""
    learning_rate: float = 1e-5
    """critic learning rate (its own optimizer)"""

    def check(self) -> None:
        require_positive(self, "learning_rate")


@dataclass
class PPOConfig:
    iterations: int = 100
    """rollout-and-train iterations"""
    rollout_batch_size: int = 64
    """episodes (sampled responses) per iteration, over all processes: rollout_batch_size / samples_per_prompt
    prompts, each answered samples_per_prompt times"""
    mini_batch_size: int = 16
    """episodes per optimizer step, over all processes"""
    ppo_epochs: int = 1
    """passes over each rollout (InstructGPT: 1; N+: 4)"""
    advantage_estimator: Literal["gae", "rloo", "grpo"] = "gae"
    """gae: PPO with a learned critic (InstructGPT); rloo: each response's KL-penalised reward minus the mean of the
    other responses to its prompt (Ahmadian et al. 2024); grpo: the score normalised within its prompt's group, the
    k3 KL to the reference in the loss with weight kl_coef (Shao et al. 2024). rloo and grpo build no critic"""
    samples_per_prompt: int = 1
    """k: responses sampled per prompt in a rollout, the group of rloo and grpo (which need k >= 2)"""
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
    response_logits_only: bool = False
    """compute the actor's and reference's logits over the vocabulary at response positions only (not over the
    prompt, whose logits PPO never uses): a faster forward and backward pass where the LM head is a large share of
    the model. The log-probs are the same numbers; the head's weight gradient sums over fewer positions and may
    differ in the last bits, so a run is not bit-identical to one without (docs/speed.md)"""
    logprobs_from_generation: bool = False
    """take the old log-probs and the entropy from the logits the sampling pass computed (KV cache) instead of a
    second forward pass of the actor over the rollout: one actor forward less per iteration. The two agree to
    float rounding, not bit for bit (docs/speed.md gives the measured difference), so the first minibatch's ratio
    is not exactly 1"""
    gold_rubric: str = ""
    """a rubric file (data/palms/rubric.yaml): also score every rollout response with this rule-based judge and log
    gold_rubric_mean beside the proxy reward, so over-optimisation of the reward model shows (Gao et al. 2022);
    empty: off"""

    def check(self) -> None:
        require_positive(self, "iterations", "rollout_batch_size", "mini_batch_size", "ppo_epochs", "ptx_batch_size",
                         "clip_range", "max_nonfinite", "sample_every", "kl_target", "kl_horizon")
        require_positive(self, "samples_per_prompt")
        if self.advantage_estimator != "gae" and self.samples_per_prompt < 2:
            raise FieldError("samples_per_prompt", f"{self.samples_per_prompt}: advantage_estimator "
                             f"{self.advantage_estimator} compares the responses to one prompt with each other and "
                             "needs at least 2 per prompt (e.g. ppo.samples_per_prompt=4)")
        if self.rollout_batch_size % self.samples_per_prompt:
            raise FieldError("samples_per_prompt", f"{self.samples_per_prompt} must divide rollout_batch_size "
                             f"({self.rollout_batch_size}): a rollout holds whole groups")
        if self.kl_coef < 0 or self.ptx_coef < 0 or self.vf_coef < 0:
            raise FieldError("kl_coef", "kl_coef, ptx_coef and vf_coef must be >= 0")
        if self.ptx_linearity_coef < 0:
            raise FieldError("ptx_linearity_coef", "must be >= 0")
        if self.ptx_linearity_coef > 0 and self.ptx_coef == 0:
            raise FieldError("ptx_linearity_coef", "the regulariser is part of the ptx term; set ppo.ptx_coef > 0 too")
        if self.rollout_batch_size % self.mini_batch_size:
            raise FieldError("mini_batch_size", "must divide rollout_batch_size")
        if not 0 <= self.ema_decay < 1:
            raise FieldError("ema_decay", "must be in [0, 1)")
        if self.missing_eos_penalty < 0:
            raise FieldError(
                "missing_eos_penalty",
                f"{self.missing_eos_penalty} would raise the score of responses without EOS; it "
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
        require_positive(self, "block_size")
        if self.max_prompts < 0 or self.max_blocks < 0:
            raise FieldError("max_prompts", "max_prompts and max_blocks must be >= 0 (0 = all)")


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
    """prompts per generation batch (and per scoring batch unless score_batch_size is set)"""
    score_batch_size: int = 0
    """sequences per scoring forward (held-out perplexity, KL to the baseline); 0 = batch_size. A scoring forward
    holds batch x length x vocabulary logits: a big vocabulary wants a smaller batch here than for generation"""
    generations_dir: str = ""
    """where generations are cached ('' = OUT/generations); evals of the same models can share one (entries are
    keyed by model weights, prompts and generation settings, so a mismatch regenerates)"""
    kl_to_baseline: bool = True
    """estimate each model's KL divergence from the baseline, in nats per answer, from its own eval samples (re-
    tokenised; both models at generation.temperature); models whose tokenizer differs from the baseline's get none"""

    def check(self) -> None:
        bad = [j for j in self.judges if j not in ("rubric", "reward_model", "llm", "human")]
        if bad:
            raise FieldError("judges", f"unknown judge {bad[0]!r}; choose from rubric, reward_model, llm, human")
        require_positive(self, "samples_per_prompt", "bootstrap_resamples", "batch_size")
        if self.score_batch_size < 0:
            raise FieldError("score_batch_size", f"must be 0 (= batch_size) or positive, got {self.score_batch_size}")
        if self.bootstrap_resamples < 1000:
            raise FieldError("bootstrap_resamples", "use at least 1000 resamples for a 95% interval")

    @property
    def scoring_batch(self) -> int:
        return self.score_batch_size or self.batch_size


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
            raise FieldError("models", "name at least a baseline and one candidate (name: path)")
        if self.eval.baseline not in self.models:
            raise FieldError("models", f"the baseline {self.eval.baseline!r} (eval.baseline) is not among {sorted(self.models)}")
        for judge, section in judge_models(self.eval.judges):
            if not getattr(self, section).model:
                raise FieldError("models", f"judges include {judge} but {section}.model is empty")


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
        require_positive(self, "max_prompt_length")
        if self.max_prompts < 0:
            raise FieldError("max_prompts", "must be >= 0 (0 = all)")


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
            raise FieldError("responses_per_prompt", "need at least 2 responses per prompt to compare")
        require_positive(self, "batch_size")


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
            raise FieldError("model", "name_or_path: the model to sample from (the SFT model)")
        for judge, section in judge_models([self.compare.judge]):
            if not getattr(self, section).model:
                raise FieldError("compare", f"judge is {judge} but {section}.model is empty")


@dataclass
class PipelineStage:
    name: str = ""
    """the stage's name; its output directory is run_dir/name and {name} in overrides refers to it"""
    command: Literal["pretrain", "sft", "compare", "rm", "dpo", "ppo", "eval"] = "sft"
    """which stage to run"""
    config: str = ""
    """the stage's own config file"""
    overrides: list[str] = field(default_factory=list)
    """key.sub=value overrides for the stage; {other_stage} is replaced by that stage's output directory"""
    expected_minutes: float = 1.0
    """rough duration, for the time-left estimate"""

    def check(self) -> None:
        if not self.name or not re.fullmatch(r"[A-Za-z0-9_]+", self.name):
            raise FieldError("name", "use letters, digits and _ only")
        if not self.config:
            raise FieldError("config", "name the stage's config file")


@dataclass
class PipelineConfig:
    """``rlhf pipeline``: stages run in order in one run directory."""

    run_dir: str = "runs/pipeline"
    """directory holding one output directory per stage"""
    stages: list[PipelineStage] = field(default_factory=list)
    """the stages, in order"""
    overrides: list[str] = field(default_factory=list)
    """overrides applied to every stage (e.g. run.progress=false, leaving the pipeline's overall view alone)"""
    precision: Literal["", "fp32", "bf16", "fp16"] = ""
    """one precision for every stage ('' = each stage's own config): training stages get deepspeed.precision and
    model.dtype, compare model.dtype, eval eval.dtype (docs/speed.md has bf16's measured effect)"""
    progress: bool = True
    """one overall progress view on rank 0 (stage, step, time left): a live line on a terminal, else a log line"""
    progress_log_seconds: float = 30.0
    """when the output is not a terminal (a log file), write the overall progress line at most this often"""

    def check(self) -> None:
        if self.progress_log_seconds <= 0:
            raise FieldError("progress_log_seconds", "must be > 0")
        names = [s.name for s in self.stages]
        if not names:
            raise FieldError("stages", "list at least one stage")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise FieldError("stages", f"duplicate stage name {sorted(dup)[0]!r}")


STAGES: dict[str, type] = {
    "pretrain": PretrainStageConfig,
    "sft": SFTStageConfig,
    "compare": CompareStageConfig,
    "rm": RMStageConfig,
    "dpo": DPOStageConfig,
    "ppo": PPOStageConfig,
    "eval": EvalStageConfig,
}
