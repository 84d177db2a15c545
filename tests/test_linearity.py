"""Layer linearity (Razzhigaev et al. 2024): the score and its residual variant against hand-made data and a direct
numpy least squares, the cosine regulariser's value and gradient against a hand computation, the regulariser in
pretraining and in the ptx term, and ``rlhf analyze linearity|prune`` on the micro models."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from rlhf import cli
from rlhf.algos.linearity import (
    chance_level,
    cosine_regularizer,
    fit_linear_map,
    layer_scores,
    linearity_score,
    residual_linearity_score,
)
from rlhf.config import ConfigError, PPOStageConfig, load_config
from rlhf.models.layers import residual_stream

from .conftest import ROOT
from .test_stages_pretrain_sft import pretrain_cfg


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def numpy_score(x: np.ndarray, y: np.ndarray) -> float:
    """LS written out directly: centre, scale to unit Frobenius norm, least squares, 1 - squared residual."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    a, *_ = np.linalg.lstsq(x, y, rcond=None)
    return 1.0 - float(np.sum((x @ a - y) ** 2))


# ----------------------------------------------------------------------------------------------------------
# The score
# ----------------------------------------------------------------------------------------------------------


def test_score_is_one_for_an_exact_linear_map_up_to_scale_and_shift():
    x = gaussian(500, 12)
    m = gaussian(12, 12, seed=1)
    y = 3.7 * x @ m + 5.0  # any invertible linear map, a scale and a shift
    assert linearity_score(x, y) == pytest.approx(1.0, abs=1e-10)
    # Y - X = X (3.7 M - I) + 5 is linear in X as well
    assert residual_linearity_score(x, y) == pytest.approx(1.0, abs=1e-10)


def test_score_of_independent_random_matrices_is_near_zero():
    n, d = 4000, 16
    s = linearity_score(gaussian(n, d, seed=2), gaussian(n, d, seed=3))
    # a regression of unrelated data explains ~d/(n-1) = 0.004 by chance
    assert 0 < s < 3 * chance_level(n, d) < 0.02


def test_score_is_trivially_one_with_fewer_tokens_than_dimensions():
    # why the command insists on n >> d: with n <= d + 1 any Y is an exact linear function of X
    assert linearity_score(gaussian(10, 16, seed=4), gaussian(10, 16, seed=5)) == pytest.approx(1.0, abs=1e-9)


def test_score_is_invariant_to_scaling_and_matches_numpy_least_squares():
    x = gaussian(800, 10, seed=6)
    y = torch.tanh(x @ gaussian(10, 10, seed=7)) + 0.3 * gaussian(800, 10, seed=8)  # partly linear
    s = linearity_score(x, y)
    assert 0.2 < s < 0.95, s  # a non-trivial value, so the comparisons below can fail
    assert linearity_score(1e-3 * x, 250.0 * y) == pytest.approx(s, abs=1e-12)
    assert linearity_score(x.float(), y.float()) == pytest.approx(s, abs=1e-5)
    assert s == pytest.approx(numpy_score(x.numpy(), y.numpy()), abs=1e-12)
    res = residual_linearity_score(x, y)
    assert res == pytest.approx(numpy_score(x.numpy(), (y - x).numpy()), abs=1e-12)


def test_residual_stream_makes_a_nonlinear_block_look_linear():
    """The paper's observation: a small non-linear update on top of the residual stream scores near 1, while the
    update itself does not."""
    x = gaussian(2000, 8, seed=9)
    y = x + 0.1 * torch.tanh(3 * x @ gaussian(8, 8, seed=10)) ** 2  # a small, strongly non-linear update
    scores = layer_scores([x, y])
    assert scores["linearity"][0] > 0.99
    assert scores["residual"][0] < 0.5
    assert all(0 <= v <= 1 for v in scores["linearity"] + scores["residual"])


def test_fit_linear_map_recovers_weights_and_bias():
    x = gaussian(300, 6, seed=11)
    w, b = gaussian(6, 5, seed=12), gaussian(5, seed=13)
    fw, fb = fit_linear_map(x, x @ w + b)
    assert torch.allclose(fw, w, atol=1e-10) and torch.allclose(fb, b, atol=1e-10)
    # with noise: the same answer as numpy's least squares with a column of ones
    y = x @ w + b + 0.5 * gaussian(300, 5, seed=14)
    fw, fb = fit_linear_map(x, y)
    sol, *_ = np.linalg.lstsq(np.hstack([x.numpy(), np.ones((300, 1))]), y.numpy(), rcond=None)
    np.testing.assert_allclose(fw.numpy(), sol[:-1], atol=1e-10)
    np.testing.assert_allclose(fb.numpy(), sol[-1], atol=1e-10)
    with pytest.raises(ValueError, match="need more tokens"):
        fit_linear_map(x[:6], y[:6])


# ----------------------------------------------------------------------------------------------------------
# The cosine regulariser
# ----------------------------------------------------------------------------------------------------------


