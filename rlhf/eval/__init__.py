"""Evaluation: generation, judges, win rates, capability (perplexity), reports."""
