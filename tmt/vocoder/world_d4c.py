"""WORLD's D4C band aperiodicity, coded as `pyworld.code_aperiodicity` codes it, for all frames at once.

`analyse` needs `pyworld.code_aperiodicity(pyworld.d4c(x, f0, t, fs), fs)`: at 16 kHz one value per
frame (the aperiodicity at 3 kHz, in dB). pyworld runs D4C one frame at a time in C (seven 2048-point
FFTs an analysed frame, WORLD's noise drawn and windows' cosines evaluated sample by sample) and then
builds the whole 513-bin aperiodicity spectrum only for the coding to read one bin of it back: D4C was
~57% of WORLD analysis time. pyworld exposes no batched
D4C, so this module is a hand-written numpy version of D4C as WORLD's `d4c.cpp` (with `common.cpp`,
`matlabfunctions.cpp`, `codec.cpp`) in the WORLD copy that pyworld 0.3.5 bundles (D4C last updated
2024-09-13) computes it, a chunk of frames per vectorised step, and only up to the coded bands:

    voiced frame (F0 > 0)
      voicing check: Blackman window 3 periods long, 2048-point power spectrum;
          power in (100 Hz, 4 kHz] / power in (100 Hz, 7.9 kHz] <= threshold  ->  fully aperiodic
      otherwise (F0 floored at 47 Hz):
          energy centroid of two 4-period Blackman windows, a quarter period either side,
            over the smoothed power of a 4-period Hann window at the frame
            = static group delay; smoothed over F0/2, minus itself smoothed over F0
          per 3 kHz band: Nuttall window of +-3 kHz of it, 2048-point power spectrum; the power
            share of all but the 22 strongest bins, in dB, plus (F0 - 100) / 50, capped at 0
      coded: the dB knots (-60 at 0 Hz, the bands, ~0 at Nyquist) interpolated to the caller's FFT
          grid, through 10^(dB/20) and back, read at 3 kHz * (band + 1)

Every windowed waveform carries WORLD's safeguard noise (1e-6 times its `randn`, a fixed xorshift
sequence restarted at each call, drawn in frame order: all voicing checks, then the three windows of
each analysed frame); the sequence is reproduced here (vectorised lanes of the generator, cached for
the process), so the result is pyworld's to float rounding: on 30 corpus utterances at most 2e-10 dB
apart (median 3e-14 dB), the same voicing decisions. The rest differs from WORLD only in summation
order and FFT implementation (and Blackman's cos 2a as 2 cos^2 a - 1, cosines by angle addition).
Memory: a chunk of frames at a time (~20 MB), plus the cached noise (4 bytes a value, ~2000 values
a voiced frame: ~35 MB after a 30 s utterance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tmt.vocoder.world_random import RANDN_OFFSET, RANDN_SCALE, randn_sums

FLOOR_F0 = 47.0
"""D4C's own F0 floor (`kFloorF0D4C`): sets its FFT size and floors F0 in the band analysis."""
LOVE_TRAIN_FLOOR_F0 = 40.0
"""F0 floor (and FFT size) of the voicing check."""
BAND_HZ = 3000.0
"""Band spacing (`kFrequencyInterval`); coded bands sit at 3, 6, ... kHz."""
UPPER_HZ = 15000.0
"""Highest band (`kUpperLimit`)."""
SAFE_MIN = 1e-12
"""`kMySafeGuardMinimum`: unanalysed frames are 1 - this."""
NOISE_GAIN = 1e-6
"""`kSafeGuardD4C`: the safeguard noise on every windowed waveform."""
DEFAULT_F0_FLOOR = 71.0
"""pyworld's default F0 floor, which sets the aperiodicity's FFT size when none is given."""
CHUNK = 64
"""Frames per vectorised step (frames of similar F0 together)."""
_LOG2 = 0.69314718055994529  # WORLD's kLog2, so FFT sizes round exactly as there


def _pow2_size(ratio: float, fs: int, floor: float) -> int:
    """WORLD's FFT size: the power of two above `ratio` periods of F0 `floor` (2^(1 + floor(log2(..+1))))."""
    return int(2.0 ** (1.0 + int(math.log(ratio * fs / floor + 1) / _LOG2)))


