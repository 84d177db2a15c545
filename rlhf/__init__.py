"""rlhf: RLHF alignment for causal language models (PALMS SFT, reward models, PPO-ptx, win rates)."""

__version__ = "0.1.0"
