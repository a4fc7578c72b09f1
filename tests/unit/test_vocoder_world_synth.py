"""The batched WORLD synthesizer against pyworld's own (`world.synthesizer: batched | pyworld`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tmt.config import ConfigError
from tmt.core.audio import SAMPLE_RATE
from tmt.vocoder import resolve_config
from tmt.vocoder.world import decode_features, synthesize_features
from tmt.vocoder.world_synth import DEFAULT_F0, gaussian_noise, pulse_train, synthesize, world_noise

pw = pytest.importorskip("pyworld")
torch.set_num_threads(1)
FS = SAMPLE_RATE


def envelope(frames: int, fft: int = 1024, formants: tuple[float, ...] = (700.0, 1200.0, 2600.0)) -> np.ndarray:
    """A smooth vowel-like power envelope per frame whose formants drift over time."""
    hz = np.arange(fft // 2 + 1) * FS / fft
    drift = np.linspace(0.8, 1.2, frames)[:, None]
    sp = 1e-6 + sum(np.exp(-(((hz - f * drift) / 200.0) ** 2)) for f in formants) * 1e-2
    return np.ascontiguousarray(sp * np.exp(-hz / 4000.0))


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))


def test_pulse_train_follows_f0_and_runs_at_500_hz_where_unvoiced() -> None:
    f0 = np.r_[np.full(40, 100.0), np.zeros(40)]  # 0.2 s voiced at 100 Hz, then 0.2 s unvoiced
    idx, shift, vuv = pulse_train(f0, FS, 5.0, 6400, 1024)
    voiced = idx[vuv == 1.0]
    unvoiced = idx[vuv == 0.0]
    assert np.allclose(np.diff(voiced)[1:-1], FS / 100.0, atol=1)
    assert np.allclose(np.diff(unvoiced)[2:], FS / DEFAULT_F0, atol=1)
    assert ((shift >= 0) & (shift < 1.0 / FS)).all()


@pytest.mark.parametrize("f0_hz", [(120.0, 120.0), (90.0, 260.0)])
def test_voiced_speech_matches_pyworld(f0_hz: tuple[float, float]) -> None:
    """Fully voiced and (almost) periodic: the responses are deterministic, so the waveforms must agree."""
    frames = 120
    f0 = np.linspace(*f0_hz, frames)
    sp, ap = envelope(frames), np.full((frames, 513), 0.001)
    ref = pw.synthesize(f0, sp, ap, FS, 5.0)
    out = synthesize(f0, sp, ap, FS, 5.0)
    assert out.shape == ref.shape
    assert snr_db(ref, out) > 40.0


def test_noise_has_pyworlds_level_and_spectrum_and_is_deterministic() -> None:
    frames = 200
    f0 = np.r_[np.full(100, 150.0), np.zeros(100)]  # voiced with half-aperiodic bands, then unvoiced
    sp, ap = envelope(frames), np.full((frames, 513), 0.5)
    ref, out = pw.synthesize(f0, sp, ap, FS, 5.0), synthesize(f0, sp, ap, FS, 5.0)

    def band_db(x: np.ndarray) -> np.ndarray:
        spec = np.abs(np.fft.rfft(x[: len(x) // 512 * 512].reshape(-1, 512) * np.hanning(512), axis=1)) ** 2
        return 10 * np.log10(spec.mean(axis=0)[:256].reshape(8, 32).mean(axis=1))

    for part in (slice(0, 8000), slice(8000, 16000)):
        assert np.abs(band_db(ref[part]) - band_db(out[part])).max() < 2.0
    again, other = synthesize(f0, sp, ap, FS, 5.0), synthesize(f0, sp, ap, FS, 5.0, noise=gaussian_noise(1))
    assert np.array_equal(out, again)
    assert not np.array_equal(out, other)
    for part in (slice(0, 8000), slice(8000, 16000)):  # another realisation, the same level and spectrum
        assert np.abs(band_db(ref[part]) - band_db(other[part])).max() < 2.0


def test_features_synthesise_with_either_synthesizer_and_a_bad_name_is_refused() -> None:
    frames = 60
    f0 = np.full(frames, 140.0)
    env = pw.code_spectral_envelope(envelope(frames), FS, 40)
    bap = np.full((frames, 1), -60.0)
    a = synthesize_features(f0, env, bap, 5.0, 4800, synthesizer="batched")
    b = synthesize_features(f0, env, bap, 5.0, 4800, synthesizer="pyworld")
    assert a.shape == b.shape == (4800,) and a.dtype == np.float32
    assert snr_db(b.astype(np.float64), a.astype(np.float64)) > 80.0  # WORLD's own noise: pyworld's waveform
    c = synthesize_features(f0, env, bap, 5.0, 4800, synthesizer="batched", noise_seed=3)
    assert not np.allclose(a, c) and abs(float(np.std(c)) / float(np.std(a)) - 1.0) < 0.05
    with pytest.raises(ConfigError, match=r"world\.synthesizer"):
        resolve_config("unit-world", overrides=["world.synthesizer=fast"])


def test_matrix_decoding_equals_pyworlds_decoders() -> None:
    rng = np.random.default_rng(0)
    env = rng.normal(size=(30, 40))
    env[:, 0] -= 20.0
    bap = np.minimum(rng.normal(-10.0, 8.0, size=(30, 1)), 0.0)
    bap[:3] = -0.2  # WORLD leaves frames whose bands average above -0.5 dB fully aperiodic
    sp, ap = decode_features(env, bap, 1024)
    assert np.allclose(np.log(sp), np.log(pw.decode_spectral_envelope(np.ascontiguousarray(env), FS, 1024)), atol=1e-4)
    assert np.allclose(ap, pw.decode_aperiodicity(np.ascontiguousarray(bap), FS, 1024), rtol=1e-5)
    assert (ap[:3] > 0.999).all()


class WorldNoise:
    """WORLD's own noise source (matlabfunctions.cpp `randn`: xorshift128, 12 uniforms summed), reseeded as
    `Synthesis` reseeds it: fed this, the batched synthesizer must give pyworld's waveform itself."""

    def __init__(self) -> None:
        self.x, self.y, self.z, self.w = 123456789, 362436069, 521288629, 88675123

    def _next(self) -> int:
        t = (self.x ^ (self.x << 11)) & 0xFFFFFFFF
        self.x, self.y, self.z = self.y, self.z, self.w
        self.w = ((self.w ^ (self.w >> 19)) ^ (t ^ (t >> 8))) & 0xFFFFFFFF
        return self.w

    def __call__(self, n: int) -> np.ndarray:
        return np.array([sum(self._next() >> 4 for _ in range(12)) / 268435456.0 - 6.0 for _ in range(n)])


