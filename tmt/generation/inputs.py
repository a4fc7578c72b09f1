"""The inputs of `Translator`: the modality of a path or Python object, text files
read as text, and the ids given to inputs that have none."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.errors import TmtError
from tmt.core.modality import check_modality as core_check_modality

SPEECH_EXTS = (".wav", ".flac")


IMAGE_EXTS = (".png", ".jpg", ".jpeg")


TEXT_EXTS = (".txt",)


class TranslateError(TmtError):
    """Bad translation input or setup (unknown modality, missing file, no tokenizer)."""


def modality_of_path(path: str | Path) -> str | None:
    """Source modality from a file extension (None when the extension is not known)."""
    ext = Path(path).suffix.lower()
    if ext in SPEECH_EXTS:
        return "speech"
    if ext in IMAGE_EXTS:
        return "image"
    if ext in TEXT_EXTS:
        return "text"
    return None


def infer_modality(item: Any) -> str:
    """The modality of one Python input: PIL image -> image, waveform array -> speech,
    a path with a known extension -> by extension, any other string -> text."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return "image"
    if isinstance(item, np.ndarray) or (isinstance(item, tuple) and len(item) == 2):
        return "speech"
    if isinstance(item, Path):
        m = modality_of_path(item)
        if m is None:
            raise TranslateError(
                f"{item}: cannot tell the modality from the extension '{item.suffix}'; "
                f"use wav/flac (speech), png/jpg (image) or txt (text), or give src="
            )
        return m
    if isinstance(item, str):
        m = modality_of_path(item) if "\n" not in item and len(item) < 4096 else None
        if m is not None and (m != "text" or Path(item).is_file()):
            return m
        return "text"
    raise TranslateError(f"cannot translate a {type(item).__name__}; give a path, a string, an image or a waveform")


def check_modality(m: str, what: str) -> None:
    core_check_modality(m, f"{what} modality", error=TranslateError)


def _read_text_input(x: Any) -> Any:
    """A text input: a `.txt` path (Path, or an existing file named *.txt) is read, else as is."""
    if isinstance(x, Path) or (isinstance(x, str) and x.lower().endswith(".txt") and Path(x).is_file()):
        try:
            return Path(x).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise TranslateError(f"cannot read text file {x}: {e}") from None
    return x


def _default_ids(inputs: Sequence[Any]) -> list[str]:
    ids: list[str] = []
    seen: dict[str, int] = {}
    for i, x in enumerate(inputs):
        if isinstance(x, Path) or (isinstance(x, str) and modality_of_path(x) and Path(x).is_file()):
            base = Path(x).stem
        else:
            base = f"input-{i + 1:04d}"
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.append(base if n == 0 else f"{base}-{n}")
    return ids
