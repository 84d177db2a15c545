"""Typed configuration: YAML + ``key.sub=value`` overrides -> dataclasses.

Every field is declared once, with its type, default and a one-line doc (the string literal under it).
Loading is strict: an unknown key, a wrong type or a bad value is a :class:`ConfigError` naming the key,
the file and the line, and, for a typo, the closest valid key.

Sections are shared between stages (``run``, ``model``, ``train``, ``lora``, ``deepspeed``); each stage
has a root dataclass that composes the sections it reads (``SFTStageConfig`` ...). Derived values are
computed once by the stage (see :func:`rlhf.engine.resolve_batch`) and printed.

The package: :mod:`~rlhf.config.errors` (:class:`ConfigError`, :class:`FieldError`), :mod:`~rlhf.config.sections`
(the sections the stages share), :mod:`~rlhf.config.stages` (each stage's own sections and root, the pipeline's config,
:data:`STAGES`) and :mod:`~rlhf.config.loader` (reading, validating, dumping and describing). Import from
``rlhf.config``; the names below are its interface.
"""

from rlhf.config.errors import ConfigError, FieldError
from rlhf.config.loader import describe, dump_yaml, field_docs, load_config, load_section, parse_override, to_dict
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
)
from rlhf.config.stages import (
    STAGES,
    CompareConfig,
    CompareDataConfig,
    CompareStageConfig,
    CriticConfig,
    DPOConfig,
    DPODataConfig,
    DPOStageConfig,
    EvalConfig,
    EvalDataConfig,
    EvalStageConfig,
    PipelineConfig,
    PipelineStage,
    PPOConfig,
    PPODataConfig,
    PPOStageConfig,
    PretrainDataConfig,
    PretrainStageConfig,
    PretrainTrainConfig,
    RewardConfig,
    RewardSourceConfig,
    RMDataConfig,
    RMStageConfig,
    SFTDataConfig,
    SFTStageConfig,
)

__all__ = [
    "STAGES",
    "CompareConfig",
    "CompareDataConfig",
    "CompareStageConfig",
    "ConfigError",
    "CriticConfig",
    "DPOConfig",
    "DPODataConfig",
    "DPOStageConfig",
    "DeepSpeedConfig",
    "EvalConfig",
    "EvalDataConfig",
    "EvalStageConfig",
    "FieldError",
    "GenerationConfig",
    "LLMJudgeConfig",
    "LoraConfig",
    "ModelConfig",
    "PPOConfig",
    "PPODataConfig",
    "PPOStageConfig",
    "PipelineConfig",
    "PipelineStage",
    "PretrainDataConfig",
    "PretrainStageConfig",
    "PretrainTrainConfig",
    "RMDataConfig",
    "RMStageConfig",
    "RewardConfig",
    "RewardJudgeConfig",
    "RewardSourceConfig",
    "RubricJudgeConfig",
    "RunConfig",
    "SFTDataConfig",
    "SFTStageConfig",
    "TrainConfig",
    "describe",
    "dump_yaml",
    "field_docs",
    "judge_models",
    "load_config",
    "load_section",
    "parse_override",
    "to_dict",
]
