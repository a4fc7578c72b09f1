"""WORLD's waveform synthesis, batched over pulses (the `batched` synthesizer of the unit-world arch).

`pyworld.synthesize` makes one pulse response per F0 period (and 500 a second where unvoiced), each
from seven 1024-point FFTs run one pulse at a time in C: at 16 kHz that is ~80% of the unit-world
vocoder's time. This module computes the same responses as WORLD's `synthesis.cpp` (the version
pyworld 0.3 bundles: fractional pulse shifts, the raised-cosine DC remover), but for a whole chunk of
pulses at once with torch's FFTs, which is what makes the speed target reachable on one core. It is
written here because no library exposes WORLD's synthesis in a vectorised form; pyworld stays the
reference (`world.synthesizer: pyworld`), and the tests hold the two to the same waveform.

Per pulse at sample n with fractional delay d, envelope S and aperiodicity A interpolated linearly
from the two nearest frames (A clipped to [0.001, 1) and squared: the aperiodic ratio R):

    periodic  = minimum-phase(sqrt(S (1 - R))) delayed by d, its DC spread over a raised cosine
    aperiodic = minimum-phase(sqrt(S R)) * FFT(zero-mean white noise as long as the pulse period)
    y[n - N/2 + 1 + j] += sqrt(period) * periodic[j] + aperiodic[j]

(unvoiced pulses: no periodic part and the whole envelope on the noise). Pulses are chunked by kind
(with a periodic part, voiced without one, unvoiced), so a chunk needs no masks, and responses come out
of the inverse FFTs already in time order ((-1)^k per bin is WORLD's fftshift). The noise is WORLD's own
sequence (its xorshift generator, restarted for every utterance as `Synthesis` does;
`tmt.vocoder.world_random`), so the waveform is pyworld's to float32 precision (tests: > 80 dB); `gaussian_noise`
gives other realisations (judge WERs move by several points between realisations, docs/results.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from tmt.vocoder.world_random import world_randn

Noise = Callable[[int], np.ndarray]
"""A source of white noise: n -> n samples of zero mean and unit variance."""
DEFAULT_F0 = 500.0
"""Pulse rate where unvoiced (WORLD's `kDefaultF0`)."""
SAFE_MIN = 1e-12
"""WORLD's `kMySafeGuardMinimum`."""
DTYPE = torch.float32
"""Precision of the pulse responses (WORLD computes in double; float32 roughly halves the time)."""
CHUNK = 256
"""Pulses per vectorised block (bounds memory at ~10 MB a block at 1024 points)."""


def pulse_train(f0: np.ndarray, fs: int, frame_period: float, num_samples: int, fft: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD's time base: pulse sample indices, their fractional delays (seconds) and voicing (0/1).

    F0 and voicing are interpolated to every sample (one extrapolated frame past the end), unvoiced
    samples run at `DEFAULT_F0`, and a pulse sits where the accumulated phase wraps."""
    frames = len(f0)
    lowest = fs / fft + 1.0
    coarse_f0 = np.where(f0 < lowest, 0.0, f0).astype(np.float64)
    coarse_vuv = (coarse_f0 != 0.0).astype(np.float64)
    coarse_f0 = np.append(coarse_f0, 2 * coarse_f0[-1] - coarse_f0[-2] if frames > 1 else coarse_f0[-1])
    coarse_vuv = np.append(coarse_vuv, 2 * coarse_vuv[-1] - coarse_vuv[-2] if frames > 1 else coarse_vuv[-1])
    coarse_t = np.arange(frames + 1) * (frame_period / 1000.0)
    t = np.arange(num_samples) / fs
    vuv = (np.interp(t, coarse_t, coarse_vuv) > 0.5).astype(np.float64)
    f0_t = np.where(vuv == 0.0, DEFAULT_F0, np.interp(t, coarse_t, coarse_f0))
    wrap = np.fmod(np.cumsum(2.0 * np.pi * f0_t / fs), 2.0 * np.pi)
    idx = np.flatnonzero(np.abs(np.diff(wrap)) > np.pi)
    y1 = wrap[idx] - 2.0 * np.pi
    shift = -y1 / (wrap[idx + 1] - y1) / fs
    return idx, shift, vuv[idx]


def _minimum_phase(log_power: Tensor, fold: Tensor) -> Tensor:
    """Minimum-phase log spectra (rows of N/2+1 bins) of the amplitudes sqrt(power), through the cepstrum
    `fold`ed onto its causal half (and halved: the square root)."""
    return torch.fft.rfft(torch.fft.irfft(log_power, n=len(fold)) * fold)


def gaussian_noise(seed: int) -> Noise:
    """Unit Gaussian noise from a numpy generator seeded with `seed` (another realisation than WORLD's)."""
    gen = np.random.default_rng(seed)
    return lambda n: gen.standard_normal(n, dtype=np.float32)


def world_noise() -> Noise:
    """WORLD's noise sequence from its start, as `Synthesis` draws it for every utterance (its `randn`,
    `tmt.vocoder.world_random`): fed this, the batched synthesizer gives pyworld's waveform itself."""
    pos = 0

    def draw(n: int) -> np.ndarray:
        nonlocal pos
        pos += n
        return world_randn(n, start=pos - n)

    return draw


def _exp(log_spectrum: Tensor, sign: Tensor) -> Tensor:
    """Complex exp of float32 spectra through numpy's real exp, cos and sin (SIMD in float32: ~3x faster here
    than torch's polar and ~20x faster than either library's complex exp), times `sign` per bin."""
    z = log_spectrum.numpy()
    scale = np.exp(z.real) * sign.numpy()
    out = np.empty_like(z)
    out.real, out.imag = scale * np.cos(z.imag), scale * np.sin(z.imag)
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=4)
def _constants(fft: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per FFT size: the cepstral fold (halved: log power in, log amplitude of the minimum-phase spectrum out);
    (-1)^k per bin, which turns a response from FFT order (the pulse at sample 0) into time order (the pulse at
    sample N/2: WORLD's fftshift) inside the spectra; and WORLD's raised cosine that carries a periodic
    response's DC, normalised to sum 1."""
    fold = torch.zeros(fft, dtype=DTYPE)
    fold[0], fold[1 : fft // 2], fold[fft // 2] = 0.5, 1.0, 0.5
    sign = torch.from_numpy(np.where(np.arange(fft // 2 + 1) % 2 == 0, 1.0, -1.0)).to(DTYPE)
    half = 0.5 - 0.5 * np.cos(2.0 * np.pi * (np.arange(fft // 2) + 1.0) / (1.0 + fft))
    full = np.concatenate([half, half[::-1]])
    return fold, sign, torch.from_numpy(full / full.sum()).to(DTYPE)


def _interpolate(frames: Tensor, pos: np.ndarray) -> Tensor:
    """Rows of `frames` at fractional frame positions, linearly between the two nearest (clamped)."""
    last = len(frames) - 1
    lo = np.minimum(np.floor(pos).astype(np.int64), last)
    hi = np.minimum(np.ceil(pos).astype(np.int64), last)
    a = torch.from_numpy(np.where(lo == hi, 0.0, pos - lo)).to(DTYPE)[:, None]
    return torch.lerp(frames.index_select(0, torch.from_numpy(lo)), frames.index_select(0, torch.from_numpy(hi)), a)


def synthesize(f0: np.ndarray, spectrogram: np.ndarray, aperiodicity: np.ndarray, fs: int,
               frame_period: float = 5.0, noise: Noise | None = None) -> np.ndarray:
    """`pyworld.synthesize`'s signature and output length (F0 in Hz, 0 = unvoiced; envelope and
    aperiodicity with N/2+1 bins per frame), computed a chunk of pulses at a time. The aperiodic
    excitation draws its samples, pulse after pulse, from `noise` (n -> n white samples of unit
    variance; default: WORLD's own sequence, so the waveform is pyworld's)."""
    if not len(f0) == len(spectrogram) == len(aperiodicity) or spectrogram.shape[1] != aperiodicity.shape[1]:
        raise ValueError(f"WORLD synthesis needs as many F0, envelope and aperiodicity frames of equal width; "
                         f"got {len(f0)}, {spectrogram.shape} and {aperiodicity.shape}")
    fft = (spectrogram.shape[1] - 1) * 2
    num_samples = int(len(f0) * frame_period * fs / 1000)
    if num_samples < 2:
        return np.zeros(max(num_samples, 0))
    y = np.zeros(num_samples + 2 * fft, dtype=np.float32)
    idx, shift, vuv = pulse_train(np.asarray(f0, dtype=np.float64), fs, frame_period, num_samples, fft)
    pulses = _Pulses(idx, shift * fs, idx / fs / (frame_period / 1000.0), noise if noise is not None else world_noise(), fft)
    env = torch.from_numpy(np.abs(spectrogram).astype(np.float32))
    ap = torch.from_numpy(np.clip(aperiodicity, 0.001, 0.999999999999).astype(np.float32))
    # a periodic part where voiced and not fully aperiodic at DC; chunks of one kind need no masks
    voiced = vuv > 0.5
    periodic = voiced & (_interpolate(ap[:, :1], pulses.pos)[:, 0] ** 2 <= 0.999).numpy()
    fold, sign, remover = _constants(fft)
    for group, kind in ((periodic, "periodic"), (voiced & ~periodic, "voiced"), (~voiced, "unvoiced")):
        members = np.flatnonzero(group)
        for sel in (members[start : start + CHUNK] for start in range(0, len(members), CHUNK)):
            e = _interpolate(env, pulses.pos[sel])
            if kind == "unvoiced":  # the whole envelope on the noise
                block = _aperiodic(e, pulses.noise(sel), fold, sign)
            else:
                r = _interpolate(ap, pulses.pos[sel]) ** 2
                block = _aperiodic(e * r, pulses.noise(sel), fold, sign)
                if kind == "periodic":
                    block += _periodic(e * (1.0 - r), pulses.delay[sel], pulses.sizes[sel], fold, sign, remover)
            # overlap-add: response sample k of the pulse at n lands on n - N/2 + 1 + k (y has N samples of slack on
            # both sides). A row at a time in numpy: twice as fast here as one index_add_ over the block.
            for row, at in zip(block.numpy(), (idx[sel] + fft - fft // 2 + 1).tolist(), strict=True):
                y[at : at + fft] += row
    return y[fft : fft + num_samples].astype(np.float64)


class _Pulses:
    """One utterance's pulses: delays (samples), periods, frame positions, and the noise each draws: zero-mean
    white noise as long as its period (at most N), drawn pulse after pulse from `source`."""

    def __init__(self, idx: np.ndarray, delay: np.ndarray, pos: np.ndarray, source: Noise, fft: int) -> None:
        self.delay, self.pos = delay, pos
        self.sizes = np.diff(idx, append=idx[-1:]) if len(idx) else idx
        self.length = np.minimum(self.sizes, fft)
        self.offset = np.cumsum(self.length) - self.length
        rows = np.repeat(np.arange(len(idx)), self.length)
        draws = np.array(source(len(rows)), dtype=np.float32)  # a copy: the source's buffer stays as it is
        draws -= (np.bincount(rows, weights=draws, minlength=len(idx)) / np.maximum(self.length, 1))[rows].astype(
            np.float32)
        self.draws = torch.from_numpy(np.concatenate([draws, np.zeros(fft, dtype=np.float32)]))

    def noise(self, sel: np.ndarray) -> Tensor:
        """The selected pulses' noise, one row each, as long as the longest (zeros past each pulse's own)."""
        width = max(int(self.length[sel].max()), 1)
        col = torch.arange(width)
        rows = self.draws[torch.from_numpy(self.offset[sel])[:, None] + col]
        return rows.masked_fill_(col >= torch.from_numpy(self.length[sel])[:, None], 0.0)


def _aperiodic(power: Tensor, noise: Tensor, fold: Tensor, sign: Tensor) -> Tensor:
    """Noise responses (rows of N samples in time order): each pulse's noise through the minimum-phase filter of
    its aperiodic power spectrum."""
    fft = len(fold)
    return torch.fft.irfft(_exp(_minimum_phase(torch.log(power), fold), sign) * torch.fft.rfft(noise, n=fft), n=fft)


def _periodic(power: Tensor, delay: np.ndarray, sizes: np.ndarray, fold: Tensor, sign: Tensor, remover: Tensor
              ) -> Tensor:
    """Periodic responses (rows of N samples in time order, causal half only): the minimum-phase response of the
    periodic power spectrum, delayed by the pulse's fraction of a sample, its DC spread over `remover`, scaled
    by the square root of the pulse period."""
    fft = len(fold)
    log_p = _minimum_phase(torch.log(power + SAFE_MIN), fold)
    # the fractional delay: a linear phase
    phase = log_p.imag - torch.from_numpy(2.0 * np.pi * delay / fft).to(DTYPE)[:, None] * torch.arange(
        fft // 2 + 1, dtype=DTYPE)
    periodic = torch.fft.irfft(_exp(torch.complex(log_p.real, phase), sign), n=fft)
    dc = periodic[:, fft // 2 :].sum(dim=1, keepdim=True)  # the causal half's DC; the rest is dropped
    periodic[:, : fft // 2] = 0.0
    return (periodic - dc * remover) * torch.from_numpy(np.sqrt(sizes)).to(DTYPE)[:, None]
