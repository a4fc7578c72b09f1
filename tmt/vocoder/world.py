"""WORLD analysis and synthesis for the unit-world arch (the source-filter vocoder `pyworld`).

    wav ──▶ F0 (dio + stonemask, or harvest), V/UV ──▶ per WORLD frame: [log F0, V/UV,
        └─▶ cheaptrick envelope ──▶ coded to `envelope_dim`     coded envelope...,
        └─▶ d4c aperiodicity, coded to bands (world_d4c)        band aperiodicity...]

One feature matrix per utterance, ``frames_per_unit(cfg)`` rows per 20 ms unit frame
(columns: `LF0`, `VUV`, then the envelope, then the aperiodicity bands). Analysis is
cached in a `WorldFeatureCache`: shards of utterances keyed by id, each written
atomically, so a refit reads them back and a killed analysis resumes at the shard it
was writing. WORLD holds the GIL, so analysis and synthesis parallelise with
processes (`workers`), never threads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import convolve1d
from scipy.special import logsumexp

from tmt.core.audio import FRAME_HOP, SAMPLE_RATE, load_audio
from tmt.core.io import atomic_open, atomic_write_json
from tmt.core.progress import progress_bar
from tmt.vocoder.config import VocoderError, WorldConfig
from tmt.vocoder.world_d4c import coded_aperiodicity

log = logging.getLogger(__name__)

LF0, VUV = 0, 1
"""Columns of a feature matrix: log F0 (0 where unvoiced), voicing flag (0/1); the envelope and the
aperiodicity bands follow."""
CACHE_VERSION = 1
UNIT_MS = 1000.0 * FRAME_HOP / SAMPLE_RATE


def _pyworld() -> Any:
    try:
        import pyworld
    except ImportError:
        raise VocoderError("the unit-world vocoder needs the `pyworld` package: pip install pyworld") from None
    return pyworld


def frames_per_unit(cfg: WorldConfig) -> int:
    """WORLD frames per 20 ms unit frame (4 at 5 ms)."""
    return round(UNIT_MS / cfg.frame_period)


def smooth_tracks(frames: np.ndarray, width_ms: float, frame_period: float) -> np.ndarray:
    """(n, D) feature tracks run through a centred Hann window about `width_ms` wide (an odd number of frames;
    under 3 frames: unchanged), the ends held: the steps where one unit's envelope meets the next are
    smoothed as a speaker's articulators would, while features that stay put keep their value."""
    n = round(width_ms / frame_period) | 1
    if n < 3:
        return frames
    window = np.hanning(n + 2)[1:-1]
    return convolve1d(frames, window / window.sum(), axis=0, mode="nearest").astype(frames.dtype, copy=False)


def scale_envelope_contrast(codes: np.ndarray, contrast: float, fft: int) -> np.ndarray:
    """(n, envelope_dim) coded envelopes with every coefficient from the third on times `contrast`, and the first
    moved so each frame keeps its power. WORLD's code is a cosine transform of the log envelope on a warped axis:
    coefficient 0 is the level, 1 the tilt, the rest the formants' peaks and valleys, so below 1 flattens them
    (the opposite of HTS's cepstral postfilter, which sharpens averaged spectra) and 1 leaves the codes as they are."""
    if contrast == 1.0:
        return codes
    decoder = envelope_decoder(codes.shape[1], fft)  # row 0 decodes to a constant 1: c0 is the log level
    c = codes.astype(np.float64)
    scaled = c.copy()
    scaled[:, 2:] *= contrast
    scaled[:, 0] += logsumexp(c @ decoder, axis=1) - logsumexp(scaled @ decoder, axis=1)
    return scaled.astype(codes.dtype)


def num_aperiodicities(sample_rate: int = SAMPLE_RATE) -> int:
    """Band aperiodicity dimensions WORLD codes at this rate (1 at 16 kHz)."""
    return int(_pyworld().get_num_aperiodicities(sample_rate))


def feature_dim(cfg: WorldConfig) -> int:
    """Columns of a feature matrix."""
    return 2 + cfg.envelope_dim + num_aperiodicities()


@functools.lru_cache(maxsize=8)
def envelope_decoder(env_dim: int, fft: int) -> np.ndarray:
    """(env_dim, fft // 2 + 1) float64: row i is the log envelope that code unit vector i decodes to. WORLD's
    envelope coding is linear in the log envelope (a cosine transform on a warped axis, then linear
    interpolation), so exp(codes @ this) is `pyworld.decode_spectral_envelope` for a whole batch of frames."""
    eye = np.ascontiguousarray(np.eye(env_dim))
    return np.log(_pyworld().decode_spectral_envelope(eye, SAMPLE_RATE, fft))  # zeros decode to 1


