"""Kaldi-style MFCC features at 50 Hz, many waveforms at once."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from tmt.core.audio import SAMPLE_RATE
from tmt.tokenizers.speech.card import HOP, WINDOW, MfccConfig


@functools.lru_cache(maxsize=8)
def _mfcc_constants(num_ceps: int, num_mel_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(povey window [400], kaldi mel filterbank [257, bins], DCT with lifter [bins, ceps])."""
    import torch
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as AF

    window = torch.hann_window(WINDOW, periodic=False, dtype=torch.float64).pow(0.85)
    mel, _ = kaldi.get_mel_banks(num_mel_bins, 512, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0)
    mel = torch.nn.functional.pad(mel.float(), (0, 1)).T  # -> [257, bins]
    dct = AF.create_dct(num_mel_bins, num_mel_bins, "ortho")
    dct[:, 0] = math.sqrt(1.0 / num_mel_bins)
    dct = dct[:, :num_ceps]
    lifter = 1.0 + 0.5 * 22.0 * torch.sin(math.pi * torch.arange(num_ceps) / 22.0)
    return (
        window.numpy().astype(np.float32),
        np.ascontiguousarray(mel.numpy(), dtype=np.float32),
        np.ascontiguousarray((dct * lifter[None, :]).numpy(), dtype=np.float32),
    )


def _deltas(c: np.ndarray) -> np.ndarray:
    """Regression deltas over +-2 frames with edge replication (torchaudio compute_deltas, win 5)."""
    p = np.pad(c, ((2, 2), (0, 0)), mode="edge")
    return (((p[3:-1] - p[1:-3]) + 2.0 * (p[4:] - p[:-4])) / 10.0).astype(np.float32)


def _log_mel_frames(wavs: Sequence[np.ndarray], num_mel_bins: int) -> tuple[np.ndarray, list[int]]:
    """Kaldi log-mel energies of every frame of every waveform, stacked -> ([all frames, bins], frames per file)."""
    window, mel, _ = _mfcc_constants(1, num_mel_bins)
    # numpy rather than torch: single-threaded, no per-op dispatch, measured 2-4x faster here
    frames = [np.lib.stride_tricks.sliding_window_view(np.asarray(w, dtype=np.float32), WINDOW)[::HOP]
              if len(w) >= WINDOW else np.zeros((0, WINDOW), np.float32) for w in wavs]
    sizes = [len(f) for f in frames]
    f = np.concatenate(frames)  # -> [all frames, 400]
    f = f - f.mean(axis=1, keepdims=True)  # remove DC offset
    g = f.copy()
    g[:, 1:] -= 0.97 * f[:, :-1]  # pre-emphasis, the first sample against itself
    g[:, 0] -= 0.97 * f[:, 0]
    spec = np.abs(np.fft.rfft(g * window, n=512)).astype(np.float32) ** 2  # -> [all frames, 257]
    return np.log(np.maximum(spec @ mel, np.finfo(np.float32).eps)), sizes


def _cmvn(y: np.ndarray) -> np.ndarray:
    """Per-utterance mean/variance normalisation of every dimension."""
    if not len(y):
        return y
    return ((y - y.mean(axis=0)) / np.maximum(y.std(axis=0), 1e-5)).astype(np.float32)


def mfcc_batch(wavs: Sequence[np.ndarray], cfg: MfccConfig) -> list[np.ndarray]:
    """Kaldi MFCC (as `torchaudio.compliance.kaldi.mfcc`, dither 0, 25 ms window, 20 ms hop) of many
    waveforms at once -> one [frames, num_ceps * (1 + deltas)] array each, at 50 Hz.

    Written out rather than calling kaldi.mfcc per file: the window, filterbank and DCT are
    built once and all files' frames go through ONE FFT and two matmuls (kaldi.mfcc rebuilds
    them per call and dominated tokenization time). Tests check equality with kaldi.mfcc.
    """
    if not wavs:
        return []
    _, _, dct = _mfcc_constants(cfg.num_ceps, cfg.num_mel_bins)
    logmel, sizes = _log_mel_frames(wavs, cfg.num_mel_bins)
    ceps = logmel @ dct  # -> [all frames, num_ceps]
    per_file = np.split(ceps, np.cumsum(sizes)[:-1])
    out: list[np.ndarray] = []
    for c in per_file:
        feats: list[np.ndarray] = [c]
        for _ in range(cfg.deltas):
            feats.append(_deltas(feats[-1]))
        y = np.concatenate(feats, axis=1).astype(np.float32)  # -> [frames, num_ceps * (1 + deltas)]
        out.append(_cmvn(y) if cfg.cmvn else y)
    return out


def log_mel_batch(wavs: Sequence[np.ndarray], num_mel_bins: int, *, cmvn: bool = True) -> list[np.ndarray]:
    """Kaldi log-mel filterbank energies (the MFCC's framing: 25 ms window, 20 ms hop, dither 0) of
    many waveforms at once -> one [frames, num_mel_bins] float32 array each, per-utterance
    normalised unless `cmvn` is False. The input of the fbank HuBERT front end."""
    if not wavs:
        return []
    logmel, sizes = _log_mel_frames(wavs, num_mel_bins)
    per_file = np.split(logmel.astype(np.float32), np.cumsum(sizes)[:-1])
    return [_cmvn(y) if cmvn else y for y in per_file]


def mfcc_features(wav: np.ndarray, cfg: MfccConfig) -> np.ndarray:
    """[samples] at 16 kHz -> [frames, num_ceps * (1 + deltas)] at 50 Hz."""
    return mfcc_batch([wav], cfg)[0]

