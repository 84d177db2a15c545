"""The decoder blocks of a transformers model: find them, record the residual stream, replace a block.

The residual stream is recorded with forward hooks on the blocks rather than ``output_hidden_states``: in
transformers 5 the last of ``hidden_states`` has the final norm applied, so it is not the last block's output.
Hooks give h_0 (the input of block 1: the embeddings) and h_i (the output of block i) for every i, for any
architecture whose blocks sit in one ``nn.ModuleList`` of ``config.num_hidden_layers`` modules, and they see the
same forward pass the loss comes from (autograd flows through the recorded tensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` holding the model's decoder blocks (the outermost one of num_hidden_layers modules)."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) == n:
            return m
    raise ValueError(f"{type(model).__name__}: no list of {n} decoder blocks found (config.num_hidden_layers)")


def _hidden(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def residual_stream(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the residual stream of each forward pass run inside the block.

    Yields a list that, after a forward pass, holds L + 1 tensors (B, T, d): h_0 (the input of the first block)
    and h_1 ... h_L (each block's output, before any final norm). A new forward pass replaces the contents.
    """
    layers = decoder_layers(model)
    states: list[torch.Tensor] = []

    def record_input(module, args, kwargs):
        states.clear()
        states.append(args[0] if args else kwargs["hidden_states"])

    def record_output(module, args, output):
        states.append(_hidden(output))

    handles = [layers[0].register_forward_pre_hook(record_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(record_output) for layer in layers]
    try:
        yield states
    finally:
        for h in handles:
            h.remove()


class LinearBlock(nn.Module):
    """Stands in for a decoder block: h_out = h_in W + b (W (d, d), b (d,)), ignoring attention and positions.

    ``tuple_output``: return ``(h_out,)`` like blocks of architectures that return tuples.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, tuple_output: bool = False):
        super().__init__()
        self.linear = nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            self.linear.weight.copy_(weight.T)  # nn.Linear computes x W^T + b
            self.linear.bias.copy_(bias)
        self.tuple_output = tuple_output

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        out = self.linear(hidden_states)
        return (out,) if self.tuple_output else out


class SkipBlock(nn.Module):
    """Stands in for a removed decoder block: passes the residual stream through unchanged."""

    def __init__(self, tuple_output: bool = False):
        super().__init__()
        self.tuple_output = tuple_output

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return (hidden_states,) if self.tuple_output else hidden_states
