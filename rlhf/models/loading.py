"""Load and build models and tokenizers: hub id or local path, from a config, optional LoRA.

Weights load from safetensors only (:func:`from_pretrained`: ``use_safetensors=True``, and a directory whose weights
are only pickles is refused before anything reads it); ``trust_remote_code`` is off unless the config turns it on.
Dropout is switched off in every model we load (PPO implementation detail 9, docs/ppo.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from rlhf.config import ConfigError, LoraConfig, ModelConfig
from rlhf.errors import CheckpointError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _hub_kwargs(cfg: ModelConfig) -> dict:
    kw: dict = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        kw["revision"] = cfg.revision
    return kw


# weight files that are pickles (or other formats transformers may read instead of safetensors)
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack")


def require_safetensors(path: str) -> None:
    """A local model directory must hold safetensors weights; one whose weights are only pickles (e.g.
    ``pytorch_model.bin``, which can run code when loaded) is a :class:`CheckpointError` naming it."""
    if not os.path.isdir(path):
        return
    names = os.listdir(path)
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith(PICKLE_WEIGHTS) and n != "training_args.bin")
    found = f"its weights are only in {', '.join(pickles)}, which can run code when loaded" if pickles else (
        "it holds no model.safetensors")
    raise CheckpointError(
        f"{path}: {found}: models load from safetensors only. Point at a directory saved with safetensors, or, "
        "if you trust the files, convert them once (save_pretrained writes model.safetensors)"
    )


def from_pretrained(cls, path: str, **kw):
    """``cls.from_pretrained(path, **kw)`` with weights from safetensors only (GGUF when ``gguf_file`` is given): a
    directory or hub repository without safetensors weights is a :class:`CheckpointError`, and no pickle is read."""
    if kw.get("gguf_file"):
        return cls.from_pretrained(path, **kw)
    require_safetensors(path)
    try:
        return cls.from_pretrained(path, use_safetensors=True, **kw)
    except OSError as e:
        if "safetensors" not in str(e):
            raise
        raise CheckpointError(f"{path}: no safetensors weights ({e}); models load from safetensors only") from None
@contextlib.contextmanager
def _load_errors(key: str, path: str):
    """transformers' refusals as one ConfigError naming ``key``: a model or tokenizer that needs its own code
    (a ValueError), and a hub id that cannot be fetched (an OSError, e.g. offline; local directories keep theirs)."""
    try:
        yield
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise ConfigError(f"{key}: {path} needs its own Python code and model.trust_remote_code is false: "
                          "set model.trust_remote_code=true if you trust that code") from None
    except OSError as e:
        if e.errno is not None or os.path.isdir(os.path.expanduser(path)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key}: {path}: not a local directory, and loading it from the hub failed: {first}"
                          ) from None


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer for ``cfg``; checks PAD != EOS and that a chat template exists."""
    path = cfg.tokenizer_path
    if not path:
        raise ConfigError("model.tokenizer: no tokenizer given (set model.tokenizer or model.name_or_path)")
    kw = _hub_kwargs(cfg)
    if cfg.gguf_file and not cfg.tokenizer:
        kw["gguf_file"] = cfg.gguf_file
    with _load_errors("model.tokenizer" if cfg.tokenizer else "model.name_or_path", path):
        tok = AutoTokenizer.from_pretrained(path, **kw)
    if cfg.chat_template:
        with open(cfg.chat_template, encoding="utf-8") as f:
            tok.chat_template = f.read()
    if tok.eos_token_id is None:
        raise ConfigError(f"model.tokenizer: {path} has no EOS token")
    ensure_pad(tok)
    if not tok.chat_template:
        raise ConfigError(
            f"model.tokenizer: {path} has no chat template; set model.chat_template to a Jinja template file"
        )
    return tok


def ensure_pad(tok) -> bool:
    """Make PAD distinct from EOS; returns True when a new token had to be added to the vocabulary.

    PAD must differ from EOS, or masking the padding also hides EOS and the policy never learns to stop (N+ detail
    2). An existing unused special token is reused when the vocabulary has one.
    """
    if tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id:
        return False
    for cand in ("<|pad|>", "<pad>", "<|finetune_right_pad_id|>", "[PAD]", "<|endoftext|>"):
        if cand in tok.get_vocab() and tok.convert_tokens_to_ids(cand) != tok.eos_token_id:
            tok.pad_token = cand
            return False
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    return True


