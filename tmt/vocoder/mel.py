"""Log-mel features of the vocoders: the analysis (`LogMel`), its inversion by
Griffin-Lim (`GriffinLimInverter`, the unit-mel arch's waveform stage) and the
mel distance used for validation and evaluation, and the mel plots of training samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.core.io import pyplot, save_figure
from tmt.vocoder.config import MelConfig


class LogMel(nn.Module):
    """Waveform (B, S) -> natural-log mel magnitudes (B, frames, n_mels), frames = S / hop + 1."""

    def __init__(self, cfg: MelConfig, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        import torchaudio

        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
            f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, power=1.0, norm="slaney", mel_scale="slaney",
        )

    def forward(self, wav: Tensor) -> Tensor:
        return torch.log(torch.clamp(self.mel(wav), min=1e-5)).transpose(-1, -2)


class GriffinLimInverter(nn.Module):
    """Log-mel (B, frames, n_mels) -> waveform (B, S): mel pseudo-inverse, then Griffin-Lim."""

    def __init__(self, cfg: MelConfig, n_iter: int, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        import torchaudio

        n_stft = cfg.n_fft // 2 + 1
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=n_stft, n_mels=cfg.n_mels, sample_rate=sample_rate, f_min=cfg.f_min, f_max=cfg.f_max,
            norm="slaney", mel_scale="slaney",
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, power=1.0, n_iter=n_iter,
            momentum=0.99, rand_init=False,
        )

    def forward(self, log_mel: Tensor) -> Tensor:
        mag = self.inverse_mel(torch.exp(log_mel).transpose(-1, -2).float())
        return self.griffin_lim(mag)


def mel_distance(logmel: LogMel, ref: np.ndarray, hyp: np.ndarray) -> float:
    """Mean absolute log-mel difference over the common length."""
    n = min(len(ref), len(hyp))
    if n < FRAME_HOP:
        return float("nan")
    with torch.no_grad():
        a = logmel(torch.from_numpy(np.ascontiguousarray(ref[:n]))[None])
        b = logmel(torch.from_numpy(np.ascontiguousarray(hyp[:n]))[None])
    return float(torch.mean(torch.abs(a - b)))


def save_mel_png(path: Path, mels: Sequence[tuple[str, np.ndarray]]) -> None:
    """One panel per (title, log-mel (frames, n_mels)) pair."""
    plt = pyplot()

    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.2 * len(mels)), squeeze=False)
    for ax, (title, mel) in zip(axes[:, 0], mels, strict=True):
        ax.imshow(
            mel.T,
            origin="lower",
            aspect="auto",
            interpolation="none",
            vmin=-11.5,
            vmax=max(2.0, float(mel.max())),
        )
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel")
    axes[-1, 0].set_xlabel("frame")
    save_figure(fig, path, dpi=80)