def hand_regularizer(h: list[np.ndarray], mask: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """R = sum_i mean_t (1 - cos(h_i, h_{i-1})) and dR/dh_j, written out token by token.

    d cos(a, b) / d a = b / (|a| |b|) - cos(a, b) a / |a|^2.
    """
    B, T, _ = h[0].shape
    count = mask.sum()
    value = 0.0
    grads = [np.zeros_like(x) for x in h]
    for i in range(1, len(h)):
        total = 0.0
        for b in range(B):
            for t in range(T):
                if not mask[b, t]:
                    continue
                a, c = h[i][b, t], h[i - 1][b, t]
                na, nc = math.sqrt(a @ a), math.sqrt(c @ c)
                cos = (a @ c) / (na * nc)
                total += cos
                grads[i][b, t] -= (c / (na * nc) - cos * a / na**2) / count
                grads[i - 1][b, t] -= (a / (na * nc) - cos * c / nc**2) / count
        value += 1.0 - total / count
    return value, grads


@pytest.mark.parametrize("masked", [False, True])
def test_cosine_regularizer_value_and_gradient_match_hand_computation(masked):
    h = [gaussian(2, 3, 4, seed=20 + i).requires_grad_(True) for i in range(3)]  # embeddings + 2 blocks, (B, T, d)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]]) if masked else torch.ones(2, 3, dtype=torch.long)
    reg, stats = cosine_regularizer(h, mask if masked else None)
    reg.backward()
    value, grads = hand_regularizer([x.detach().numpy() for x in h], mask.numpy())
    assert reg.item() == pytest.approx(value, abs=1e-12)
    for x, g in zip(h, grads):
        np.testing.assert_allclose(x.grad.numpy(), g, atol=1e-12)
    assert set(stats) == {"cos_1", "cos_2"}
    if masked:  # masked-out tokens get no gradient
        assert torch.all(h[0].grad[0, 2] == 0) and torch.all(h[2].grad[1, 1] == 0)


def test_cosine_regularizer_is_zero_for_parallel_states():
    x = gaussian(2, 5, 3, seed=30)
    reg, _ = cosine_regularizer([x, 2 * x, 0.5 * x])
    assert reg.item() == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# On the micro models
# ----------------------------------------------------------------------------------------------------------


def test_residual_stream_hooks_match_output_hidden_states(micro_base):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_base, use_safetensors=True).eval()
    x = torch.randint(5, 4000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), residual_stream(model) as states:
        out = model(input_ids=x, output_hidden_states=True)
    hs = out.hidden_states
    assert len(states) == len(hs) == model.config.num_hidden_layers + 1
    for i in range(len(hs) - 1):
        assert torch.equal(states[i], hs[i])
    # transformers' last hidden state has the final norm applied; the hooks give the last block's own output
    assert not torch.allclose(states[-1], hs[-1])
    assert torch.allclose(model.model.norm(states[-1]), hs[-1])


def test_pretraining_regulariser_is_logged_and_raises_cosine_of_consecutive_layers(tmp_path, micro_model_config):
    from transformers import AutoModelForCausalLM

    from rlhf.data.text import tokenize_blocks
    from rlhf.stages import pretrain

    finals = {}
    for coef in (0.0, 2.0):
        out = str(tmp_path / f"coef{coef}")
        pretrain.run(pretrain_cfg(out, micro_model_config, "train.max_steps=8", f"train.linearity_coef={coef}",
                                  "data.eval_file="))
        rows = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
        assert ("linearity_reg" in rows[-1]) == (coef > 0)
        model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
        from transformers import AutoTokenizer

        blocks = tokenize_blocks(AutoTokenizer.from_pretrained(out), "data/pretrain/heldout.txt", 64)[:16]
        with torch.no_grad(), residual_stream(model) as hidden:
            model(input_ids=blocks)
        finals[coef] = cosine_regularizer(hidden)[0].item()
    # the same seed and batches: the regularised run ends with more aligned consecutive states
    assert finals[2.0] < finals[0.0], finals


def test_ptx_linearity_coef_needs_ptx(tmp_path):
    with pytest.raises(ConfigError, match="'ppo.ptx_linearity_coef'"):
        load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"),
                    ["ppo.ptx_coef=0", "ppo.ptx_linearity_coef=0.5"])
    with pytest.raises(ConfigError, match="'ppo.ptx_linearity_coef'"):
        load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"), ["ppo.ptx_linearity_coef=-1"])


