"""Shared fixtures: a micro base model pretrained once per session on the shipped corpus.

Tests use smaller settings than configs/tiny (fewer layers and steps) through the ordinary config overrides;
the code paths are the ones users run.
"""

from __future__ import annotations

import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "data", "tokenizer")

MICRO_MODEL = {
    "model_type": "llama",
    "vocab_size": 4096,
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 1,
}


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    """Configs name repo-relative paths (data/..., configs/...): run every test from the repo root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def micro_model_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("micro") / "model.json"
    path.write_text(json.dumps(MICRO_MODEL))
    return str(path)


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory, micro_model_config) -> str:
    """A micro Llama pretrained for a few dozen steps on data/pretrain (the SFT tests start from it)."""
    from rlhf.config import PretrainStageConfig, load_config
    from rlhf.stages import pretrain

    out = str(tmp_path_factory.mktemp("base"))
    os.chdir(ROOT)
    cfg = load_config(
        PretrainStageConfig,
        os.path.join(ROOT, "configs/tiny/pretrain.yaml"),
        [
            f"run.output_dir={out}",
            f"model.from_config={micro_model_config}",
            "run.progress=false",
            "train.max_steps=40",
            "train.warmup_steps=5",
            "data.block_size=128",
            "deepspeed.global_batch_size=16",
            "deepspeed.micro_batch_size=16",
        ],
    )
    pretrain.run(cfg)
    return out


@pytest.fixture(scope="session")
def micro_sft(tmp_path_factory, micro_base) -> str:
    """The micro base after a short values-targeted SFT."""
    from rlhf.config import SFTStageConfig, load_config
    from rlhf.stages import sft

    out = str(tmp_path_factory.mktemp("micro_sft"))
    os.chdir(ROOT)
    sft.run(load_config(SFTStageConfig, os.path.join(ROOT, "configs/tiny/sft.yaml"),
                        [f"run.output_dir={out}", f"model.name_or_path={micro_base}", "run.progress=false",
                         "train.max_steps=10", "train.learning_rate=2e-3"]))
    return out


@pytest.fixture(scope="session")
def micro_rm(tmp_path_factory, micro_sft) -> str:
    """A reward model trained from the micro SFT model on the shipped preference pairs."""
    from rlhf.config import RMStageConfig, load_config
    from rlhf.stages import rm

    out = str(tmp_path_factory.mktemp("micro_rm"))
    os.chdir(ROOT)
    rm.run(load_config(RMStageConfig, os.path.join(ROOT, "configs/tiny/rm.yaml"),
                       [f"run.output_dir={out}", f"model.name_or_path={micro_sft}", "run.progress=false",
                        "train.epochs=2", "train.learning_rate=1e-3"]))
    return out
