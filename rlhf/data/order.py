"""The order in which PPO reads its data: prompts per iteration, episodes per minibatch, pretraining blocks per
micro-batch. Each is a function of the step alone (and the seed), never of the world size or of how many steps ran
before a resume, so a resumed run reads what an uninterrupted one reads and a 2-process run what a 1-process one
reads (docs/ppo.md, "Data order").
"""

from __future__ import annotations

import torch


def iteration_indices(it: int, n: int, batch: int, seed: int) -> list[int]:
    """Global prompt indices of iteration ``it``: consecutive slices of seeded per-epoch permutations of ``n``."""
    out: list[int] = []
    start = it * batch
    while len(out) < batch:
        epoch, offset = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        out += perm[offset : offset + batch - len(out)]
    return out


def grouped(prompts: list[int], k: int) -> list[int]:
    """Episode list of a rollout that answers each prompt k times: every prompt index repeated k times in a row,
    so the responses to one prompt are consecutive episodes (a group of ``ppo.samples_per_prompt``)."""
    return [i for i in prompts for _ in range(k)]


def minibatch_indices(seed: int, it: int, epoch: int, rollout: int, mini: int, world: int, rank: int) -> list[list[int]]:
    """This rank's episodes (indices into the gathered rollout) for each minibatch of one PPO epoch.

    The epoch's permutation is drawn from a generator seeded by (seed, iteration, epoch) alone, over global episode
    indices, so global minibatch k is the same set of episodes whatever the world size; rank r takes its r-th slice.
    """
    g = torch.Generator().manual_seed((seed * 100_003 + it) * 1_009 + epoch)
    perm = torch.randperm(rollout, generator=g).tolist()
    local = mini // world
    return [perm[k + rank * local : k + (rank + 1) * local] for k in range(0, rollout, mini)]


class PtxSampler:
    """The pretraining blocks of each PPO micro-batch (the ptx term of PPO-ptx), cycling through ``blocks``.

    Optimizer step ``step`` has ``world * grad_accum`` micro-slots over all ranks; slot ``q = rank * grad_accum +
    micro`` reads ``batch_size`` consecutive blocks starting at ``(step * world * grad_accum + q) * batch_size``
    (modulo the number of blocks). With the global minibatch fixed, ``world * grad_accum`` is fixed too, so a step
    reads the same blocks whatever the world size.
    """

    def __init__(self, blocks: torch.Tensor, batch_size: int, world: int, grad_accum: int):
        if len(blocks) == 0:
            raise ValueError("ptx: no pretraining blocks to sample from")
        self.blocks, self.batch_size, self.world, self.grad_accum = blocks, batch_size, world, grad_accum

    def indices(self, step: int, rank: int, micro: int) -> list[int]:
        """Block indices of micro-batch ``micro`` of global optimizer step ``step`` on ``rank``."""
        n = self.batch_size
        first = (step * self.world * self.grad_accum + rank * self.grad_accum + micro) * n
        return [(first + j) % len(self.blocks) for j in range(n)]

    def batch(self, step: int, rank: int, micro: int) -> torch.Tensor:
        """The blocks (batch_size, T) of that micro-batch."""
        return self.blocks[self.indices(step, rank, micro)]
