"""``rlhf model import SRC OUT``: any loadable model (a GGUF file included) -> a plain Hugging Face directory.

GGUF checkpoints are dequantised by transformers' GGUF support (needs the ``gguf`` package) into a float model;
a GGUF-loaded model refuses ``save_pretrained``, so its state dict is copied into a model built from the same
config, which is saved as safetensors with the tokenizer and its chat template. The config loses its GGUF
``quantization_config``: the saved weights are plain floats, and the marker makes transformers refuse to train.
PAD is made distinct from EOS (an existing unused special token when the vocabulary has one), as every stage needs.
"""

from __future__ import annotations

import copy
import os
import shutil

import torch


def load_source(src: str, gguf_file: str = "", dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) from a .gguf path, a directory + GGUF file name, or a hub id / HF directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import DTYPES, from_pretrained

    if os.path.isfile(src) and src.endswith(".gguf"):
        src, gguf_file = os.path.dirname(src) or ".", os.path.basename(src)
    kw: dict = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        if not os.path.exists(os.path.join(src, gguf_file)):
            raise FileNotFoundError(f"{os.path.join(src, gguf_file)}: no such GGUF file")
        kw["gguf_file"] = gguf_file
    tok = AutoTokenizer.from_pretrained(src, **kw)
    model = from_pretrained(AutoModelForCausalLM, src, dtype=DTYPES[dtype], **kw)
    return model.eval(), tok


def save_plain(loaded, tok, out: str) -> dict:
    """Copy ``loaded``'s weights into a model built from its config and save it (safetensors) with the tokenizer."""
    from transformers import AutoModelForCausalLM

    from rlhf.models.loading import ensure_pad

    added = ensure_pad(tok)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # the weights are dequantised: a GGUF marker would refuse training
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=next(loaded.parameters()).dtype)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k.endswith("lm_head.weight") and loaded.config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if fresh.config.tie_word_embeddings:
        fresh.tie_weights()
    if added:
        fresh.resize_token_embeddings(len(tok))
    fresh.config.pad_token_id = tok.pad_token_id
    fresh.config.eos_token_id = tok.eos_token_id
    if fresh.generation_config is not None:
        fresh.generation_config.pad_token_id = tok.pad_token_id
        fresh.generation_config.eos_token_id = tok.eos_token_id
    tmp = out.rstrip("/") + ".tmp-import"
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"parameters": sum(p.numel() for p in fresh.parameters()), "architecture": type(fresh).__name__,
            "vocab": len(tok), "eos": tok.eos_token, "pad": tok.pad_token, "chat_template": bool(tok.chat_template)}


def import_model(src: str, out: str, gguf_file: str = "", dtype: str = "float32", trust_remote_code: bool = False) -> dict:
    model, tok = load_source(src, gguf_file, dtype, trust_remote_code)
    return {**save_plain(model, tok, out), "source": os.path.join(src, gguf_file) if gguf_file else src}


def main(args) -> int:
    info = import_model(args.src, args.out, args.gguf_file or "", args.dtype, args.trust_remote_code)
    print(f"[model import] {info['source']} -> {args.out}: {info['architecture']}, {info['parameters'] / 1e6:.1f}M "
          f"parameters, vocabulary {info['vocab']}, EOS {info['eos']!r}, PAD {info['pad']!r}, "
          f"chat template {'kept' if info['chat_template'] else 'MISSING (set model.chat_template)'}")
    return 0


def greedy(model, tok, prompt: str, n: int = 20) -> list[int]:
    """Greedy continuation token ids of ``prompt`` rendered with the chat template (for round-trip checks)."""
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()
