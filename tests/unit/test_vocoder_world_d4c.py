"""The batched D4C aperiodicity (tmt.vocoder.world_d4c) against pyworld's own D4C and coding."""

from __future__ import annotations

import numpy as np
import pytest

from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.vocoder.config import WorldConfig
from tmt.vocoder.world_d4c import coded_aperiodicity, num_bands
from tmt.vocoder.world_random import world_randn

pw = pytest.importorskip("pyworld")

FS = SAMPLE_RATE
UNANALYSED = 20 * np.log10(1.0 - 1e-12)
"""pyworld's coded value of a frame D4C leaves fully aperiodic (unvoiced, or failing the voicing check)."""
TOLERANCE_DB = 1e-6


def _harmonic(f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a per-sample F0 contour under a three-formant envelope, plus a little noise."""
    phase = 2 * np.pi * np.cumsum(f0) / FS
    out = np.zeros(len(f0))
    for h in range(1, 40):
        hz = h * f0
        gain = sum(1.0 / (1.0 + ((hz - fc) / bw) ** 2) for fc, bw in ((700, 130), (1200, 150), (2600, 250)))
        out += np.where(hz < FS / 2, gain * np.sin(h * phase), 0.0)
    return 0.3 * out / np.abs(out).max() + 0.002 * rng.standard_normal(len(f0))


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = FS  # 1 s each
    glide = 95.0 + 80.0 * np.linspace(0.0, 1.0, n) ** 2
    vuv = _harmonic(np.full(n, 140.0), rng)
    vuv[n // 3 : 2 * n // 3] = 0.03 * rng.standard_normal(2 * n // 3 - n // 3)  # abrupt unvoiced middle
    vuv[2 * n // 3 :] = _harmonic(np.full(n - 2 * n // 3, 210.0), rng)  # and back, at another pitch
    return {"harmonic": _harmonic(glide, rng), "voiced-unvoiced-voiced": vuv,
            "silence": np.zeros(n), "white noise": 0.1 * rng.standard_normal(n)}


def _prepare(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As `analyse` prepares it: the fixed whisper of noise, F0 by dio + stonemask."""
    cfg = WorldConfig()
    x = wav + 1e-5 * np.random.default_rng(0).standard_normal(len(wav))
    f0, t = pw.dio(x, FS, f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil, frame_period=cfg.frame_period)
    return x, pw.stonemask(x, f0, t, FS), t


def _compare(x: np.ndarray, f0: np.ndarray, t: np.ndarray, fs: int = FS, threshold: float = 0.85) -> np.ndarray:
    """Asserts the batched result equals pyworld's; returns pyworld's coded bands."""
    want = pw.code_aperiodicity(pw.d4c(x, f0, t, fs, threshold=threshold), fs)
    got = coded_aperiodicity(x, f0, t, fs, threshold=threshold)
    assert got.shape == want.shape == (len(f0), num_bands(fs))
    np.testing.assert_array_equal(got == UNANALYSED, want == UNANALYSED)  # the same voicing decisions
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite)
    assert np.abs(got - want)[finite].max() <= TOLERANCE_DB
    return want


def test_world_randn_is_worlds_generator() -> None:
    """WORLD's randn: xorshift128 from its fixed seed, 12 28-bit uniforms summed, minus 6."""
    x, y, z, w = 123456789, 362436069, 521288629, 88675123
    want = []
    for _ in range(50):
        total = 0
        for _ in range(12):
            t = (x ^ (x << 11)) & 0xFFFFFFFF
            x, y, z = y, z, w
            w = (w ^ (w >> 19)) ^ (t ^ (t >> 8))
            total += w >> 4
        want.append(total / 268435456.0 - 6.0)
    np.testing.assert_array_equal(world_randn(50), want)
    assert len(world_randn(300_000)) == 300_000  # lanes of the generator meet without gaps
    np.testing.assert_array_equal(world_randn(300_000)[:50], want)


@pytest.mark.parametrize("name", list(_signals()))
def test_matches_pyworld_with_dio_f0(name: str) -> None:
    x, f0, t = _prepare(_signals()[name])
    want = _compare(x, f0, t)
    if name not in ("silence", "white noise"):  # most voiced frames analysed
        assert (want[f0 > 0] != UNANALYSED).sum() > 50


def test_matches_pyworld_where_only_the_safeguard_noise_decides() -> None:
    """Forced F0 over silence and noise, every voiced frame analysed (threshold 0) or checked: the result
    then hangs on WORLD's own noise sequence, and on the F0 floors (20 Hz) and very high F0."""
    rng = np.random.default_rng(3)
    t = np.arange(201) * 0.005
    f0 = np.where(np.arange(201) % 7 == 0, 0.0, np.geomspace(20.0, 1200.0, 201))
    for wav in (np.zeros(FS), 1e-5 * rng.standard_normal(FS), 0.1 * rng.standard_normal(FS)):
        for threshold in (0.0, 0.85):
            rejected = (_compare(wav, f0, t, threshold=threshold)[:, 0] == UNANALYSED)[f0 > 0]
            assert rejected.mean() > 0.9 if threshold else not rejected.any()


def test_voicing_decisions_follow_the_threshold() -> None:
    x, f0, t = _prepare(_signals()["voiced-unvoiced-voiced"])
    rejected = []
    for threshold in (0.0, 0.85, 0.999):
        want = _compare(x, f0, t, threshold=threshold)
        rejected.append(int(((want[:, 0] == UNANALYSED) & (f0 > 0)).sum()))
    assert rejected[0] == 0 < rejected[1] < rejected[2]


@pytest.mark.parametrize("fs", [22050, 48000])
def test_matches_pyworld_at_other_rates(fs: int) -> None:
    """Several bands, FFT sizes of 4096, coded frequencies between bins."""
    n = fs
    rng = np.random.default_rng(5)
    f0_samples = 120.0 + 40.0 * np.sin(2 * np.pi * np.arange(n) / n)
    wav = 0.1 * sum(np.sin(h * 2 * np.pi * np.cumsum(f0_samples) / fs) / h for h in range(1, 25))
    x = wav + 0.003 * rng.standard_normal(n)
    f0, t = pw.dio(x, fs, f0_floor=60.0, f0_ceil=500.0)
    _compare(x, pw.stonemask(x, f0, t, fs), t, fs)


def test_no_voiced_frames() -> None:
    t = np.arange(11) * 0.005
    got = coded_aperiodicity(np.zeros(800), np.zeros(11), t, FS)
    np.testing.assert_array_equal(got, np.full((11, 1), UNANALYSED))


def test_analyse_equals_the_pyworld_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from tmt.vocoder import world

    wav = _signals()["voiced-unvoiced-voiced"].astype(np.float32)
    cfg = WorldConfig()
    frames = len(wav) // FRAME_HOP
    got = world.analyse(wav, frames, cfg)
    monkeypatch.setattr(world, "coded_aperiodicity",
                        lambda x, f0, t, fs: pw.code_aperiodicity(pw.d4c(x, f0, t, fs), fs))
    want = world.analyse(wav, frames, cfg)
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got[:, :-1], want[:, :-1])
    np.testing.assert_allclose(got[:, -1], want[:, -1], rtol=0, atol=1e-5)  # float32 of <= 1e-6 dB apart
    assert (want[:, -1] < -1.0).sum() > 50
