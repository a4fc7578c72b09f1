"""The voices of a corpus: which speech voices (TTS engine:voice or speaker ids) its rows use.

`tmt vocab build --voices-from` lists them in vocab.json, so speech targets can carry a voice
control token (issue 19 section 2). A row's voice is read by `tmt.vocab.row_voice` from a raw
manifest row or a token store's meta (`voice`, else the scenes corpus' `tts`, else `speaker`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tmt.store import StoreError
from tmt.store.manifest import iter_manifest
from tmt.store.token_store import TokenStore
from tmt.vocab import row_voice


def _rows(path: Path) -> Iterable[dict[str, Any]]:
    if path.is_dir():
        return TokenStore(path).iter_meta()
    if path.is_file():
        return iter_manifest(path)
    raise StoreError(f"voices: {path} is neither a raw manifest nor a token store directory")


def count_voices(paths: Sequence[str | Path]) -> Counter[str]:
    """How many speech rows each voice has, over raw manifests and/or token stores."""
    counts: Counter[str] = Counter()
    for p in paths:
        for row in _rows(Path(p)):
            name = row_voice(row)
            has_speech = row.get("speech") or "speech" in (row.get("modalities") or [])
            if name is not None and has_speech:
                counts[name] += 1
    return counts


def voice_list(counts: Counter[str], default: str | None = None) -> tuple[list[str], str]:
    """(voices sorted by name, the default voice: `default` or the most frequent one)."""
    if not counts:
        raise StoreError(
            "no voices found: the rows name none (a `voice`, `tts` {engine, voice} or `speaker` field "
            "on rows with speech); drop --voices-from to build a vocabulary without voices"
        )
    names = sorted(counts)
    if default is not None and default not in counts:
        raise StoreError(f"--default-voice '{default}' is not among the voices found: {', '.join(names)}")
    best = default or min(names, key=lambda n: (-counts[n], n))
    return names, best
