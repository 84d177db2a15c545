"""The score PPO optimises from a reward's raw score: clipping and the treatment of responses without EOS.

Two conventions for a response that hit the length limit without EOS:

- subtract a penalty from its score (TRL: ``missing_eos_penalty``, a positive amount, ``rewards[~eos] -= penalty``).
  The penalty only lowers, whatever the reward's scale: not ending never pays more than the raw score would.
- replace its score by a fixed value (Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO": -1, on
  reward-model scores normalised to mean 0 and std 1 on the policy's own samples). The value only means something
  on that scale: with a reward whose typical scores sit below it, the replacement is a bonus and the policy learns
  never to stop. :func:`missing_eos_gain` measures that.
"""

from __future__ import annotations

import torch


def shape_scores(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float = 0.0, replace_with: float | None = None,
                 clip: float = 0.0) -> torch.Tensor:
    """Scores (B,) after clipping and the missing-EOS treatment.

    ``clip`` > 0 clamps every score to [-clip, clip] first. Then a response without EOS (``has_eos`` False) gets
    ``clipped score - penalty`` (TRL's convention; the penalty is subtracted after clipping so that clipping cannot
    erase it), or, when ``replace_with`` is given, ``replace_with`` clamped the same way (N+ convention).
    """
    if penalty < 0:
        raise ValueError(f"missing-EOS penalty {penalty}: must be >= 0 (it is subtracted from the score)")
    s = scores.clamp(-clip, clip) if clip > 0 else scores
    missing = ~has_eos.bool()
    if replace_with is not None:
        fill = torch.full_like(s, float(replace_with))
        return torch.where(missing, fill.clamp(-clip, clip) if clip > 0 else fill, s)
    return s - penalty * missing.to(s.dtype)


def missing_eos_gain(scores: torch.Tensor, has_eos: torch.Tensor, shaped: torch.Tensor,
                     clip: float = 0.0) -> tuple[float, int]:
    """(mean of shaped - clipped raw score over the responses without EOS, their number); (0.0, 0) if none.

    A positive mean says the missing-EOS treatment raised those responses' scores on average: not ending pays.
    """
    missing = ~has_eos.bool()
    n = int(missing.sum())
    if n == 0:
        return 0.0, 0
    raw = scores.clamp(-clip, clip) if clip > 0 else scores
    return float((shaped - raw)[missing].mean()), n