def test_ptx_regulariser_is_logged_and_changes_the_update(tmp_path, micro_sft, micro_rm):
    from rlhf.stages import ppo

    from .test_ppo import metrics, ppo_cfg
    from .test_stages_pretrain_sft import weights

    outs = {}
    for coef in (0.0, 1.0):
        out = str(tmp_path / f"lin{coef}")
        ppo.run(ppo_cfg(out, micro_sft, micro_rm, "ppo.iterations=1", "ppo.rollout_batch_size=8",
                        "ppo.mini_batch_size=8", "ppo.ppo_epochs=1", "generation.max_new_tokens=8",
                        "data.ptx_eval_file=", "ppo.ptx_coef=1.0", f"ppo.ptx_linearity_coef={coef}"))
        outs[coef] = out
    rows = metrics(outs[1.0])
    assert 0 < rows[-1]["ptx_linearity_reg"] < 2 * 2  # L = 2 pairs, each 1 - cos in [0, 2]
    assert "ptx_linearity_reg" not in metrics(outs[0.0])[-1]
    # the same rollout (same seed, first iteration): only the regulariser differs, and it moved the weights
    w0, w1 = weights(outs[0.0]), weights(outs[1.0])
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, micro_base, micro_sft, micro_rm) -> str:
    """A run directory as 'rlhf pipeline' leaves it: model sub-directories and an unfinished stage."""
    root = tmp_path_factory.mktemp("run")
    for name, path in (("base", micro_base), ("sft", micro_sft), ("rm", micro_rm)):
        os.symlink(path, root / name)
    (root / "ppo" / "checkpoints").mkdir(parents=True)  # started, no model saved
    return str(root)


def test_analyze_linearity_on_a_run_directory(run_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.tools.analyze import sample_blocks

    out = str(tmp_path / "out")
    assert cli.main(["analyze", "linearity", run_dir, "--out", out, "--tokens", "4096", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "skipping" in printed and "ppo" in printed
    res = json.load(open(os.path.join(out, "linearity.json")))
    assert list(res["models"]) == ["base", "sft", "rm"]
    assert res["models"]["rm"]["kind"] == "reward_model" and res["tokens"] == 4096
    for r in res["models"].values():
        assert len(r["linearity"]) == len(r["residual"]) == 2
        assert all(res["chance_level"] < v <= 1 for v in r["linearity"] + r["residual"]), r
    with open(os.path.join(out, "linearity.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    table = open(os.path.join(out, "linearity.md")).read()
    assert "| base | sft | rm |" in table and f"{res['models']['sft']['residual'][1]:.4f}" in table

    # the command's number for block 1 of the base model, recomputed with numpy from transformers' own
    # hidden states (h_0, h_1 are not affected by the final norm) on the same seeded sample
    model = AutoModelForCausalLM.from_pretrained(os.path.join(run_dir, "base"), use_safetensors=True).eval()
    (blocks,) = sample_blocks(AutoTokenizer.from_pretrained(os.path.join(run_dir, "base")),
                              "data/pretrain/heldout.txt", 128, 0, [32])
    with torch.no_grad():
        hs = model(input_ids=blocks, output_hidden_states=True).hidden_states
    h0, h1 = (h.reshape(-1, h.shape[-1]).double().numpy() for h in hs[:2])
    assert res["models"]["base"]["linearity"][0] == pytest.approx(numpy_score(h0, h1), abs=1e-6)
    assert res["models"]["base"]["residual"][0] == pytest.approx(numpy_score(h0, h1 - h0), abs=1e-6)


def test_analyze_errors_name_the_problem(tmp_path, micro_base, micro_rm, capsys):
    missing = str(tmp_path / "nowhere")
    assert cli.main(["analyze", "linearity", missing, "--out", str(tmp_path)]) == 2
    assert f"{missing}: no such model or run directory" in capsys.readouterr().err
    # 32 tokens for hidden size 64: the fit would be exact
    assert cli.main(["analyze", "linearity", micro_base, "--tokens", "32", "--block-size", "32",
                     "--out", str(tmp_path)]) == 2
    assert "trivially 1" in capsys.readouterr().err
    assert cli.main(["analyze", "prune", micro_rm, "--replace", "1", "--out", str(tmp_path)]) == 2
    assert "needs a causal LM" in capsys.readouterr().err
    assert cli.main(["analyze", "prune", micro_base, "--replace", "3", "--out", str(tmp_path)]) == 2
    assert "between 1 and the model's 2 blocks" in capsys.readouterr().err


def test_analyze_prune_replacing_beats_removing(micro_base, tmp_path):
    out = str(tmp_path / "prune")
    assert cli.main(["analyze", "prune", micro_base, "--replace", "1", "2", "--fit-tokens", "4096",
                     "--eval-tokens", "4096", "--per-block", "--out", out, "--device", "cpu"]) == 0
    r = json.load(open(os.path.join(out, "prune.json")))
    assert r["fit_tokens"] == r["eval_tokens"] == 4096
    assert sorted(r["ranking"]) == [1, 2]
    assert r["ranking"][0] == 1 + int(np.argmax(r["linearity"]))
    assert [row["k"] for row in r["results"]] == [1, 2]
    assert r["results"][0]["blocks"] == [r["ranking"][0]]
    # a uniform guess costs ln(4096) = 8.3 nats/token; the model is well below it
    assert r["original_loss"] < 7.0
    for row in r["results"]:
        assert r["original_loss"] < row["removed_loss"]
        # a least-squares stand-in keeps what is linear in the block; dropping it keeps nothing
        assert row["replaced_loss"] < row["removed_loss"], row
    assert len(r["per_block"]) == 2 and os.path.exists(os.path.join(out, "prune.md"))
