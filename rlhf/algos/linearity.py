"""Layer linearity: how close the map between consecutive decoder layers is to a linear one.

Razzhigaev et al., "Your Transformer is Secretly Linear" (ACL 2024, arXiv 2405.12250):

1. Linearity score of two layers' token embeddings X, Y (n tokens x d):

       LS(X, Y) = 1 - min_A || X~ A - Y~ ||_F^2,   X~ = (X - mean X) / ||X - mean X||_F  (the same for Y~)

   with A any d x d matrix (least squares). As ||Y~||_F = 1, LS is the R^2 of a linear regression of Y~ on X~ and
   lies in [0, 1]. The paper finds LS ~ 0.99 between consecutive layers of many decoders, because each block adds
   little to the residual stream; the score of the block's own contribution, LS(X, Y - X), is lower.
2. A pretraining regulariser, lambda * sum_i (1 - cos(h_i, h_{i-1})) (lambda = 0.5 in the paper), which the paper
   reports lowered linearity and improved benchmark scores of small models.
3. The most linear blocks can be removed, or replaced by fitted linear maps, with little loss.

Pure tensor math, no models: the least squares run in float64. With n tokens and d dimensions, a regression of
unrelated data already explains about d / (n - 1) of Y~ (:func:`chance_level`), and with n <= d + 1 the fit is
exact and the score trivially 1, so use n >> d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _as64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to("cpu", torch.float64)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """X~: rows centred (mean over tokens removed), then scaled to unit Frobenius norm. x: (n, d) -> (n, d) float64."""
    x = _as64(x)
    x = x - x.mean(0, keepdim=True)
    norm = torch.linalg.matrix_norm(x)
    if norm == 0:
        raise ValueError("linearity score: the embeddings are constant over tokens (zero norm after centring)")
    return x / norm


def linearity_score(x: torch.Tensor, y: torch.Tensor) -> float:
    """LS = 1 - min_A ||X~ A - Y~||_F^2 (Razzhigaev et al. 2024, eq. 1); x, y: (n, d_x), (n, d_y) with the same n.

    A is found by least squares (LAPACK gelsd: SVD-based, handles rank-deficient X~) in float64.
    Invariant to scaling and shifting either argument; 1 when Y is an exact affine function of X.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linearity score: expected (n, d) matrices with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    xn, yn = normalize(x), normalize(y)  # (n, d_x), (n, d_y)
    a = torch.linalg.lstsq(xn, yn, driver="gelsd").solution  # (d_x, d_y)
    residual = torch.linalg.matrix_norm(xn @ a - yn) ** 2  # in [0, 1] since ||Y~||_F = 1
    return float(1.0 - residual)


def residual_linearity_score(x: torch.Tensor, y: torch.Tensor) -> float:
    """The score with the residual stream removed: LS(X, Y - X), how linear the block's own contribution is."""
    return linearity_score(x, _as64(y) - _as64(x))


def chance_level(n: int, d: int) -> float:
    """Expected LS of independent Gaussian X (n, d) and Y: about d / (n - 1) (the regression's chance R^2)."""
    return min(1.0, d / max(n - 1, 1))


def layer_scores(states: Sequence[torch.Tensor]) -> dict[str, list[float]]:
    """Scores of every consecutive pair of a model's residual stream.

    states: L + 1 tensors (n, d): the embeddings h_0 and the output h_i of each block i = 1..L, token-aligned.
    Returns {"linearity": [LS(h_{i-1}, h_i)], "residual": [LS(h_{i-1}, h_i - h_{i-1})]}, each of length L.
    """
    lin, res = [], []
    for prev, cur in zip(states[:-1], states[1:]):
        lin.append(linearity_score(prev, cur))
        res.append(residual_linearity_score(prev, cur))
    return {"linearity": lin, "residual": res}


def cosine_regularizer(
    hidden: Sequence[torch.Tensor], mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cosine regulariser of consecutive hidden states (Razzhigaev et al. 2024, section 5):

        R = sum_{i=1}^{L} mean_t (1 - cos(h_i[t], h_{i-1}[t]))

    hidden: L + 1 tensors (B, T, d) (embeddings, then each block's output); mask: (B, T), 1 for tokens that count
    (None: all). The caller adds ``lambda * R`` to its loss. Computed in at least float32 (autograd flows to
    ``hidden``). Returns (R, stats) with the mean cosine of each pair, ``cos_1`` ... ``cos_L``.
    """
    if len(hidden) < 2:
        raise ValueError("cosine regulariser: needs at least two hidden states (embeddings and one block)")
    dtype = torch.promote_types(hidden[0].dtype, torch.float32)
    total = hidden[0].new_zeros((), dtype=dtype)
    stats = {}
    for i in range(1, len(hidden)):
        cos = F.cosine_similarity(hidden[i].to(dtype), hidden[i - 1].to(dtype), dim=-1)  # (B, T)
        if mask is None:
            mean_cos = cos.mean()
        else:
            m = mask.to(cos.dtype)
            mean_cos = (cos * m).sum() / m.sum().clamp(min=1)
        total = total + (1.0 - mean_cos)
        stats[f"cos_{i}"] = mean_cos.detach()
    return total, stats


def fit_linear_map(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares affine map y ~ x W + b over tokens, in float64.

    x: (n, d_in), y: (n, d_out). Returns W (d_in, d_out) and b (d_out,) minimising ||x W + 1 b^T - y||_F^2:
    W from the centred data, b = mean(y) - mean(x) W (the intercept makes the centring exact).
    """
    x, y = _as64(x), _as64(y)
    if x.shape[0] <= x.shape[1] + 1:
        raise ValueError(f"linear fit: {x.shape[0]} tokens for a {x.shape[1]}-dimensional input; need more tokens than d + 1")
    mx, my = x.mean(0), y.mean(0)
    w = torch.linalg.lstsq(x - mx, y - my, driver="gelsd").solution  # (d_in, d_out)
    return w, my - mx @ w
