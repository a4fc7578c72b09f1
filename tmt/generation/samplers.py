"""Top-k and top-p (nucleus) samplers that draw from one `torch.Generator`.

fairseq2's own samplers draw from torch's global random state, so the only way to
seed them is to reset that state, which `Generator` used to do for every batch:
every batch then started from the same random numbers, and samples of different
batches were correlated. These samplers take the run's generator instead: seeded
once, it moves on from batch to batch, and the same seed still gives the same
output for the whole run.
"""

from __future__ import annotations

import torch
from fairseq2.generation.sampling import Sampler
from torch import Tensor


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """(N, V) non-negative weights -> (N, 1) drawn column indices."""
    return torch.multinomial(probs / probs.sum(dim=-1, keepdim=True), 1, generator=generator)


class TopKGenSampler(Sampler):
    """Draw the next token among the `k` most probable ones (k = 1: the argmax)."""

    def __init__(self, k: int, generator: torch.Generator | None = None) -> None:
        self.k = k
        self.generator = generator

    def sample(self, probs: Tensor) -> Tensor:
        k = min(self.k, probs.size(-1))
        if k == 1:
            return probs.argmax(dim=-1)
        top, idx = probs.topk(k, dim=-1)
        return idx.gather(-1, _draw(top, self.generator)).squeeze(-1)


class TopPGenSampler(Sampler):
    """Draw the next token from the smallest set of most probable tokens whose mass reaches `p`."""

    def __init__(self, p: float, generator: torch.Generator | None = None) -> None:
        self.p = p
        self.generator = generator

    def sample(self, probs: Tensor) -> Tensor:
        probs = probs / probs.sum(dim=-1, keepdim=True)
        ranked, idx = probs.sort(dim=-1, descending=True)
        before = ranked.cumsum(dim=-1) - ranked  # mass of the more probable tokens
        ranked = ranked.masked_fill(before > self.p, 0.0)
        return idx.gather(-1, _draw(ranked, self.generator)).squeeze(-1)