def _finish(model: torch.nn.Module, tok: PreTrainedTokenizerBase | None) -> torch.nn.Module:
    if tok is not None:
        if len(tok) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tok))
        model.config.pad_token_id = tok.pad_token_id
        model.config.eos_token_id = tok.eos_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tok.pad_token_id
            model.generation_config.eos_token_id = tok.eos_token_id
    disable_dropout(model)
    return model


# names of dropout probabilities kept as plain floats: config fields, and attributes that modeling code copies onto
# modules at construction and passes to functional dropout in forward (llama/qwen2/mistral/gpt_neox attention:
# attention_dropout; opt: dropout on attention, layers and decoder, layerdrop; gpt2 reads nn.Dropout.p)
_DROPOUT_NAME = re.compile(r"dropout|pdrop|layerdrop|drop_prob|drop_rate|drop_path")


def _zero_dropout_floats(obj) -> None:
    for k, v in list(vars(obj).items()):
        if type(v) is float and v != 0.0 and _DROPOUT_NAME.search(k):
            setattr(obj, k, 0.0)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0: dropout modules, float dropout attributes of modules, config fields.

    Modules alone are not enough: Llama/Qwen2 attention keeps ``attention_dropout`` and OPT keeps ``dropout`` as
    floats on the module and calls functional dropout with them in train mode, so the PPO ratio would not start at 1.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
        _zero_dropout_floats(m)
    cfg = getattr(model, "config", None)
    if cfg is not None:
        configs = [cfg] + [v for v in vars(cfg).values() if isinstance(v, PretrainedConfig)]  # e.g. text_config
        for c in configs:
            _zero_dropout_floats(c)


def load_causal_lm(cfg: ModelConfig, tok: PreTrainedTokenizerBase | None = None) -> torch.nn.Module:
    """A causal LM from a hub id / local dir (safetensors only) or built from ``from_config``."""
    dtype = DTYPES[cfg.dtype]
    if cfg.from_config:
        with open(cfg.from_config, encoding="utf-8") as f:
            conf_dict = json.load(f)
        conf = AutoConfig.for_model(**conf_dict)
        model = AutoModelForCausalLM.from_config(conf, dtype=dtype, attn_implementation=cfg.attn_implementation)
        return _finish(model, tok)
    kw = _hub_kwargs(cfg)
    if cfg.gguf_file:
        kw["gguf_file"] = cfg.gguf_file
    with _load_errors("model.name_or_path", cfg.name_or_path):
        model = from_pretrained(
            AutoModelForCausalLM, cfg.name_or_path, dtype=dtype, attn_implementation=cfg.attn_implementation, **kw
        )
    return _finish(model, tok)


def lora_module_names(model: torch.nn.Module) -> list[str]:
    """The names (last dotted part) of the modules LoRA can adapt: linear, embedding and convolution layers."""
    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if n and (isinstance(m, kinds) or type(m).__name__ == "Conv1D")}
    return sorted(names)


def check_lora_targets(model: torch.nn.Module, lora: LoraConfig) -> None:
    """Every ``lora.target_modules`` entry must name a module of the model (peft's rule: the full name or its
    last dotted parts); 'all-linear' is peft's own choice of every linear layer."""
    names = [n for n, _ in model.named_modules() if n]
    missing = [t for t in lora.target_modules
               if t != "all-linear" and not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(
            f"lora.target_modules: the model has no module named {', '.join(repr(t) for t in missing)}; "
            f"its module names LoRA can adapt: {', '.join(lora_module_names(model))}"
        )


def peft_lora_config(model: torch.nn.Module, lora: LoraConfig, task_type: str = "CAUSAL_LM"):
    """The peft ``LoraConfig`` of our ``lora`` section, its target modules checked against ``model``."""
    from peft import LoraConfig as PeftLoraConfig

    check_lora_targets(model, lora)
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type=task_type,
        bias="none",
    )


def apply_lora(model: torch.nn.Module, lora: LoraConfig, task_type: str = "CAUSAL_LM") -> torch.nn.Module:
    """Wrap ``model`` with peft LoRA adapters (only adapters train)."""
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(model, lora, task_type))


def lora_parameter_count(model: torch.nn.Module, lora: LoraConfig, task_type: str = "CAUSAL_LM") -> int:
    """How many trainable parameters peft's LoRA adapters add to ``model``, counted on a meta-device skeleton of
    it (nothing allocated, ``model`` untouched): for a stage that hands the adapters to TRL to create."""
    import copy

    from peft import get_peft_model

    with torch.device("meta"):
        skeleton = type(model)(copy.deepcopy(model.config))
    return count_params(get_peft_model(skeleton, peft_lora_config(skeleton, lora, task_type)))[1]


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts (ZeRO-3 aware)."""
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))