@functools.lru_cache(maxsize=8)
def aperiodicity_decoder(fft: int) -> np.ndarray:
    """(bands + 2, fft // 2 + 1) float64: WORLD's band-aperiodicity decoding as a matrix. Knots at 0, 3, 6, ...
    kHz and Nyquist hold -60 dB, the bands, -1e-12 dB; every bin interpolates its two knots linearly (dB)."""
    bands = num_aperiodicities()
    knots = np.append(np.arange(bands + 1) * 3000.0, SAMPLE_RATE / 2.0)
    hz = np.arange(fft // 2 + 1) * SAMPLE_RATE / fft
    return np.stack([np.interp(hz, knots, row) for row in np.eye(bands + 2)])


def decode_features(envelope: np.ndarray, aperiodicity: np.ndarray, fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Coded envelope and band aperiodicity (dB) per frame -> WORLD's envelope and aperiodicity spectra, as
    `pyworld.decode_spectral_envelope` / `decode_aperiodicity` give them, by two matrix products; a frame
    whose bands average above -0.5 dB stays fully aperiodic, as in WORLD. float32 (what the batched
    synthesizer computes in)."""
    sp = np.exp(envelope.astype(np.float32) @ envelope_decoder(envelope.shape[1], fft).astype(np.float32))
    edges = np.broadcast_to(np.array([-60.0, -1e-12]), (len(aperiodicity), 2))
    knots = np.concatenate([edges[:, :1], aperiodicity, edges[:, 1:]], axis=1)
    ap = np.exp((knots.astype(np.float32) @ aperiodicity_decoder(fft).astype(np.float32)) * np.float32(np.log(10.0) / 20.0))
    ap[aperiodicity.mean(axis=1) > -0.5] = 1.0  # WORLD: 1 - 1e-12; the synthesizer clips it there
    return sp, ap


@functools.lru_cache(maxsize=8)
def log_envelope_basis(env_dim: int, points: int, fft: int) -> np.ndarray:
    """(env_dim, points) float32: row i is the log envelope that code unit vector i decodes to, read at
    `points` mel-spaced frequencies from 0 to Nyquist. WORLD's envelope coding is linear in the log
    envelope (a cosine transform on a warped axis), so codes @ basis is the decoded log envelope there."""
    full = envelope_decoder(env_dim, fft)
    mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + (SAMPLE_RATE / 2) / 700.0), points)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    bins = np.clip(np.round(hz / SAMPLE_RATE * fft).astype(int), 0, fft // 2)
    return full[:, bins].astype(np.float32)


# ---------------------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------------------
def analyse(wav: np.ndarray, num_frames: int, cfg: WorldConfig) -> np.ndarray:
    """A wav cut to `num_frames` unit frames -> float32 features (num_frames * frames_per_unit, feature_dim)."""
    pw = _pyworld()
    x = np.zeros(num_frames * FRAME_HOP, dtype=np.float64)
    n = min(len(wav), len(x))
    x[:n] = wav[:n]
    # a whisper of fixed noise keeps the envelope of digital silence finite
    x += 1e-5 * np.random.default_rng(0).standard_normal(len(x))
    fs, fp = SAMPLE_RATE, cfg.frame_period
    if cfg.f0_method == "harvest":
        f0, t = pw.harvest(x, fs, f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil, frame_period=fp)
    else:
        f0, t = pw.dio(x, fs, f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil, frame_period=fp)
        f0 = pw.stonemask(x, f0, t, fs)
    sp = pw.cheaptrick(x, f0, t, fs)
    env = pw.code_spectral_envelope(sp, fs, cfg.envelope_dim)
    bap = coded_aperiodicity(x, f0, t, fs)  # = pw.code_aperiodicity(pw.d4c(x, f0, t, fs), fs), batched
    want = num_frames * frames_per_unit(cfg)
    voiced = f0 > 0
    lf0 = np.where(voiced, np.log(np.maximum(f0, 1e-3)), 0.0)
    feats = np.concatenate([lf0[:, None], voiced[:, None], env, bap], axis=1)[:want]
    if len(feats) < want:  # WORLD gives len / hop + 1 frames; pad by repeating the last (never needed at 16 kHz)
        feats = np.concatenate([feats, np.repeat(feats[-1:], want - len(feats), axis=0)])
    return feats.astype(np.float32)


def _analyse_job(job: tuple[str, str, int, WorldConfig]) -> tuple[str, np.ndarray]:
    uid, path, num_frames, cfg = job
    return uid, analyse(load_audio(path), num_frames, cfg)


# ---------------------------------------------------------------------------------------
# the feature cache
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureJob:
    """One utterance to analyse: id, wav and its length in unit frames."""

    id: str
    wav_path: Path
    num_frames: int


def analysis_signature(cfg: WorldConfig) -> dict[str, Any]:
    """What the cached features depend on (a change means a different cache directory)."""
    return {
        "version": CACHE_VERSION, "sample_rate": SAMPLE_RATE, "frame_period": cfg.frame_period,
        "f0_method": cfg.f0_method, "f0_floor": cfg.f0_floor, "f0_ceil": cfg.f0_ceil,
        "envelope_dim": cfg.envelope_dim,
    }


class WorldFeatureCache:
    """WORLD features by utterance id in `root/<signature hash>/shard-NNNNN.npz` (atomic shards)."""

    def __init__(self, root: str | Path, cfg: WorldConfig) -> None:
        sig = analysis_signature(cfg)
        key = hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:12]
        self.cfg = cfg
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "cache.json").is_file():
            atomic_write_json(self.dir / "cache.json", {"format": "tmt-world-features", **sig})
        self._feats: dict[str, np.ndarray] = {}
        self._paths: dict[str, str] = {}
        for shard in self._shards():
            self._read(shard)

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz"))

    def _read(self, shard: Path) -> None:
        try:
            with np.load(shard, allow_pickle=False) as z:
                ids, paths, offsets, data = z["ids"], z["paths"], z["offsets"], z["data"]
        except (OSError, ValueError, KeyError) as e:
            raise VocoderError(f"WORLD feature cache shard {shard} is unreadable ({e}); delete it to re-analyse") from None
        for i, uid in enumerate(ids.tolist()):
            self._feats[uid] = data[offsets[i] : offsets[i + 1]]
            self._paths[uid] = str(paths[i])

    def __len__(self) -> int:
        return len(self._feats)

    def get(self, job: FeatureJob) -> np.ndarray | None:
        """The cached features of `job`, or None when missing or made from another wav or length."""
        f = self._feats.get(job.id)
        if f is None or self._paths[job.id] != str(job.wav_path):
            return None
        return f if len(f) == job.num_frames * frames_per_unit(self.cfg) else None

    def ensure(self, jobs: Sequence[FeatureJob], *, workers: int = 1, shard_size: int = 200,
               progress: bool | None = None) -> dict[str, np.ndarray]:
        """Analyse what is missing (in `workers` processes, one shard per `shard_size` utterances); all features."""
        todo = [j for j in jobs if self.get(j) is None]
        if todo:
            log.info("WORLD analysis of %d utterances (%d cached) -> %s", len(todo), len(jobs) - len(todo), self.dir)
        bar = progress_bar(total=len(todo), desc="world analysis", unit="utt", enabled=progress)
        try:
            with _executor(workers) as ex:
                for s in range(0, len(todo), shard_size):
                    chunk = todo[s : s + shard_size]
                    args = [(j.id, str(j.wav_path), j.num_frames, self.cfg) for j in chunk]
                    results = []
                    for uid, f in _map(ex, _analyse_job, args, workers):
                        results.append((uid, f))
                        bar.update(1)
                    self._write(chunk, [f for _, f in results])
        finally:
            bar.close()
        out = {}
        for j in jobs:
            f = self.get(j)
            assert f is not None
            out[j.id] = f
        return out

    def _write(self, jobs: Sequence[FeatureJob], feats: Sequence[np.ndarray]) -> None:
        n = len(self._shards())
        path = self.dir / f"shard-{n:05d}.npz"
        while path.exists():
            n += 1
            path = self.dir / f"shard-{n:05d}.npz"
        offsets = np.cumsum([0, *[len(f) for f in feats]]).astype(np.int64)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, ids=np.asarray([j.id for j in jobs]), paths=np.asarray([str(j.wav_path) for j in jobs]),
                     offsets=offsets, data=np.concatenate(list(feats)).astype(np.float32))
        for j, f in zip(jobs, feats, strict=True):
            self._feats[j.id], self._paths[j.id] = f, str(j.wav_path)


class _Inline(Executor):
    """An executor that runs in this process (workers <= 1)."""


def _executor(workers: int) -> Executor:
    if workers <= 1:
        return _Inline()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)


def _one_thread() -> None:
    """Worker processes: one torch thread each (the batched synthesizer's FFTs), or the pool oversubscribes."""
    import torch

    torch.set_num_threads(1)


def _map(ex: Executor, fn: Any, args: Sequence[Any], workers: int) -> Iterator[Any]:
    if isinstance(ex, _Inline):
        return map(fn, args)
    return ex.map(fn, args, chunksize=max(1, len(args) // (4 * workers)))


# ---------------------------------------------------------------------------------------
# synthesis
# ---------------------------------------------------------------------------------------
def synthesize_features(f0: np.ndarray, envelope: np.ndarray, aperiodicity: np.ndarray, frame_period: float,
                        num_samples: int, fft: int = 1024, synthesizer: str = "batched",
                        noise_seed: int | None = None) -> np.ndarray:
    """F0 (Hz, 0 = unvoiced), coded envelope, band aperiodicity per WORLD frame -> float32 wav of `num_samples`
    (envelopes decoded to `fft` points: WORLD synthesises with the FFT size its envelope has), by
    `tmt.vocoder.world_synth` (`batched`; WORLD's noise sequence, or Gaussian noise from `noise_seed`) or
    `pyworld.synthesize` (`pyworld`)."""
    pw = _pyworld()
    fs = SAMPLE_RATE
    # one more frame than the features cover, so WORLD's (frames - 1) * hop samples reach the end
    f0 = np.ascontiguousarray(np.concatenate([f0, f0[-1:]]), dtype=np.float64)
    env = np.ascontiguousarray(np.concatenate([envelope, envelope[-1:]]), dtype=np.float64)
    bap = np.ascontiguousarray(np.concatenate([aperiodicity, aperiodicity[-1:]]), dtype=np.float64)
    if synthesizer == "pyworld":
        sp = pw.decode_spectral_envelope(env, fs, fft)
        ap = pw.decode_aperiodicity(np.minimum(bap, 0.0), fs, fft)
        wav = pw.synthesize(f0, sp, ap, fs, frame_period)[:num_samples]
    else:
        from tmt.vocoder.world_synth import gaussian_noise, synthesize

        noise = None if noise_seed is None else gaussian_noise(noise_seed)
        wav = synthesize(f0, *decode_features(env, np.minimum(bap, 0.0), fft), fs, frame_period, noise)[:num_samples]
    if len(wav) < num_samples:
        wav = np.pad(wav, (0, num_samples - len(wav)))
    return np.clip(np.nan_to_num(wav), -1.0, 1.0).astype(np.float32)


SynthJob = tuple[np.ndarray, np.ndarray, np.ndarray, float, int, int, str, int | None]
"""Arguments of `synthesize_features`: f0, envelope, aperiodicity, frame period, samples, FFT size, synthesizer,
noise seed."""


def _synth_job(job: SynthJob) -> np.ndarray:
    return synthesize_features(*job)


_POOLS: dict[int, Executor] = {}


def synthesize_many(jobs: Sequence[SynthJob], workers: int = 1) -> list[np.ndarray]:
    """`synthesize_features` over many utterances, in `workers` processes (a pool kept for the next call)."""
    if workers <= 1 or len(jobs) < 2:
        return [_synth_job(j) for j in jobs]
    if workers not in _POOLS:
        _POOLS[workers] = _executor(workers)
    return list(_map(_POOLS[workers], _synth_job, jobs, workers))


def synth_job(feats: np.ndarray, num_samples: int, cfg: WorldConfig) -> SynthJob:
    """A feature matrix (`analyse`'s layout) and the wav length -> `synthesize_features`' arguments under `cfg`."""
    f0 = np.where(feats[:, VUV] > 0.5, np.exp(feats[:, LF0]), 0.0)
    env, ap = feats[:, 2 : 2 + cfg.envelope_dim], feats[:, 2 + cfg.envelope_dim :]
    return f0, env, ap, cfg.frame_period, num_samples, cfg.synthesis_fft, cfg.synthesizer, cfg.noise_seed


def features_to_wave(feats: np.ndarray, cfg: WorldConfig) -> np.ndarray:
    """Copy synthesis: a feature matrix from `analyse` straight back to a wav (the arch's ceiling)."""
    return _synth_job(synth_job(feats, math.ceil(len(feats) / frames_per_unit(cfg)) * FRAME_HOP, cfg))
