"""The joint vocabulary: one id space shared by text, speech and image tokens.

Layout (DESIGN section 3)::

    0..15                      specials: <pad>=0 <unk>=1 <eos>=2 <bos:text>=3
                               <bos:speech>=4 <bos:image>=5, 6..15 reserved
    16 .. 16+T                 text tokens   (the text tokenizer's ids + 16)
    16+T .. 16+T+S             speech units
    16+T+S .. 16+T+S+I         image codes
    16+T+S+I .. +V             voice control tokens (optional, speech type)

Stores keep each tokenizer's own 0-based ids; `to_joint` / `from_joint` apply
the offsets when batching and decoding, so a store survives a vocabulary
rebuild. `vocab.json` records each range together with the tokenizer's name,
card and fingerprint; loading a checkpoint with a tokenizer whose fingerprint
differs is refused (`check_fingerprints`).

Voices (issue 19): a vocabulary may list the voices of its speech targets (a TTS
engine and voice, `espeak-ng:en-us`, or a corpus speaker id). Each gets one
control token after the image range; a speech target's decoder input is then
`<bos:speech> <voice> u1..un`, and `voice_token` picks the token at inference
(the recorded default when no name is given). A vocabulary without voices has
no such range and decodes speech as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.errors import TmtError
from tmt.core.io import check_object, read_json_object
from tmt.core.modality import MODALITIES, check_modality

PAD, UNK, EOS = 0, 1, 2
BOS: dict[str, int] = {"text": 3, "speech": 4, "image": 5}
NUM_SPECIALS = 16
SPECIAL_NAMES: dict[int, str] = {PAD: "<pad>", UNK: "<unk>", EOS: "<eos>"} | {
    v: f"<bos:{k}>" for k, v in BOS.items()
}
NEUTRAL_TYPE = 3
"""Modality type of <pad>, <unk>, <eos> and the reserved specials."""
MODALITY_TYPE: dict[str, int] = {m: i for i, m in enumerate(MODALITIES)}
VOCAB_SCHEMA_VERSION = 1

PAPER_SIZES: dict[str, int] = {"text": 30522, "speech": 200, "image": 8192}
"""The paper's tokenizer sizes; with the 16 specials they give 38930 ids."""


class VocabError(TmtError):
    """The vocabulary or a tokenizer does not match what it should."""


class FingerprintMismatch(VocabError):
    """A tokenizer's fingerprint differs from the one recorded in vocab.json."""


@dataclass(kw_only=True)
class TokenizerInfo:
    """What the joint vocabulary records about one modality's tokenizer."""

    name: str
    """Tokenizer name, e.g. `speech-mfcc-km200`."""
    size: int
    """Number of ids the tokenizer produces (its own range is 0..size-1)."""
    fingerprint: str
    """sha256 over the tokenizer's card and assets."""
    card: dict[str, Any] = field(default_factory=dict)
    """The tokenizer card (settings) it was built from."""
    path: str | None = None
    """Where the tokenizer's assets were when the vocabulary was built (a hint, not a requirement)."""


