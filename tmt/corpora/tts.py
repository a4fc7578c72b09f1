"""Speech synthesis for the embedded corpus: espeak-ng and flite voices, 16 kHz mono 16-bit wav.

Both engines are external programs (Debian packages `espeak-ng` and `flite`),
run once per utterance into a temporary file. Their output is read with
soundfile, resampled to 16 kHz with `scipy.signal.resample_poly` where the
engine's rate differs (espeak-ng speaks at 22.05 kHz), and written as
PCM-16 wav. Same text and settings give the same bytes: both engines and the
resampler are deterministic.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tmt import TmtError
from tmt.core.io import atomic_write_bytes

SAMPLE_RATE = 16000
"""Sample rate of every wav the scenes corpus writes."""

ENGINES: tuple[str, ...] = ("espeak-ng", "flite")

# Accent x variant combinations that sound distinct with espeak-ng 1.51
# (`en` is British English; `en-gb+<variant>` silently ignores the variant,
# so it is not used).
ESPEAK_VOICES: tuple[str, ...] = (
    "en-us+m3",
    "en-us+f2",
    "en+m1",
    "en+f3",
    "en-029+m2",
    "en-gb-scotland+m4",
    "en-gb-x-rp+f4",
    "en-gb-x-gbclan+m5",
    "en-us+f5",
    "en-gb-x-gbcwmd+m7",
    "en-us-nyc+m6",
    "en-gb-x-rp+f1",
)
FLITE_VOICES: tuple[str, ...] = ("slt", "awb", "rms", "kal16")

ESPEAK_RATE = (140, 190)
"""espeak-ng speaking rate range, words per minute."""
ESPEAK_PITCH = (30, 70)
"""espeak-ng pitch range (0-99)."""
FLITE_STRETCH = (0.9, 1.15)
"""flite `duration_stretch` range (>1 is slower)."""

APT_HINT = "install them with `sudo apt-get install espeak-ng flite`"


class TtsError(TmtError):
    """Speech synthesis failed or no engine is installed."""


@dataclass(frozen=True)
class Voice:
    """One synthesis setting: engine, voice name, rate and pitch."""

    engine: str
    voice: str
    rate: float | None = None
    pitch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "voice": self.voice, "rate": self.rate, "pitch": self.pitch}


def engine_program(engine: str) -> str | None:
    """Path of the engine's program, or None when it is not installed."""
    if engine not in ENGINES:
        raise TtsError(f"unknown speech engine '{engine}'; choose from {', '.join(ENGINES)}")
    return shutil.which(engine)


def available_engines(requested: Sequence[str] = ENGINES) -> list[str]:
    """The requested engines that are installed; an error naming the packages if none is."""
    found = [e for e in requested if engine_program(e)]
    if not found:
        raise TtsError(
            f"no speech synthesis engine found (looked for {', '.join(requested)} on PATH); "
            f"{APT_HINT}, or prepare without speech (--no-speech)"
        )
    return found


def voice_names(engines: Sequence[str]) -> list[tuple[str, str]]:
    """All (engine, voice) pairs of the given engines, in a fixed order."""
    out: list[tuple[str, str]] = []
    for e in engines:
        names = ESPEAK_VOICES if e == "espeak-ng" else FLITE_VOICES
        out.extend((e, v) for v in names)
    return out


def sample_voice(rng: np.random.Generator, pool: Sequence[tuple[str, str]]) -> Voice:
    """Draw one voice from `pool` with a random rate (and pitch for espeak-ng)."""
    engine, name = pool[int(rng.integers(len(pool)))]
    if engine == "espeak-ng":
        rate = int(rng.integers(ESPEAK_RATE[0], ESPEAK_RATE[1] + 1))
        pitch = int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1))
        return Voice(engine, name, float(rate), pitch)
    stretch = round(float(rng.uniform(*FLITE_STRETCH)), 2)
    return Voice(engine, name, stretch, None)


def resample(wave: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float waveform with a polyphase anti-aliasing filter.

    scipy's `resample_poly` rather than torchaudio: it is exact integer-ratio
    polyphase filtering in plain C (same bytes on any thread count), and it
    spares each synthesis worker the torch import (seconds on a busy machine).
    """
    if orig_sr == new_sr:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(orig_sr, new_sr)
    return resample_poly(np.asarray(wave, dtype=np.float64), new_sr // g, orig_sr // g).astype(np.float32)


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    except OSError as e:
        raise TtsError(f"{what}: cannot run {cmd[0]} ({e}); {APT_HINT}") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TtsError(f"{what}: {cmd[0]} failed (exit {proc.returncode}): {msg[-1] if msg else ''}")


def synthesize(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """Speak `text`; returns (float32 mono waveform, engine sample rate)."""
    import soundfile as sf

    if not text.strip():
        raise TtsError("cannot synthesise empty text")
    prog = engine_program(voice.engine)
    if prog is None:
        raise TtsError(f"{voice.engine} is not installed; {APT_HINT}")
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix="tmt-tts-")
    os.close(fd)
    try:
        if voice.engine == "espeak-ng":
            cmd = [prog, "-v", voice.voice, "-w", tmp]
            if voice.rate is not None:
                cmd += ["-s", str(int(voice.rate))]
            if voice.pitch is not None:
                cmd += ["-p", str(int(voice.pitch))]
            cmd.append(text)
        else:
            cmd = [prog, "-voice", voice.voice, "-o", tmp]
            if voice.rate is not None:
                cmd += ["--setf", f"duration_stretch={voice.rate}"]
            cmd += ["-t", text]
        _run(cmd, f"speaking {text!r} with {voice.engine} voice {voice.voice}")
        try:
            wave, sr = sf.read(tmp, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise TtsError(f"{voice.engine} wrote an unreadable wav for {text!r}: {e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    mono = wave.mean(axis=1)
    if mono.size == 0:
        raise TtsError(f"{voice.engine} voice {voice.voice} produced no audio for {text!r}")
    return mono, int(sr)


def wav_bytes(wave: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """Encode a float waveform as a PCM-16 wav file (no timestamps: same samples, same bytes)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def synthesize_to_wav(text: str, voice: Voice, path: str | Path, sample_rate: int = SAMPLE_RATE) -> float:
    """Speak `text` into a 16-bit mono wav at `sample_rate` (atomic write); returns seconds."""
    wave, sr = synthesize(text, voice)
    wave = resample(wave, sr, sample_rate)
    atomic_write_bytes(path, wav_bytes(wave, sample_rate))
    return len(wave) / sample_rate
