"""The tokenizer protocol: what every modality tokenizer offers, typed per modality.

Concrete tokenizers live in `tmt.tokenizers` (speech k-means, image VQ, text word pieces);
code that only uses them (the encode driver, the translator, back-translation) is typed with
these protocols, so a type checker follows a wav path from `tmt translate` into
`SpeechTokenizerLike.encode`. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from tmt.core.errors import TmtError

AudioInput: TypeAlias = "str | Path | np.ndarray | tuple[np.ndarray, int]"
"""A speech input: an audio file path, a 16 kHz mono waveform, or a (waveform, sample rate) pair."""
ImageInput: TypeAlias = "str | Path | np.ndarray | Any"
"""An image input: an image file path, an HxWx3 uint8 array, or a PIL image."""


class TokenizerError(TmtError):
    """A tokenizer card, asset or input is invalid."""


@runtime_checkable
class Tokenizer(Protocol):
    """What every modality tokenizer offers."""

    modality: str
    """"text", "speech" or "image"."""
    name: str
    """Short name, e.g. `speech-mfcc-km200` (from the card)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """sha256 over the card and the assets (centroids, codebook, vocabulary, weights)."""
        ...

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Inputs (paths, arrays or strings) -> one int array of tokenizer-local ids per input."""
        ...

    def decode(self, tokens: Sequence[np.ndarray]) -> list[Any]:
        """Tokens -> media (text strings, images, ...) where the modality has a detokenizer."""
        ...

    def save(self, directory: str | Path) -> None: ...


@runtime_checkable
class TextTokenizerLike(Tokenizer, Protocol):
    """A text tokenizer: strings in, strings out."""

    def encode(self, batch: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, tokens: Sequence[np.ndarray]) -> list[str]: ...


@runtime_checkable
class SpeechTokenizerLike(Tokenizer, Protocol):
    """A speech tokenizer: audio paths or waveforms in, unit sequences out (decoding needs a vocoder)."""

    def encode(self, batch: Sequence[AudioInput]) -> list[np.ndarray]: ...


@runtime_checkable
class ImageTokenizerLike(Tokenizer, Protocol):
    """An image tokenizer: image paths, arrays or PIL images in, images out."""

    @property
    def tokens_per_image(self) -> int: ...

    def encode(self, batch: Sequence[ImageInput]) -> list[np.ndarray]: ...


__all__ = [
    "AudioInput",
    "ImageInput",
    "ImageTokenizerLike",
    "SpeechTokenizerLike",
    "TextTokenizerLike",
    "Tokenizer",
    "TokenizerError",
]
