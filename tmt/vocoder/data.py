"""Training data of the vocoder: a token store's speech units and run lengths, matched by id
to the wavs of the raw manifest, cut into random fixed-length segments.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tmt.core.audio import FRAME_HOP, load_audio
from tmt.vocoder.config import VocoderError
from tmt.vocoder.duration import sequence_mask

log = logging.getLogger(__name__)


@dataclass
class Utterance:
    """One training row: deduplicated units, their run lengths (frames) and the wav."""

    id: str
    units: np.ndarray
    durations: np.ndarray
    wav_path: Path
    text: str | None = None
    voice: str | None = None
    """Who speaks (`tmt.vocab.row_voice` of the manifest row), None when the row names no one."""
    voice_id: int = 0
    """Index of `voice` in the vocoder's `voices` (0 for a vocoder without voice conditioning)."""

    @property
    def num_frames(self) -> int:
        return int(self.durations.sum())


class AudioCache:
    """Loads wavs on first use and keeps up to `capacity` of them (cropped/padded to their units)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, utt: Utterance) -> np.ndarray:
        wav = self._cache.get(utt.id)
        if wav is None:
            wav = align_audio(load_audio(utt.wav_path), utt.num_frames, utt.id)
            self._cache[utt.id] = wav
            if len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(utt.id)
        return wav


def align_audio(wav: np.ndarray, num_frames: int, uid: str = "") -> np.ndarray:
    """Crop or zero-pad a wav to num_frames * 320 samples (units were made with that hop)."""
    want = num_frames * FRAME_HOP
    if abs(len(wav) - want) > 4 * FRAME_HOP:
        log.debug("%s: wav has %d samples, units cover %d", uid, len(wav), want)
    if len(wav) >= want:
        return wav[:want]
    return np.pad(wav, (0, want - len(wav)))


def collect_utterances(store_path: str | Path, manifest: str | Path) -> tuple[list[Utterance], dict[str, Any]]:
    """Rows of `store_path` with speech units, matched by id to the wavs of the raw manifest."""
    from tmt.store.manifest import iter_manifest, media_path
    from tmt.store.token_store import TokenStore

    store = TokenStore(store_path)
    for s in ("speech", "durations"):
        if s not in store.streams:
            raise VocoderError(
                f"token store {store_path} has no '{s}' stream; tokenize speech with run lengths kept "
                "(`tmt tokenize speech`) before training a vocoder"
            )
    from tmt.vocab import row_voice

    wavs: dict[str, tuple[str, str | None, str | None]] = {}
    for row in iter_manifest(manifest):
        if row.get("speech"):
            wavs[str(row["id"])] = (str(row["speech"]), row.get("text"), row_voice(row))
    utts: list[Utterance] = []
    unmatched = 0
    for i in range(len(store)):
        units = store.tokens(i, "speech")
        if units.size == 0:
            continue
        rid = str(store.meta(i)["id"])
        if rid not in wavs:
            unmatched += 1
            continue
        path, text, voice = wavs[rid]
        durs = store.tokens(i, "durations").astype(np.int64)
        utts.append(Utterance(rid, units.astype(np.int64), durs, media_path(manifest, path), text, voice))
    if not utts:
        raise VocoderError(
            f"no row of {store_path} with speech units has a wav in {manifest} (ids matched: 0, unmatched: {unmatched}); "
            "pass the raw manifest the store was tokenized from"
        )
    if unmatched:
        log.warning("%d rows of %s have no wav in %s and are skipped", unmatched, store_path, manifest)
    tok = (store.index.get("tokenizers") or {}).get("speech") or {}
    info = {
        "num_units": store.vocab_sizes["speech"],
        "fingerprint": store.fingerprints.get("speech"),
        "name": tok.get("name") if isinstance(tok, dict) else None,
    }
    return utts, info


def collect_matching_utterances(store_path: str | Path, manifest: str | Path, fingerprint: str | None,
                                limit: int = 0, taken: Sequence[Utterance] = ()) -> list[Utterance]:
    """`collect_utterances` of another store (held-out rows, or more training rows such as a corpus' spoken extra
    scenes), at most `limit` of them (0 = all); refused unless the same speech tokenizer (`fingerprint`) made it
    and none of its row ids is one of `taken`'s (features are cached by id)."""
    utts, info = collect_utterances(store_path, manifest)
    if info["fingerprint"] != fingerprint:
        raise VocoderError(f"{store_path} was tokenized by a different speech tokenizer than the training store; "
                           "tokenize both with the same speech card")
    utts = utts[:limit] if limit > 0 else utts
    clash = sorted({u.id for u in taken} & {u.id for u in utts})
    if clash:
        raise VocoderError(f"{store_path} repeats {len(clash)} row id(s) of the training store (e.g. '{clash[0]}'); "
                           "give rows that are not in it already")
    return utts


def sample_batch(
    utts: Sequence[Utterance], cache: AudioCache, rng: np.random.Generator, batch_size: int, segment_frames: int
) -> dict[str, Tensor]:
    """Random segments (frame-level units + audio) and the chosen utterances' full unit sequences."""
    chosen = [utts[int(i)] for i in rng.integers(0, len(utts), batch_size)]
    frames = np.zeros((batch_size, segment_frames), dtype=np.int64)
    fmask = np.zeros((batch_size, segment_frames), dtype=bool)
    audio = np.zeros((batch_size, segment_frames * FRAME_HOP), dtype=np.float32)
    for b, u in enumerate(chosen):
        fr = np.repeat(u.units, u.durations)
        wav = cache.get(u)
        start = int(rng.integers(0, len(fr) - segment_frames + 1)) if len(fr) > segment_frames else 0
        seg = fr[start : start + segment_frames]
        frames[b, : len(seg)] = seg
        fmask[b, : len(seg)] = True
        a = wav[start * FRAME_HOP : (start + len(seg)) * FRAME_HOP]
        audio[b, : len(a)] = a
    max_t = max(len(u.units) for u in chosen)
    units = np.zeros((batch_size, max_t), dtype=np.int64)
    durs = np.zeros((batch_size, max_t), dtype=np.int64)
    for b, u in enumerate(chosen):
        units[b, : len(u.units)] = u.units
        durs[b, : len(u.units)] = u.durations
    lengths = torch.tensor([len(u.units) for u in chosen])
    return {
        "frames": torch.from_numpy(frames),
        "frame_mask": torch.from_numpy(fmask),
        "audio": torch.from_numpy(audio),
        "units": torch.from_numpy(units),
        "durations": torch.from_numpy(durs),
        "unit_mask": sequence_mask(lengths, max_t),
        "voice": voice_ids(chosen),
    }


def voice_ids(utts: Sequence[Utterance]) -> Tensor:
    """The rows' `voice_id`s (B,)."""
    return torch.tensor([u.voice_id for u in utts], dtype=torch.long)


def assign_voices(utts: Sequence[Utterance], voices: Sequence[str], where: str) -> None:
    """Set each row's `voice_id` from its voice name; a row without one of `voices` is refused."""
    index = {v: k for k, v in enumerate(voices)}
    for u in utts:
        if u.voice not in index:
            raise VocoderError(
                f"{where}: row '{u.id}' has voice {u.voice!r}, not one of the vocoder's voices ({', '.join(voices)}); "
                "give every speech row a `voice`, `tts` or `speaker` field, or train without --voices"
            )
        u.voice_id = index[u.voice]
