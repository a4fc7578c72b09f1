"""Turning one HTTP request into a checked translation input, and results back into JSON.

Every problem a client can cause raises `RequestError` with an HTTP status and a one-line
message; the app answers it as `{"error": "..."}`. Uploads are decoded in memory (nothing is
written to disk): speech becomes a `(waveform, sample_rate)` pair, images a PIL image, both of
which `Translator.translate` accepts as they are.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tmt import MODALITIES, TmtError
from tmt.serve.config import STRATEGIES, DecodeOptions, ServeConfig

# file signatures (magic bytes) -> (kind, modality); the file name's extension is not trusted
SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"RIFF", 0, "wav", "speech"),  # plus b"WAVE" at offset 8, checked below
    (b"fLaC", 0, "flac", "speech"),
    (b"\x89PNG\r\n\x1a\n", 0, "png", "image"),
    (b"\xff\xd8\xff", 0, "jpeg", "image"),
)


class RequestError(TmtError):
    """A bad request: answered with `status` and `{"error": message}`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Source:
    """A checked input: its modality, what the Translator receives, and a short description."""

    modality: str
    """text, speech or image."""
    value: Any
    """A string, a (float32 waveform, sample rate) pair, or an RGB PIL image."""
    describe: str
    """For logs: `text (12 chars)`, `speech (1.8 s)`, `image (64x64)`."""


def sniff(data: bytes) -> tuple[str, str] | None:
    """(kind, modality) of an upload from its first bytes, or None for an unsupported type."""
    for magic, offset, kind, modality in SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            if kind == "wav" and data[8:12] != b"WAVE":
                return None
            return kind, modality
    return None


def check_modality(value: str | None, what: str, available: tuple[str, ...]) -> str | None:
    """Validate a modality name given by a client (None passes)."""
    if value is None:
        return None
    v = value.strip().lower()
    if v not in MODALITIES:
        raise RequestError(f"unknown {what} modality '{value}'; expected one of {', '.join(MODALITIES)}")
    if v not in available:
        raise RequestError(f"this model cannot handle {v} (no {v} tokenizer); available: {', '.join(available)}")
    return v


def read_text(text: str, cfg: ServeConfig) -> Source:
    t = text.strip()
    if not t:
        raise RequestError("the text is empty; type something to translate")
    if len(t) > cfg.max_text_chars:
        raise RequestError(f"the text has {len(t)} characters; the limit is {cfg.max_text_chars}", 413)
    if t.lower().endswith(".txt"):
        # the Translator reads a string that names an existing .txt file; a client's text must
        # never be taken for a path on the server (tokenizers ignore the trailing space)
        t = t + " "
    return Source("text", t, f"text ({len(t.strip())} chars)")


def read_upload(data: bytes, filename: str, cfg: ServeConfig) -> Source:
    """Decode an uploaded wav/flac/png/jpg, enforcing the duration and pixel limits."""
    name = filename or "upload"
    if not data:
        raise RequestError(f"{name}: the file is empty")
    if len(data) > cfg.max_upload_bytes:
        raise RequestError(f"{name}: {len(data)} bytes; the limit is {cfg.max_upload_bytes}", 413)
    found = sniff(data)
    if found is None:
        raise RequestError(
            f"{name}: unsupported file type; upload wav/flac (speech) or png/jpg (image), or send text", 415
        )
    kind, modality = found
    if modality == "speech":
        return _read_audio(data, name, kind, cfg)
    return _read_image(data, name, kind, cfg)


def _read_audio(data: bytes, name: str, kind: str, cfg: ServeConfig) -> Source:
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
        seconds = float(info.frames) / float(info.samplerate)
    except Exception as e:
        raise RequestError(f"{name}: corrupt {kind} file ({_short(e)})") from None
    if seconds > cfg.max_audio_seconds:
        raise RequestError(f"{name}: {seconds:.1f} s of audio; the limit is {cfg.max_audio_seconds:g} s", 413)
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise RequestError(f"{name}: corrupt {kind} file ({_short(e)})") from None
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if mono.size == 0 or sr <= 0:
        raise RequestError(f"{name}: the audio has no samples")
    if not np.isfinite(mono).all():
        raise RequestError(f"{name}: the audio holds NaN or infinite samples (corrupt file)")
    return Source("speech", (np.ascontiguousarray(mono, dtype=np.float32), int(sr)), f"speech ({seconds:.2f} s)")


def _read_image(data: bytes, name: str, kind: str, cfg: ServeConfig) -> Source:
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
        w, h = im.size
    except Exception as e:
        raise RequestError(f"{name}: corrupt {kind} file ({_short(e)})") from None
    if w * h > cfg.max_image_pixels:
        raise RequestError(f"{name}: {w}x{h} pixels; the limit is {cfg.max_image_pixels} pixels", 413)
    try:
        im.load()
        rgb = im.convert("RGB")
    except Exception as e:
        raise RequestError(f"{name}: corrupt {kind} file ({_short(e)})") from None
    return Source("image", rgb, f"image ({w}x{h})")


def read_options(cfg: ServeConfig, *, strategy: str | None, beam_size: int | None, temperature: float | None,
                 top_k: int | None, top_p: float | None, seed: int | None) -> DecodeOptions:
    """Validate a request's decoding options."""
    if strategy is not None:
        strategy = strategy.strip().lower() or None
    if strategy is not None and strategy not in STRATEGIES:
        raise RequestError(f"unknown strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")
    if beam_size is not None and not 1 <= beam_size <= cfg.max_beam_size:
        raise RequestError(f"beam_size must be in 1..{cfg.max_beam_size}, got {beam_size}")
    if temperature is not None and not (math.isfinite(temperature) and 0 < temperature <= 10):
        raise RequestError(f"temperature must be in (0, 10], got {temperature}")
    if top_k is not None and not 0 <= top_k <= 100_000:
        raise RequestError(f"top_k must be >= 0, got {top_k}")
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise RequestError(f"top_p must be in (0, 1], got {top_p}")
    return DecodeOptions(strategy=strategy, beam_size=beam_size, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed)


def _short(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# ---- results -> JSON ---------------------------------------------------------------------
def png_data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def wav_data_url(wave: np.ndarray, sample_rate: int) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), int(sample_rate), format="WAV",
             subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render(result: Any) -> dict[str, Any]:
    """A Translation -> JSON fields: text, image (PNG data URL), audio (WAV data URL) or units."""
    out: dict[str, Any] = {
        "src": result.src, "tgt": result.tgt, "via": result.via,
        "score": round(float(result.score), 6), "num_tokens": len(result.tokens),
    }
    if result.tgt == "text":
        out["text"] = result.text or ""
    elif result.tgt == "image":
        out["image"] = png_data_url(result.image)
        out["width"], out["height"] = result.image.size
    elif result.waveform is not None:
        rate = int(result.sample_rate or 16000)
        out["audio"] = wav_data_url(result.waveform, rate)
        out["sample_rate"] = rate
        out["duration_s"] = round(len(result.waveform) / rate, 3)
    else:
        out["units"] = [int(u) for u in result.tokens]
    if result.pivot is not None:
        out["pivot"] = render(result.pivot)
    return out
