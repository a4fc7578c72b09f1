"""The on-disk layout every tokenizer shares (the protocol itself is `tmt.core.tokenizer`).

A fitted tokenizer is a directory::

    tokenizer.json   {"kind": "speech"|"image"|"text", "class": "<registry name>",
                      "name": str, "card": {...}, "vocab_size": int, "fingerprint": str, ...}
    <assets>         centroids.safetensors, vq.safetensors, vocab.txt, ... (class-specific)

`load_tokenizer(dir)` reads `tokenizer.json` and dispatches to the registered
class. Cards (`tokenizers/*.yaml`) name the class and its settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tmt.core.io import read_json_object, read_yaml_object
from tmt.core.tokenizer import Tokenizer as Tokenizer  # re-exported: the protocol moved to tmt.core
from tmt.core.tokenizer import TokenizerError as TokenizerError


def _speech_kmeans() -> type:
    from tmt.tokenizers.speech import SpeechTokenizer

    return SpeechTokenizer


def _image_vq() -> type:
    from tmt.tokenizers.image import ImageTokenizer

    return ImageTokenizer


def _image_aligned() -> type:
    from tmt.tokenizers.image_aligned import AlignedImageTokenizer

    return AlignedImageTokenizer


def _text_wordpiece() -> type:
    from tmt.tokenizers.text import WordPieceTokenizer

    return WordPieceTokenizer


def _text_sentencepiece() -> type:
    from tmt.tokenizers.text import SentencePieceTokenizer

    return SentencePieceTokenizer


# The class name written in tokenizer.json and cards -> a function returning the class. The
# imports are lazy (inside the functions) so that loading a text tokenizer never imports torch
# or the speech stack; they are plain imports, so tools and mypy can follow them.
REGISTRY: dict[str, Callable[[], type]] = {
    "speech-kmeans": _speech_kmeans,
    "image-vq": _image_vq,
    "image-aligned": _image_aligned,
    "text-wordpiece": _text_wordpiece,
    "text-sentencepiece": _text_sentencepiece,
}


def resolve_class(name: str) -> Any:
    """The tokenizer class registered under `name` (the `class` of a card or tokenizer.json)."""
    if name not in REGISTRY:
        raise TokenizerError(f"unknown tokenizer class '{name}'; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]()


def read_tokenizer_json(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    p = d / "tokenizer.json"
    if not p.is_file():
        raise TokenizerError(f"{d} is not a fitted tokenizer (no tokenizer.json); fit one with `tmt tokenize ... fit`")
    return read_json_object(p, what="tokenizer description", error=TokenizerError,
                            required={"kind": str, "class": str, "vocab_size": int, "fingerprint": str},
                            fix="refit the tokenizer with `tmt tokenize ... fit`")


def load_tokenizer(directory: str | Path, **kwargs: Any) -> Tokenizer:
    """Load any fitted tokenizer directory."""
    info = read_tokenizer_json(directory)
    cls = resolve_class(info["class"])
    tok: Tokenizer = cls.load(directory, **kwargs)
    return tok


def load_card(path: str | Path) -> dict[str, Any]:
    """Read a tokenizer card (YAML) and check it names a known class."""
    p = Path(path)
    if not p.is_file():
        raise TokenizerError(f"tokenizer card not found: {p} (cards live in tokenizers/*.yaml)")
    card = read_yaml_object(p, what="tokenizer card", error=TokenizerError, required={"class": str}, empty_ok=False,
                            fix=f"a card is a mapping with a 'class' key (one of {', '.join(REGISTRY)})")
    if card["class"] not in REGISTRY:
        raise TokenizerError(f"card {p}: unknown class '{card['class']}'; known: {', '.join(REGISTRY)}")
    card.setdefault("name", p.stem)
    return card


def fingerprint_of(card: dict[str, Any], asset_files: Iterable[str | Path] = (), asset_bytes: Iterable[bytes] = ()) -> str:
    """sha256 over the canonical JSON of the card, then each asset's bytes (in the order given)."""
    h = hashlib.sha256()
    h.update(json.dumps(card, sort_keys=True, separators=(",", ":"), default=str).encode())
    for f in asset_files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    for b in asset_bytes:
        h.update(b)
    return h.hexdigest()


def tokenizer_info(tok: Any, path: str | Path | None = None) -> Any:
    """The vocab.TokenizerInfo describing a loaded tokenizer."""
    from tmt.vocab import TokenizerInfo

    return TokenizerInfo(
        name=tok.name, size=int(tok.vocab_size), fingerprint=tok.fingerprint,
        card=dict(getattr(tok, "card", {}) or {}), path=str(path) if path else None,
    )


ProgressFn = Callable[[int], None]
