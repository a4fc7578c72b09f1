"""An exponential moving average of a network's trainable weights, swapped in for inference.

A regression vocoder trained with a constant-ish learning rate ends wherever its last few hundred
noisy steps left it, and two fits of one recipe can differ by more than any setting does (docs/results.md,
session 15). Averaging the weights over the last steps (Polyak averaging; fairseq's `--ema-decay`,
timm's ModelEma) removes most of that end-point noise at no training cost.

Only parameters are averaged, in place beside the model. `torch.optim.swa_utils.AveragedModel`
would deep-copy the whole module, and a `unit-world` model carries large buffers (the exemplar
table) and statistics set after construction (normalisation, unit prior) that must stay the live
model's; its `get_ema_multi_avg_fn` has no warm-up, which a short CPU fit needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class WeightAverage:
    """EMA of `model`'s trainable parameters with the usual warm-up: update n uses the decay
    min(decay, (1 + n) / (10 + n)), so early averages are not dominated by the initial weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().clone() for n in self.names]

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (call after each optimizer step)."""
        params = dict(model.named_parameters())
        torch._foreach_lerp_(
            self.shadow, [params[n].detach() for n in self.names], 1.0 - self.current_decay()
        )
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "shadow": dict(zip(self.names, self.shadow, strict=True)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved average (the decay is the configured one: a resumed run may change it)."""
        shadow = state["shadow"]
        if sorted(shadow) != sorted(self.names):
            raise ValueError("the saved weight average is of another network")
        for dst, n in zip(self.shadow, self.names, strict=True):
            dst.copy_(shadow[n])
        self.updates = int(state["updates"])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """`model` with the averaged weights for the duration of the block; its own come back after,
        also when the block raises."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            live: list[Tensor] = [params[n].detach().clone() for n in self.names]
            for n, avg in zip(self.names, self.shadow, strict=True):
                params[n].copy_(avg)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, own in zip(self.names, live, strict=True):
                    params[n].copy_(own)
