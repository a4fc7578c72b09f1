"""`Translation`: one translated input with its media in the target modality, and
how it is written to a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmt.generation.generator import Hypothesis


@dataclass
class Translation:
    """One translated input, with its media in the target modality."""

    id: str
    """Input id (file stem, manifest id, or `input-N`)."""
    src: str
    """Source modality."""
    tgt: str
    """Target modality."""
    tokens: np.ndarray
    """Output tokens (the target tokenizer's own ids)."""
    score: float
    """Length-normalised log-probability of the output under the model."""
    via: str | None = None
    """Pivot modality of a cascade (src -> via -> tgt), else None."""
    text: str | None = None
    """Text target: the detokenized string."""
    image: Any = None
    """Image target: a PIL image (VQ decoder)."""
    waveform: np.ndarray | None = None
    """Speech target with a vocoder: float32 samples."""
    sample_rate: int | None = None
    """Sample rate of `waveform`."""
    pivot: Translation | None = None
    """The intermediate result of a cascade."""
    nbest: list[Hypothesis] = field(default_factory=list)
    """All kept hypotheses (best first)."""
    pieces: list[Translation] = field(default_factory=list)
    """A long input translated in pieces: each piece's result, in order (empty otherwise)."""

    @property
    def units(self) -> np.ndarray | None:
        """Speech target: the unit sequence (what the vocoder reads)."""
        return self.tokens if self.tgt == "speech" else None

    def output_name(self) -> str:
        """File name this result is written under (`<id>.png`, `<id>.wav`, `<id>.units.txt`)."""
        stem = self.id.replace("/", "_").replace("\\", "_")
        if self.tgt == "image":
            return f"{stem}.png"
        if self.tgt == "speech":
            return f"{stem}.wav" if self.waveform is not None else f"{stem}.units.txt"
        return f"{stem}.txt"

    def save(self, path: str | Path) -> Path:
        """Write the media atomically: text -> utf-8 line, image -> PNG/JPEG, speech -> WAV
        (or the units as text when no vocoder was given). Returns the path written."""
        from tmt.core.io import atomic_open, atomic_write_text

        p = Path(path)
        if self.tgt == "text":
            atomic_write_text(p, (self.text or "") + "\n")
        elif self.tgt == "image":
            fmt = "JPEG" if p.suffix.lower() in (".jpg", ".jpeg") else "PNG"
            with atomic_open(p, "wb") as f:
                self.image.save(f, format=fmt)
        elif self.waveform is not None:
            import soundfile as sf

            with atomic_open(p, "wb") as f:
                sf.write(f, self.waveform, int(self.sample_rate or 16000), format="WAV", subtype="PCM_16")
        else:
            atomic_write_text(p, " ".join(str(int(u)) for u in self.tokens) + "\n")
        return p

    def hypothesis(self) -> str:
        """A one-line rendering: the text, or the tokens separated by spaces."""
        if self.text is not None:
            return self.text
        return " ".join(str(int(t)) for t in self.tokens)


def _units_path(path: Path) -> Path:
    name = path.name
    for ext in (".wav", ".flac", ".units.txt", ".txt"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return path.with_name(name + ".units.txt")
