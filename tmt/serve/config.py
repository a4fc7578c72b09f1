"""What the server accepts and how it batches: `ServeConfig`, and per-request `DecodeOptions`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

STRATEGIES = ("beam", "greedy", "sample")


@dataclass(kw_only=True)
class ServeConfig:
    """Limits, queueing and batching of `tmt serve`."""

    max_upload_bytes: int = 16 * 2**20
    """Largest request body (the whole multipart form); bigger ones get 413 before they are read."""
    max_audio_seconds: float = 30.0
    """Longest speech upload."""
    max_image_pixels: int = 4096 * 4096
    """Largest image upload (width x height), checked from the header before decoding."""
    max_text_chars: int = 2000
    """Longest text input."""
    timeout_s: float = 60.0
    """A request still waiting for its result after this long gets 504 (queue wait included)."""
    queue_size: int = 64
    """Requests waiting for the model at most; one more gets 503 with Retry-After."""
    max_batch: int = 16
    """Requests of one kind (source, target, pivot, options) decoded together at most."""
    batch_wait_ms: float = 10.0
    """How long the worker waits for more requests of the same kind before decoding a batch."""
    retry_after_s: int = 1
    """The Retry-After a 503 carries."""
    max_beam_size: int = 16
    """Largest beam a request may ask for."""
    cached_translators: int = 8
    """Decoding-option sets kept ready (each shares the model, tokenizers and vocoder)."""

    def check(self) -> None:
        from tmt import TmtError

        for name in ("max_upload_bytes", "max_image_pixels", "max_text_chars", "queue_size", "max_batch",
                     "max_beam_size", "cached_translators"):
            if int(getattr(self, name)) < 1:
                raise TmtError(f"serve config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_audio_seconds", "timeout_s"):
            if float(getattr(self, name)) <= 0:
                raise TmtError(f"serve config: {name} must be > 0, got {getattr(self, name)}")
        if self.batch_wait_ms < 0 or self.retry_after_s < 0:
            raise TmtError("serve config: batch_wait_ms and retry_after_s must be >= 0")

    def public(self) -> dict[str, Any]:
        """The limits a client may want to know (for /api/info)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cached_translators"}


@dataclass(frozen=True, kw_only=True)
class DecodeOptions:
    """Decoding options one request may set; None keeps the server's default. Hashable: requests
    with equal options (and equal source, target and pivot) are batched together."""

    strategy: str | None = None
    """beam, greedy or sample."""
    beam_size: int | None = None
    """Beam width (beam search)."""
    temperature: float | None = None
    """Logit temperature (> 0)."""
    top_k: int | None = None
    """Sampling: keep the k most likely tokens (0: use top_p)."""
    top_p: float | None = None
    """Sampling: nucleus mass in (0, 1]."""
    seed: int | None = None
    """Sampling: random seed."""

    def changes(self) -> dict[str, Any]:
        """The GenerationConfig fields these options override."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def is_default(self) -> bool:
        return not self.changes()