class JointVocab:
    """Specials plus one contiguous id range per modality."""

    def __init__(
        self,
        tokenizers: Mapping[str, TokenizerInfo],
        *,
        voices: Sequence[str] = (),
        default_voice: str | None = None,
    ) -> None:
        unknown = set(tokenizers) - set(MODALITIES)
        if unknown:
            raise VocabError(f"unknown modality {sorted(unknown)}; expected some of {list(MODALITIES)}")
        self.tokenizers: dict[str, TokenizerInfo] = {m: tokenizers[m] for m in MODALITIES if m in tokenizers}
        self.offsets: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        off = NUM_SPECIALS
        for m in MODALITIES:
            size = self.tokenizers[m].size if m in self.tokenizers else 0
            if size < 0:
                raise VocabError(f"{m} tokenizer size must be >= 0, got {size}")
            self.offsets[m] = off
            self.sizes[m] = size
            off += size
        self.voices: list[str] = check_voices(voices, default_voice)
        self.voice_offset = off
        self.default_voice: str | None = (default_voice or self.voices[0]) if self.voices else None
        self.size = off + len(self.voices)
        self._table = self._build_type_table()

    @classmethod
    def from_sizes(
        cls, sizes: Mapping[str, int], fingerprints: Mapping[str, str] | None = None, *, voices: Sequence[str] = ()
    ) -> JointVocab:
        """A vocabulary from sizes alone (tests, benchmarks, presets)."""
        fps = fingerprints or {}
        return cls(
            {m: TokenizerInfo(name=f"{m}-{n}", size=n, fingerprint=fps.get(m, "")) for m, n in sizes.items()},
            voices=voices,
        )

    # ---- layout --------------------------------------------------------
    def range(self, modality: str) -> tuple[int, int]:
        """[start, end) of the modality's ids in the joint space."""
        self._check_modality(modality)
        start = self.offsets[modality]
        return start, start + self.sizes[modality]

    def bos(self, modality: str) -> int:
        self._check_modality(modality)
        return BOS[modality]

    def _check_modality(self, modality: str) -> None:
        check_modality(modality, error=VocabError)

    def _build_type_table(self) -> np.ndarray:
        t = np.full(self.size, NEUTRAL_TYPE, dtype=np.int64)
        for m in MODALITIES:
            s, e = self.offsets[m], self.offsets[m] + self.sizes[m]
            t[s:e] = MODALITY_TYPE[m]
            t[BOS[m]] = MODALITY_TYPE[m]
        t[self.voice_offset : self.voice_offset + len(self.voices)] = MODALITY_TYPE["speech"]
        return t

    def type_table(self) -> np.ndarray:
        """token id -> modality type (0 text, 1 speech, 2 image, 3 neutral)."""
        return self._table.copy()

    def modality_of(self, token: int) -> str | None:
        """The modality of one joint id (None for pad/unk/eos/reserved)."""
        if not 0 <= token < self.size:
            raise VocabError(f"token id {token} outside the vocabulary [0, {self.size})")
        t = int(self._table[token])
        return None if t == NEUTRAL_TYPE else MODALITIES[t]

    def allowed_mask(self, modality: str, *, eos: bool = True) -> np.ndarray:
        """Boolean mask over the joint ids a decoder may emit for `modality` (+ <eos>)."""
        s, e = self.range(modality)
        mask = np.zeros(self.size, dtype=bool)
        mask[s:e] = True
        if eos:
            mask[EOS] = True
        return mask

    # ---- voices --------------------------------------------------------
    def voice_token(self, name: str | None = None) -> int | None:
        """The joint id of voice `name` (None: the default voice); None if the vocabulary has no voices."""
        if not self.voices:
            if name is not None:
                raise VocabError(
                    f"voice '{name}' asked for, but this vocabulary lists no voices (the model was trained "
                    "without voice tokens); leave the voice out"
                )
            return None
        name = self.default_voice if name is None else name
        try:
            return self.voice_offset + self.voices.index(str(name))
        except ValueError:
            raise VocabError(f"unknown voice '{name}'; the known voices are: {', '.join(self.voices)}") from None

    def voice_of_row(self, row: Mapping[str, Any]) -> int | None:
        """The voice token of a manifest or store-meta row (None: no voices, or the row's voice is not listed)."""
        name = row_voice(row)
        if not self.voices or name is None or name not in self.voices:
            return None
        return self.voice_offset + self.voices.index(name)

    def is_voice(self, token: int) -> bool:
        return self.voice_offset <= token < self.voice_offset + len(self.voices)

    # ---- conversions ---------------------------------------------------
    def to_joint(self, modality: str, ids: np.ndarray | list[int]) -> np.ndarray:
        """Tokenizer-local ids -> joint ids; out-of-range ids are an error."""
        s, e = self.range(modality)
        a = np.asarray(ids, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() >= e - s):
            raise VocabError(
                f"{modality} ids must lie in [0, {e - s}); got min {int(a.min())} max {int(a.max())}. "
                "Was the store tokenized with a different tokenizer than vocab.json names?"
            )
        return a + s

    def from_joint(self, modality: str, ids: np.ndarray | list[int], *, strip_specials: bool = True) -> np.ndarray:
        """Joint ids -> tokenizer-local ids. Specials (<eos>, <bos:...>, <pad>) are dropped
        when `strip_specials`; ids from another modality are an error."""
        s, e = self.range(modality)
        a = np.asarray(ids, dtype=np.int64)
        if strip_specials:
            a = a[(a >= NUM_SPECIALS) & ((a < self.voice_offset) | (a >= self.size))]
        bad = (a < s) | (a >= e)
        if bad.any():
            raise VocabError(
                f"id {int(a[bad][0])} is not a {modality} token (range [{s}, {e}))"
            )
        return a - s

    # ---- fingerprints --------------------------------------------------
    def fingerprints(self) -> dict[str, str]:
        return {m: t.fingerprint for m, t in self.tokenizers.items()}

    def check_fingerprints(self, found: Mapping[str, str], *, what: str = "tokenizer") -> None:
        """Refuse `found` fingerprints that differ from the ones recorded here."""
        for m, fp in found.items():
            if m not in self.tokenizers:
                raise FingerprintMismatch(
                    f"{what} has a {m} tokenizer but vocab.json has no {m} range; rebuild the vocabulary "
                    "with `tmt vocab build` including it"
                )
            want = self.tokenizers[m].fingerprint
            if want and fp and want != fp:
                raise FingerprintMismatch(
                    f"{m} {what} fingerprint {fp[:12]} differs from vocab.json's {want[:12]} "
                    f"({self.tokenizers[m].name}): the tokens were made by a different {m} tokenizer "
                    "than the model was trained with. Re-tokenize with the tokenizer named in vocab.json, "
                    "or rebuild the vocabulary and retrain."
                )

    # ---- serialisation -------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": VOCAB_SCHEMA_VERSION,
            "size": self.size,
            "specials": {name: i for i, name in SPECIAL_NAMES.items()} | {"num_specials": NUM_SPECIALS},
            "modalities": {
                m: {
                    "offset": self.offsets[m],
                    "size": self.sizes[m],
                    "name": t.name,
                    "fingerprint": t.fingerprint,
                    "card": t.card,
                    "path": t.path,
                }
                for m, t in self.tokenizers.items()
            },
        } | (
            {"voices": {"offset": self.voice_offset, "names": list(self.voices), "default": self.default_voice}}
            if self.voices else {}
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "vocab.json") -> JointVocab:
        fix = "rebuild it with `tmt vocab build`"
        check_object(data, source, what="vocabulary", required={"size": int, "modalities": dict}, error=VocabError, fix=fix)
        for m, d in data["modalities"].items():
            check_object(d, source, what=f"vocabulary entry modalities.{m}", error=VocabError, fix=fix,
                         required={"offset": int, "size": int, "name": str, "fingerprint": str})
        try:
            if data.get("schema_version") != VOCAB_SCHEMA_VERSION:
                raise VocabError(
                    f"{source}: schema_version {data.get('schema_version')!r} is not {VOCAB_SCHEMA_VERSION}"
                )
            toks = {
                m: TokenizerInfo(
                    name=d["name"], size=int(d["size"]), fingerprint=d["fingerprint"],
                    card=d.get("card") or {}, path=d.get("path"),
                )
                for m, d in data["modalities"].items()
            }
        except (KeyError, TypeError, ValueError) as e:
            raise VocabError(f"{source} is malformed ({e!r}); rebuild it with `tmt vocab build`") from None
        voices = data.get("voices") or {}
        if not isinstance(voices, dict) or not isinstance(voices.get("names", []), list):
            raise VocabError(f"{source}: 'voices' must be {{offset, names: [...], default}}; {fix}")
        v = cls(toks, voices=[str(x) for x in voices.get("names", [])], default_voice=voices.get("default"))
        if v.voices and voices.get("offset") != v.voice_offset:
            raise VocabError(f"{source}: voices offset {voices.get('offset')} does not match the layout ({v.voice_offset})")
        for m, d in data["modalities"].items():
            if v.offsets[m] != int(d["offset"]):
                raise VocabError(f"{source}: {m} offset {d['offset']} does not match the layout ({v.offsets[m]})")
        if v.size != int(data["size"]):
            raise VocabError(f"{source}: size {data['size']} does not match the layout ({v.size})")
        return v

    def save(self, path: str | Path) -> None:
        from tmt.core.io import atomic_write_json

        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> JointVocab:
        p = Path(path)
        if p.is_dir():
            p = p / "vocab.json"
        if not p.is_file():
            raise VocabError(f"vocabulary not found: {p} (build one with `tmt vocab build`)")
        data = read_json_object(p, what="vocabulary", error=VocabError, fix="rebuild it with `tmt vocab build`")
        return cls.from_json(data, source=str(p))

    def __repr__(self) -> str:
        ranges = ", ".join(f"{m}=[{s},{s + self.sizes[m]})" for m, s in self.offsets.items() if self.sizes[m])
        voices = f", voices={len(self.voices)}" if self.voices else ""
        return f"JointVocab(size={self.size}, {ranges}{voices})"


def row_voice(row: Mapping[str, Any]) -> str | None:
    """The voice of a manifest / store-meta row: its `voice` field, else `engine:voice` of its
    `tts` field (the scenes corpus), else its `speaker` id (real corpora); None if it has none."""
    v = row.get("voice")
    if isinstance(v, str) and v:
        return v
    tts = row.get("tts")
    if isinstance(tts, Mapping) and tts.get("engine") and tts.get("voice"):
        return f"{tts['engine']}:{tts['voice']}"
    spk = row.get("speaker")
    if spk is not None and str(spk):
        return str(spk)
    return None


def check_voices(voices: Sequence[str], default: str | None) -> list[str]:
    """The voice names as a list; duplicates, empty names or a default not among them are errors."""
    names = [str(v) for v in voices]
    if any(not n for n in names):
        raise VocabError("voice names must be non-empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise VocabError(f"voice names must be unique; repeated: {', '.join(dup)}")
    if default is not None and default not in names:
        raise VocabError(f"default voice '{default}' is not among the voices ({', '.join(names) or 'none'})")
    return names
