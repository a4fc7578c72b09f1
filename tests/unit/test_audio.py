"""Audio loading: resampling, channel averaging, clear errors for unusable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tmt.core.audio import (
    SAMPLE_RATE,
    AudioError,
    as_waveform,
    audio_duration,
    load_audio,
    resample,
)


def _sine(sr: int, seconds: float = 1.0, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_16k_mono_is_read_as_is(tmp_path: Path) -> None:
    x = _sine(SAMPLE_RATE)
    sf.write(tmp_path / "a.wav", x, SAMPLE_RATE, subtype="FLOAT")
    y = load_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-6)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_any_rate_is_resampled_to_16k(tmp_path: Path, sr: int) -> None:
    sf.write(tmp_path / "a.flac", _sine(sr, 1.5), sr)
    y = load_audio(tmp_path / "a.flac")
    assert abs(len(y) - int(1.5 * SAMPLE_RATE)) <= 1
    # the 440 Hz tone survives resampling: compare with a 16 kHz sine, away from the edges
    ref = _sine(SAMPLE_RATE, 1.5)
    np.testing.assert_allclose(y[1000:-1000], ref[1000 : len(y) - 1000], atol=2e-2)
    assert audio_duration(tmp_path / "a.flac") == pytest.approx(1.5)


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left, right = _sine(SAMPLE_RATE, f=300.0), _sine(SAMPLE_RATE, f=500.0)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    y = load_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)
    # arrays with a rate go the same way
    z, _ = as_waveform((np.stack([left, right]), SAMPLE_RATE))
    np.testing.assert_allclose(z, y, atol=1e-6)


def test_resample_identity() -> None:
    x = _sine(SAMPLE_RATE)
    assert resample(x, SAMPLE_RATE) is x


@pytest.mark.parametrize(
    ("name", "make", "msg"),
    [
        ("missing.wav", None, "not found"),
        ("empty.wav", lambda p: sf.write(p, np.zeros(0, np.float32), SAMPLE_RATE), "empty"),
        ("zero-bytes.wav", lambda p: p.write_bytes(b""), "empty file"),
        ("silent.wav", lambda p: sf.write(p, np.zeros(16000, np.float32), SAMPLE_RATE), "silent"),
        ("short.wav", lambda p: sf.write(p, _sine(SAMPLE_RATE)[:100], SAMPLE_RATE), "too short"),
        ("corrupt.wav", lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200))), "corrupt"),
        ("notes.txt", lambda p: p.write_text("a red circle above a blue square\n" * 20), "not an audio file"),
    ],
)
def test_unusable_files_name_the_file(tmp_path: Path, name: str, make, msg: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / name
    if make is not None:
        make(p)
    with pytest.raises(AudioError, match=msg) as e:
        load_audio(p)
    assert name in str(e.value)


def test_bad_arrays() -> None:
    with pytest.raises(AudioError, match="NaN"):
        as_waveform(np.full(1000, np.nan, np.float32))
    with pytest.raises(AudioError, match="expected an audio path"):
        as_waveform(123)
