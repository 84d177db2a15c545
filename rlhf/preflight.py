"""Checks a stage config passes before the stage touches its output directory or loads a model.

:func:`rlhf.config.check_model_sources` checks the models; :func:`check_inputs` checks the rest a user can get
wrong in a config and that would otherwise fail later with a library's traceback: data files that do not exist
(named by their key, and never looked up on the hub when the name is a local file name) and a training
precision the machine's accelerator cannot run. Every failure is a :class:`rlhf.config.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from rlhf.config import (
    CompareStageConfig,
    ConfigError,
    DeepSpeedConfig,
    EvalStageConfig,
    ModelConfig,
    PPOStageConfig,
    judge_models,
)
from rlhf.data.formats import looks_local


def data_sources(cfg: Any) -> list[tuple[str, str]]:
    """(key, value) of every data file the stage reads: the ``data`` section's ``*_file`` / ``*_files`` keys
    that are set (the ptx text only when ``ppo.ptx_coef`` uses it)."""
    data = getattr(cfg, "data", None)
    if not dataclasses.is_dataclass(data):
        return []
    out: list[tuple[str, str]] = []
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        if f.name == "ptx_files" and isinstance(cfg, PPOStageConfig) and cfg.ppo.ptx_coef == 0:
            continue
        if f.name.endswith("_file") and isinstance(value, str) and value:
            out.append((f"data.{f.name}", value))
        elif f.name.endswith("_files") and isinstance(value, list):
            out += [(f"data.{f.name}[{i}]", v) for i, v in enumerate(value) if v]
    return out


def check_data_sources(cfg: Any) -> None:
    """A data file that is not there, named by its key. A name that looks like a local file (an extension such
    as .jsonl, or a path starting with ./ or /) fails at once; any other name may be a ``datasets`` name and is
    left to the loader. ``model.from_config`` and ``model.chat_template`` are always local files."""
    for key, value in data_sources(cfg):
        path = os.path.expanduser(value)
        if not os.path.exists(path) and looks_local(value):
            hint = " (set it to '' to allow any category)" if key == "data.categories_file" else ""
            raise ConfigError(f"{key}: {value}: no such file{hint}", key=key)
    model = getattr(cfg, "model", None)
    if isinstance(model, ModelConfig):
        for name in ("from_config", "chat_template"):
            value = getattr(model, name)
            if value and not os.path.isfile(os.path.expanduser(value)):
                raise ConfigError(f"model.{name}: {value}: no such file", key=f"model.{name}")


def check_precision(cfg: Any) -> None:
    """``deepspeed.precision`` must be one the accelerator runs: fp16 needs a GPU; bf16 needs one that has it."""
    ds = getattr(cfg, "deepspeed", None)
    if not isinstance(ds, DeepSpeedConfig) or ds.precision == "fp32":
        return
    import torch
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    dtype = torch.float16 if ds.precision == "fp16" else torch.bfloat16
    if dtype in acc.supported_dtypes():
        return
    name = acc.device_name()
    if ds.precision == "fp16" and name == "cpu":
        raise ConfigError("deepspeed.precision: fp16 needs a GPU and this machine runs on the CPU; "
                          "use deepspeed.precision=bf16 or fp32", key="deepspeed.precision")
    others = ", ".join(p for p, t in (("bf16", torch.bfloat16), ("fp16", torch.float16))
                       if t in acc.supported_dtypes())
    raise ConfigError(f"deepspeed.precision: {ds.precision} is not supported on this {name} device; "
                      f"use deepspeed.precision={'fp32' if not others else others.split(', ')[0] + ' or fp32'}",
                      key="deepspeed.precision")


def check_inputs(cfg: Any) -> None:
    """Everything above, for one stage config (``rlhf <stage>`` and each stage of ``rlhf pipeline``)."""
    check_data_sources(cfg)
    check_precision(cfg)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def model_sources(cfg: Any) -> list[tuple[str, str, str]]:
    """(key, value, kind) for every model or tokenizer a stage config will load; kind: model, tokenizer, gguf.

    Judge models count only when their judge is used, so a stale path under an unused judge does not block a run.
    """
    out: list[tuple[str, str, str]] = []
    model = getattr(cfg, "model", None)
    if isinstance(model, ModelConfig):
        if model.name_or_path:
            out.append(("model.name_or_path", model.name_or_path, "gguf" if model.gguf_file else "model"))
        if model.tokenizer:
            out.append(("model.tokenizer", model.tokenizer, "tokenizer"))
    if isinstance(cfg, PPOStageConfig):
        out += [(f"{sec}.model", getattr(cfg, sec).model, "model") for sec in ("reward", "critic")
                if getattr(cfg, sec).model and (sec == "reward" or cfg.ppo.advantage_estimator == "gae")]
    judges: list[str] = []
    if isinstance(cfg, EvalStageConfig):
        out += [(f"models.{name}", path, "model") for name, path in cfg.models.items()]
        judges = list(cfg.eval.judges)
    elif isinstance(cfg, CompareStageConfig):
        judges = [cfg.compare.judge]
    out += [(f"{section}.model", getattr(cfg, section).model, "model") for _, section in judge_models(judges)
            if getattr(cfg, section).model]
    return out


def check_model_sources(cfg: Any) -> None:
    """Fail before any loading when a model path a stage needs is missing or unfinished, naming its key.

    A value is accepted when it is a directory holding a model (config.json) or tokenizer, or when it has the
    shape of a hub id (``owner/name``, where ``owner`` is not a local directory); anything else, e.g.
    ``runs/tiny/sft`` before SFT has run or a bare ``name`` that is not on disk, is a :class:`ConfigError`,
    as is a model directory whose config needs its own Python code while ``model.trust_remote_code`` is false.
    """
    markers = {"model": ("config.json",), "tokenizer": ("tokenizer.json", "tokenizer_config.json"), "gguf": ()}
    model = getattr(cfg, "model", None)
    for key, value, kind in model_sources(cfg):
        path = os.path.expanduser(value)
        if os.path.isdir(path):
            need = markers[kind]
            if need and not any(os.path.isfile(os.path.join(path, m)) for m in need):
                raise ConfigError(
                    f"{key}: {value} is a directory without {' or '.join(need)}, so it holds no {kind}; "
                    "if an earlier stage writes it, that stage has not finished",
                    key=key,
                )
            trusted = key.startswith("model.") and isinstance(model, ModelConfig) and model.trust_remote_code
            if kind == "model" and not trusted:
                _check_no_remote_code(key, value, os.path.join(path, "config.json"))
        elif os.path.exists(path):
            raise ConfigError(f"{key}: {value} is a file; expected a {kind} directory or a hub id", key=key)
        elif not _HUB_ID.fullmatch(value) or ".." in value:
            raise ConfigError(f"{key}: {value}: no such directory (and not a hub id of the form owner/name)", key=key)
        elif "/" not in value:
            raise ConfigError(f"{key}: {value}: no such directory (a hub id has the form owner/name, "
                              "e.g. HuggingFaceTB/SmolLM2-135M)", key=key)
        elif os.path.isdir(value.split("/", 1)[0]):
            raise ConfigError(f"{key}: {value}: no such directory (read as a local path: "
                              f"{value.split('/', 1)[0]}/ exists here)", key=key)


def _check_no_remote_code(key: str, value: str, config_json: str) -> None:
    """A model directory whose config.json names a model type transformers does not have (only its own code in
    ``auto_map`` builds it) cannot load without trust_remote_code: say so before anything loads."""
    import json

    try:
        with open(config_json, encoding="utf-8") as f:
            conf = json.load(f)
    except (OSError, ValueError):
        return  # unreadable configs are reported by the loader
    if not isinstance(conf, dict) or not conf.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    model_type = conf.get("model_type")
    if model_type in CONFIG_MAPPING:
        return
    fix = ("set model.trust_remote_code=true if you trust that code" if key.startswith("model.")
           else "only model.name_or_path can run a model's own code (with model.trust_remote_code=true)")
    raise ConfigError(f"{key}: {value} needs its own Python code (model type {model_type!r} is not in "
                      f"transformers; its config.json auto_map names {next(iter(conf['auto_map'].values()))}) and "
                      f"model.trust_remote_code is false: {fix}", key=key)