def test_with_worlds_noise_the_waveform_is_pyworlds() -> None:
    """The whole algorithm, noise path included: voiced, unvoiced and partly aperiodic frames."""
    frames = 100
    f0 = np.r_[np.linspace(110.0, 180.0, 60), np.zeros(40)]
    sp = envelope(frames)
    ap = np.clip(np.linspace(0.05, 0.9, 513)[None, :] * np.linspace(0.5, 1.0, frames)[:, None], 0.0, 1.0)
    ref = pw.synthesize(f0, sp, ap, FS, 5.0)
    out = synthesize(f0, sp, ap, FS, 5.0)  # WORLD's own noise sequence by default
    assert snr_db(ref, out) > 80.0
    assert snr_db(ref, synthesize(f0, sp, ap, FS, 5.0, noise=WorldNoise())) > 80.0


def test_world_noise_lanes_equal_the_sequential_generator() -> None:
    """The vectorised generator (2048 lanes started by GF(2) jumps) against WORLD's one-by-one loop."""
    n = 7000  # 84000 outputs; the cache holds >= 65536 normals (lanes of >= 384 steps): ~200 lane boundaries
    draw = world_noise()
    got = np.concatenate([draw(5), draw(n - 5)])
    assert np.array_equal(got, WorldNoise()(n))
    assert np.array_equal(world_noise()(n), got)  # every utterance starts the sequence afresh