def num_bands(fs: int) -> int:
    """Coded aperiodicity bands at `fs` (`pyworld.get_num_aperiodicities`)."""
    return int(min(UPPER_HZ, fs / 2.0 - BAND_HZ) / BAND_HZ)


def _round(v: np.ndarray) -> np.ndarray:
    """MATLAB's round (halves away from zero) as int64."""
    return np.where(v > 0, np.trunc(v + 0.5), np.trunc(v - 0.5)).astype(np.int64)


# ---------------------------------------------------------------------------------------
# windows and spectral helpers (WORLD's common.cpp), one row per frame
# ---------------------------------------------------------------------------------------
def _rows(a: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Row r: a[starts[r] : starts[r] + width] (a 1-D array) or a[r, starts[r] : ...] (2-D), copied (through a
    strided view of the flat array: numpy's sliding_window_view costs more than the copy here)."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if a.ndim == 2:
        starts = starts + np.arange(len(a)) * a.shape[1]
    step = flat.itemsize
    return np.ndarray((flat.size - width + 1, width), flat.dtype, flat, 0, (step, step))[starts]


def _windows(f0: np.ndarray, periods: float, fs: int, kinds: tuple[str, ...]
             ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Half lengths (samples) of WORLD's F0-adaptive windows `periods` periods long, where each row's window
    lies (its first 2 half + 1 of 2 max(half) + 1 columns), and the windows (`blackman`, `hann`), zero
    past that. cos(a) comes by angle addition from 16-step tables (np.cos takes ~15-30 ns a value here;
    this agrees with it to a few ulp), Blackman's cos 2a as 2 cos^2 a - 1."""
    half = _round(periods * fs / f0 / 2.0)
    width = 2 * int(half.max()) + 1
    step = np.pi * (2.0 / periods / fs) * f0[:, None]
    fine, coarse = step * np.arange(16), step * (np.arange(0, width, 16) - half[:, None])
    cos = (np.cos(coarse)[:, :, None] * np.cos(fine)[:, None, :]
           - np.sin(coarse)[:, :, None] * np.sin(fine)[:, None, :]).reshape(len(f0), -1)[:, :width]
    valid = np.arange(width) <= 2 * half[:, None]
    shapes = {"blackman": lambda c: 0.34 + c * (0.5 + 0.16 * c), "hann": lambda c: 0.5 * c + 0.5}
    return half, valid, [np.where(valid, shapes[kind](cos), 0.0) for kind in kinds]


@dataclass(frozen=True)
class _Source:
    """The wav padded by its edge samples on both sides, WORLD's `randn` sums for the call, the rate."""

    x: np.ndarray
    pad: int
    noise: np.ndarray
    fs: int

    def waves(self, pos: np.ndarray, half: np.ndarray, valid: np.ndarray, window: np.ndarray,
              offset: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Windowed waveforms (WORLD's GetWindowedWaveform): rows of `window` (nonzero where `valid`,
        summing to `total`) times the wav around sample round(pos * fs) (edge samples repeated past the
        ends), plus the noise from `offset` on, minus the window times the weighted mean."""
        width = window.shape[1]
        start = np.clip(_round(pos * self.fs + 0.001) - half + self.pad, 0, len(self.x) - width)
        wave = _rows(self.x, start, width)
        wave *= window
        noise = _rows(self.noise, offset, width) * (NOISE_GAIN * RANDN_SCALE)  # WORLD's randn, scaled,
        noise -= RANDN_OFFSET * NOISE_GAIN  # to within an ulp of 1e-6
        np.add(wave, noise, out=wave, where=valid)
        wave -= window * (wave.sum(axis=1) / total)[:, None]
        return wave


def _power(spec: np.ndarray) -> np.ndarray:
    """|spec|^2 as WORLD sums it (re^2 + im^2), C-contiguous."""
    power = np.square(spec.real)
    power += np.square(spec.imag)
    return power


def _dc_correct(spec: np.ndarray, f0: np.ndarray, fs: int, fft: int) -> np.ndarray:
    """Adds to each bin below F0 the spectrum read mirrored about F0 (WORLD's DCCorrection), in place
    (`spec` C-contiguous)."""
    upper = 2 + (f0 * fft / fs).astype(np.int64)
    i = np.arange(upper.max() - 1)
    q = (i * fs / fft - f0[:, None]) / (-fs / fft)
    base = np.trunc(q)
    at = np.minimum(np.maximum(base, 0), spec.shape[1] - 2).astype(np.int64) + spec.shape[1] * np.arange(len(spec))[:, None]
    y0, y1 = spec.reshape(-1)[at], spec.reshape(-1)[at + 1]
    spec[:, : len(i)] += np.where(i < upper[:, None] - 1, y0 + (y1 - y0) * (q - base), 0.0)
    return spec


def _reach(bins: int, width: np.ndarray, fs: int, fft: int) -> int:
    """Input bins `_smooth` reads for its first `bins` outputs (all, where it mirrors at Nyquist)."""
    need = bins + int(width.max() * fft / fs + 1) // 2 + 2
    return fft // 2 + 1 if need > fft // 2 - 2 else need


def _smooth(spec: np.ndarray, width: np.ndarray, fs: int, fft: int, bins: int) -> np.ndarray:
    """First `bins` bins of a moving average over `width` Hz per row (WORLD's LinearSmoothing): the spectrum
    mirrored at 0 Hz (and Nyquist, given all bins), integrated from each row's own start (WORLD's summation
    order), read at f -+ width / 2. `spec` needs `_reach(bins, ...)` bins."""
    half_fft = fft // 2
    bound = (width * fft / fs).astype(np.int64) + 1
    most, length = int(bound.max()), bins + 2 * int(bound.max()) + 2
    pieces = [spec[:, most:0:-1], spec]
    if spec.shape[1] > half_fft:
        pieces.append(spec[:, half_fft - 1 : half_fft - most - 1 : -1])
    short = 2 * most + length - sum(p.shape[1] for p in pieces)
    if short > 0:  # rows never read this far, but their windows must fit
        pieces.append(np.zeros((len(spec), short)))
    segment = _rows(np.concatenate(pieces, axis=1), most - bound, length)
    segment *= fs / fft  # = * fs / fft exactly: fft is a power of two
    np.cumsum(segment, axis=1, out=segment)
    origin = -(bound - 0.5) * fs / fft
    levels = []
    for hz in (0.0 - width / 2.0, 0.0 - width / 2.0 + width):  # bin 0; bin i reads i columns further
        q = (hz - origin) / (fs / fft)
        base = np.trunc(q).astype(np.int64)
        y = _rows(segment, base, bins + 1)
        level = np.subtract(y[:, 1:], y[:, :-1])
        level *= (q - base)[:, None]
        level += y[:, :-1]
        levels.append(level)
    levels[1] -= levels[0]
    levels[1] /= width[:, None]
    return levels[1]


def _nuttall(n: int) -> np.ndarray:
    """WORLD's Nuttall window of n points."""
    tmp = np.arange(n) / (n - 1.0)
    return (0.355768 - 0.487396 * np.cos(2.0 * np.pi * tmp) + 0.144232 * np.cos(4.0 * np.pi * tmp)
            - 0.012604 * np.cos(6.0 * np.pi * tmp))


# ---------------------------------------------------------------------------------------
# D4C
# ---------------------------------------------------------------------------------------
def _love_train(src: _Source, f0: np.ndarray, t: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Voicing check per frame (F0 > 0): power in (100 Hz, 4 kHz] over power in (100 Hz, 7.9 kHz] of a
    3-period Blackman window (WORLD's D4CLoveTrain, which sums the bins in order; here two dot products);
    at most `threshold` makes the frame aperiodic."""
    fs = src.fs
    fft = _pow2_size(3.0, fs, LOVE_TRAIN_FLOOR_F0)
    b0, b1, b2 = (math.ceil(hz * fft / fs) for hz in (100.0, 4000.0, 7900.0))
    f0 = np.maximum(f0, LOVE_TRAIN_FLOOR_F0)
    half, valid, (blackman,) = _windows(f0, 3.0, fs, ("blackman",))
    wave = src.waves(t, half, valid, blackman, offset, blackman.sum(axis=1))
    spec = np.fft.rfft(wave, n=fft, axis=1).view(np.float64)
    low, high = (np.einsum("ij,ij->i", part, part) for part in (spec[:, 2 * b0 + 2 : 2 * b1 + 2],
                                                                spec[:, 2 * b1 + 2 : 2 * b2 + 2]))
    return low / (low + high)


def _group_delay(src: _Source, f0: np.ndarray, t: np.ndarray, offset: np.ndarray, fft: int,
                 bins: int) -> np.ndarray:
    """Static group delay per frame (F0 already floored), its first `bins` bins: the summed energy centroids
    of two Blackman windows a quarter period either side of the frame over the smoothed power of a Hann
    window at it, smoothed over F0/2, minus itself smoothed over F0 (WORLD's GetStaticCentroid,
    GetSmoothedPowerSpectrum, GetStaticGroupDelay)."""
    fs = src.fs
    half, valid, (blackman, hann) = _windows(f0, 4.0, fs, ("blackman", "hann"))
    size = 2 * half + 1
    n2 = _reach(bins, f0, fs, fft)
    n1 = _reach(n2, f0 / 2.0, fs, fft)
    total, ramp = blackman.sum(axis=1), np.arange(1.0, blackman.shape[1] + 1.0)
    centroid = np.zeros((len(f0), n1))
    for k, pos in enumerate((t - 0.25 / f0, t + 0.25 / f0)):
        wave = src.waves(pos, half, valid, blackman, offset + k * size, total)
        wave /= np.sqrt((wave * wave).sum(axis=1))[:, None]
        spec = np.fft.rfft(wave, n=fft, axis=1)[:, :n1]
        centroid += (spec * np.fft.rfft(wave * ramp, n=fft, axis=1)[:, :n1].conj()).real
    wave = src.waves(t, half, valid, hann, offset + 2 * size, hann.sum(axis=1))
    power = _power(np.fft.rfft(wave, n=fft, axis=1)[:, : _reach(n1, f0, fs, fft)])
    power = _smooth(_dc_correct(power, f0, fs, fft), f0, fs, fft, n1)
    delay = _smooth(_dc_correct(centroid, f0, fs, fft) / power, f0 / 2.0, fs, fft, n2)
    return delay[:, :bins] - _smooth(delay, f0, fs, fft, bins)


def _band_window(fs: int, fft: int) -> tuple[int, np.ndarray, int]:
    """Half length and Nuttall window of the band analysis (+-3 kHz), and its boundary: the power share
    leaves out the boundary + 1 strongest bins."""
    length = int(BAND_HZ * fft / fs) * 2 + 1
    return length // 2, _nuttall(length), int(_round(np.array(fft * 8.0 / length)))


def _coarse(delay: np.ndarray, f0: np.ndarray, fs: int, fft: int) -> np.ndarray:
    """Band aperiodicities (dB) from the static group delay: per 3 kHz band, the power share of a Nuttall-
    windowed stretch of it outside its strongest bins, plus (F0 - 100) / 50, capped at 0
    (GetCoarseAperiodicity and D4CGeneralBody; summed in another order than WORLD's sorted one)."""
    half, window, boundary = _band_window(fs, fft)
    keep = fft // 2 - boundary
    out = np.empty((len(delay), num_bands(fs)))
    for band in range(out.shape[1]):
        center = int(BAND_HZ * (band + 1) * fft / fs)
        power = _power(np.fft.rfft(delay[:, center - half : center + half + 1] * window, n=fft, axis=1))
        total = power.sum(axis=1)
        power.partition(keep - 1, axis=1)
        out[:, band] = 10 * np.log10(power[:, :keep].sum(axis=1) / total)
    return np.minimum(0.0, out + ((f0 - 100) / 50.0)[:, None])


def _code(coarse: np.ndarray, fs: int, fft: int) -> np.ndarray:
    """Coded bands (dB) from band aperiodicities as pyworld gets them: D4C interpolates the knots (-60 dB
    at 0 Hz, the bands, -1e-12 dB at Nyquist) to the `fft`-point grid in dB and stores 10^(dB/20); the
    coding takes 20 log10 of that and interpolates it at each band's frequency (two grid bins only)."""
    bands = coarse.shape[1]
    knots = np.append(np.arange(bands + 1) * BAND_HZ, fs / 2.0)
    edge = np.ones((len(coarse), 1))
    levels = np.concatenate([-60.0 * edge, coarse, -SAFE_MIN * edge], axis=1)
    out = np.empty_like(coarse)
    for band in range(bands):
        q = BAND_HZ * (band + 1.0) / (fs / fft)
        read = []
        for b in (int(q), min(int(q) + 1, fft // 2)):
            hz = b * fs / fft
            k = int(np.clip(np.searchsorted(knots, hz, side="right"), 1, len(knots) - 1))
            s = (hz - knots[k - 1]) / (knots[k] - knots[k - 1])
            db = levels[:, k - 1] + s * (levels[:, k] - levels[:, k - 1])
            read.append(20 * np.log10(np.power(10.0, db / 20.0)))
        out[:, band] = read[0] + (read[1] - read[0]) * (q - int(q))
    return out


def coded_aperiodicity(x: np.ndarray, f0: np.ndarray, t: np.ndarray, fs: int, threshold: float = 0.85,
                       fft_size: int | None = None) -> np.ndarray:
    """`pyworld.code_aperiodicity(pyworld.d4c(x, f0, t, fs, threshold, fft_size), fs)` for all frames at
    once: float64 wav, F0 per frame (0 = unvoiced), frame times (s) -> (frames, num_bands(fs)) in dB.
    Unvoiced frames and frames failing the voicing check are 20 log10(1 - 1e-12), as in pyworld."""
    x, f0, t = (np.ascontiguousarray(a, dtype=np.float64) for a in (x, f0, t))
    fft = _pow2_size(3.0, fs, DEFAULT_F0_FLOOR) if fft_size is None else fft_size
    out = np.full((len(f0), num_bands(fs)), 20 * np.log10(1.0 - SAFE_MIN))
    voiced = np.flatnonzero(f0 != 0.0)
    if not len(voiced):
        return out
    check = 2 * _round(3.0 * fs / np.maximum(f0[voiced], LOVE_TRAIN_FLOOR_F0) / 2.0) + 1
    floored = np.maximum(FLOOR_F0, f0[voiced])
    need = 3 * (2 * _round(4.0 * fs / floored / 2.0) + 1)
    pad = int(max(check.max(), need.max() // 3))
    noise = randn_sums(int(check.sum() + need.sum()) + pad)
    src = _Source(np.pad(x, pad, mode="edge"), pad, noise, fs)
    ratio = np.empty(len(voiced))
    offset = np.cumsum(check) - check
    for sel in _chunks(f0[voiced]):
        ratio[sel] = _love_train(src, f0[voiced[sel]], t[voiced[sel]], offset[sel])
    body = ~(ratio <= threshold)
    frames, floored, need = voiced[body], floored[body], need[body]
    offset = check.sum() + np.cumsum(need) - need
    fft_d4c = _pow2_size(4.0, fs, FLOOR_F0)
    bins = int(BAND_HZ * num_bands(fs) * fft_d4c / fs) + _band_window(fs, fft_d4c)[0] + 1
    for sel in _chunks(floored):
        delay = _group_delay(src, floored[sel], t[frames[sel]], offset[sel], fft_d4c, bins)
        out[frames[sel]] = _code(_coarse(delay, floored[sel], fs, fft_d4c), fs, fft)
    return out


def _chunks(f0: np.ndarray) -> list[np.ndarray]:
    """Frame indices in chunks of `CHUNK`, frames of similar F0 together (so similar window lengths)."""
    order = np.argsort(f0, kind="stable")
    return [order[s : s + CHUNK] for s in range(0, len(order), CHUNK)]
