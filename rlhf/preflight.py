"""Checks a stage config passes before the stage touches its output directory or loads a model.

:func:`rlhf.config.check_model_sources` checks the models; :func:`check_inputs` checks the rest a user can get
wrong in a config and that would otherwise fail later with a library's traceback: data files that do not exist
(named by their key, and never looked up on the hub when the name is a local file name) and a training
precision the machine's accelerator cannot run. Every failure is a :class:`rlhf.config.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from rlhf.config import ConfigError, DeepSpeedConfig, ModelConfig, PPOStageConfig
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
            raise ConfigError(f"{key}: {value}: no such file{hint}")
    model = getattr(cfg, "model", None)
    if isinstance(model, ModelConfig):
        for name in ("from_config", "chat_template"):
            value = getattr(model, name)
            if value and not os.path.isfile(os.path.expanduser(value)):
                raise ConfigError(f"model.{name}: {value}: no such file")


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
                          "use deepspeed.precision=bf16 or fp32")
    others = ", ".join(p for p, t in (("bf16", torch.bfloat16), ("fp16", torch.float16))
                       if t in acc.supported_dtypes())
    raise ConfigError(f"deepspeed.precision: {ds.precision} is not supported on this {name} device; "
                      f"use deepspeed.precision={'fp32' if not others else others.split(', ')[0] + ' or fp32'}")


def check_inputs(cfg: Any) -> None:
    """Everything above, for one stage config (``rlhf <stage>`` and each stage of ``rlhf pipeline``)."""
    check_data_sources(cfg)
    check_precision(cfg)
