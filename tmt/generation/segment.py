"""Long inputs: plan the pieces a too-long source is translated in, and join the results.

A model reads at most `max_source_seq_len - 1` source tokens. A longer input is cut into
pieces that each fit, every piece is translated on its own, and the outputs are joined:

* speech is cut at pauses. Frame energy at the unit rate (50 Hz, 320-sample hops) feeds a
  two-threshold (hysteresis) voice activity detector; a pause is a run of non-speech frames
  at least `min_pause_s` long. The number of frames a piece may span is estimated from the
  whole input's tokens per frame (units after run-length dedup), each cut goes to the
  middle of the longest pause in the second half of that span (the lowest-energy frame
  when there is none), and every piece is re-encoded and split again if it still has too
  many tokens;
* text is cut at sentence ends, a sentence still too long at commas / semicolons / colons,
  then between words, then (one very long "word") between characters; pieces are packed
  greedily up to the budget and checked by encoding them;
* token sequences with no media behind them (a cascade's speech pivot) are cut into equal
  parts.

Joining: texts with a space, waveforms with `join_silence_s` of silence between them, unit
sequences end to end. Everything here is numpy on plain values (the tokenizer comes in as an
`encode` callable), so it is tested without a model. The `Translator` applies it.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tmt.core.audio import FRAME_HOP, MIN_SAMPLES, SAMPLE_RATE, SILENCE_PEAK
from tmt.core.errors import TmtError

log = logging.getLogger(__name__)

MAX_ROUNDS = 8
"""Re-split rounds before giving up on a piece that keeps encoding to too many tokens."""
FRAME_SAFETY = 0.9
"""Frames per piece are planned for this share of the token budget (token rates vary)."""


class SegmentError(TmtError):
    """A long input could not be cut into pieces that fit the model."""


@dataclass(kw_only=True)
class SegmentConfig:
    """How inputs longer than the model's source limit are split (text and speech sources)."""

    enabled: bool = True
    """Split too-long speech / text inputs into pieces and join the outputs (False: refuse them
    with the source-limit error). Image targets never split: one image per input."""
    max_tokens: int | None = None
    """Most source tokens per piece. None: the model's source limit, lowered so that each
    piece's longest allowed output (lengths.<target>: a * n + b) fits the decoder."""
    min_pause_s: float = 0.15
    """Speech: a pause (cut candidate) is at least this many seconds of non-speech frames."""
    join_silence_s: float = 0.25
    """Speech targets with a vocoder: seconds of silence put between the pieces' waveforms."""

    def check(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 2:
            raise SegmentError(f"segment.max_tokens must be >= 2 (or null), got {self.max_tokens}")
        if self.min_pause_s < 0 or self.join_silence_s < 0:
            raise SegmentError(
                f"segment.min_pause_s and segment.join_silence_s must be >= 0, got "
                f"{self.min_pause_s} and {self.join_silence_s}"
            )


def piece_budget(
    source_limit: int,
    *,
    target_cap: int | None = None,
    length_rule: tuple[float, int] | None = None,
    max_tokens: int | None = None,
    floor: int = 16,
) -> int:
    """Source tokens one piece may hold.

    `source_limit` is what the encoder reads (without <eos>); `length_rule` (a, b) and
    `target_cap` are the target's maximum length a * n + b and the decoder's limit: the budget
    is lowered so a piece's longest output fits the decoder, but never below `floor` tokens
    (a tiny decoder cannot be matched; the output is then capped as for any input)."""
    budget = int(source_limit)
    if length_rule is not None and target_cap is not None:
        a, b = length_rule
        if a > 0 and a * budget + b > target_cap:
            budget = min(budget, max(floor, math.floor((target_cap - b) / a)))
    if max_tokens is not None:
        budget = min(budget, int(max_tokens))
    return max(1, budget)


# ----------------------------------------------------------------------------------- speech
def frame_energy_db(wav: np.ndarray, hop: int = FRAME_HOP) -> np.ndarray:
    """Mean power per `hop`-sample frame in dB (one value per 20 ms at 16 kHz; the tail of a
    partial frame counts as a frame)."""
    w = np.asarray(wav, dtype=np.float64).reshape(-1)
    n = max(1, math.ceil(len(w) / hop))
    padded = np.zeros(n * hop)
    padded[: len(w)] = w
    power = (padded.reshape(n, hop) ** 2).mean(axis=1)
    return np.asarray(10.0 * np.log10(power + 1e-10), dtype=np.float64)


def find_pauses(energy_db: np.ndarray, *, min_pause_frames: int = 8) -> list[tuple[int, int]]:
    """Pauses as [start, end) frame ranges: a hysteresis voice activity detector on the frame
    energies. Thresholds sit between the noise floor (10th percentile) and the speech level
    (90th): speech starts above the upper one and ends below the lower one."""
    e = np.asarray(energy_db, dtype=np.float64)
    if e.size == 0:
        return []
    floor, level = float(np.percentile(e, 10)), float(np.percentile(e, 90))
    spread = level - floor
    if spread < 6.0:  # no contrast: one level throughout, no pause to find
        return []
    hi, lo = floor + 0.45 * spread, floor + 0.25 * spread
    speech = np.zeros(e.size, dtype=bool)
    on = False
    for i, x in enumerate(e):
        on = x > hi if not on else x >= lo
        speech[i] = on
    pauses: list[tuple[int, int]] = []
    start: int | None = None
    for i, s in enumerate(speech):
        if not s and start is None:
            start = i
        elif s and start is not None:
            if i - start >= min_pause_frames:
                pauses.append((start, i))
            start = None
    if start is not None and e.size - start >= min_pause_frames:
        pauses.append((start, int(e.size)))
    return pauses


def plan_cuts(
    energy_db: np.ndarray, max_frames: int, *, pauses: Sequence[tuple[int, int]] | None = None, min_pause_frames: int = 8
) -> list[int]:
    """Cut frames splitting `len(energy_db)` frames into pieces of at most `max_frames`.

    Each cut lies in the second half of the span the piece may cover (no piece but the last is
    shorter than half the span): at the middle of the pause that overlaps that window most
    (the later one on ties), else at the window's lowest-energy frame (energy smoothed over
    five frames; the later one on ties). Deterministic."""
    e = np.asarray(energy_db, dtype=np.float64)
    total = int(e.size)
    max_frames = max(1, int(max_frames))
    if pauses is None:
        pauses = find_pauses(e, min_pause_frames=min_pause_frames)
    smooth = np.convolve(e, np.ones(5) / 5.0, mode="same") if total >= 5 else e
    cuts: list[int] = []
    start = 0
    while total - start > max_frames:
        lo, hi = start + max(1, max_frames // 2), start + max_frames  # cut in [lo, hi]
        best: tuple[int, int] | None = None  # (overlap, cut)
        for a, b in pauses:
            a2, b2 = max(a, lo), min(b, hi + 1)
            if b2 - a2 <= 0:
                continue
            cand = (b2 - a2, (a2 + b2 - 1) // 2)
            if best is None or cand >= best:
                best = cand
        if best is not None:
            cut = best[1]
        else:  # the quietest frame; the latest of equals (fewer, longer pieces)
            window = smooth[lo : hi + 1]
            cut = lo + len(window) - 1 - int(np.argmin(window[::-1]))
        cut = min(max(cut, start + 1), hi)
        cuts.append(cut)
        start = cut
    return cuts


def split_speech(
    wav: np.ndarray,
    encode: Callable[[list[np.ndarray]], list[np.ndarray]],
    budget: int,
    *,
    tokens: np.ndarray | None = None,
    min_pause_s: float = 0.15,
    sample_rate: int = SAMPLE_RATE,
) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Cut a 16 kHz waveform at pauses into pieces whose tokens (`encode`: waveforms -> token
    arrays) fit `budget`. Returns ((start, end) in samples, tokens) per piece, in order. Pieces
    that are silent or shorter than one analysis window carry nothing and are left out.
    `tokens`: the whole input's tokens, when already known (sets the tokens-per-frame rate)."""
    w = np.asarray(wav, dtype=np.float32).reshape(-1)
    hop = max(1, round(sample_rate / SAMPLE_RATE * FRAME_HOP))
    min_pause = max(1, round(min_pause_s * sample_rate / hop))
    energy = frame_energy_db(w, hop)
    pauses = find_pauses(energy, min_pause_frames=min_pause)
    if tokens is None:
        [tokens] = encode([w])
    todo: list[tuple[int, int, int, int]] = [(0, len(w), len(tokens), 0)]  # start, end, tokens, round
    done: dict[int, tuple[int, np.ndarray]] = {}
    while todo:
        pending: list[tuple[int, int, int]] = []
        for s, e, ntok, rnd in todo:
            if rnd > MAX_ROUNDS:
                raise SegmentError(
                    f"cannot cut {(e - s) / sample_rate:.2f} s of speech into pieces of at most {budget} tokens "
                    f"(still {ntok} after {MAX_ROUNDS} rounds); raise segment.max_tokens or shorten the input"
                )
            f0, f1 = s // hop, max(s // hop + 1, math.ceil(e / hop))
            rate = max(ntok, 1) / (f1 - f0)
            max_frames = max(1, math.floor(budget / rate * FRAME_SAFETY ** (rnd + 1)))
            local = [(max(a, f0) - f0, min(b, f1) - f0) for a, b in pauses if b > f0 and a < f1]
            cuts = plan_cuts(energy[f0:f1], max_frames, pauses=local)
            bounds = [s, *[min(e, (f0 + c) * hop) for c in cuts], e]
            pending.extend((a, b, rnd) for a, b in itertools.pairwise(bounds) if b > a)
        keep = [(a, b, r) for a, b, r in pending if b - a >= MIN_SAMPLES and float(np.abs(w[a:b]).max()) >= SILENCE_PEAK]
        if len(keep) < len(pending):
            log.debug("left out %d silent or too short speech pieces", len(pending) - len(keep))
        toks = encode([w[a:b] for a, b, _ in keep]) if keep else []
        todo = []
        for (a, b, r), t in zip(keep, toks, strict=True):
            t = np.asarray(t, dtype=np.int64).reshape(-1)
            if len(t) > budget:  # still too long: cut it again, planning a little tighter
                todo.append((a, b, len(t), r + 1))
            elif len(t) > 0:
                done[a] = (b, t)
    return [((a, done[a][0]), done[a][1]) for a in sorted(done)]


# ------------------------------------------------------------------------------------- text
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)|\n")
_CLAUSE = re.compile(r"(?<=[,;:\u2014\u2013])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences: cut after . ! ? ... (with any closing quotes or brackets) followed by
    whitespace, and at line breaks; blank pieces are dropped, the rest stripped."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.end()])
        start = m.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def _units(text: str, level: int) -> list[str]:
    """`text` cut at one level: 0 sentences, 1 clauses, 2 words, 3 characters (halves)."""
    if level == 0:
        return split_sentences(text)
    if level == 1:
        return [s.strip() for s in _CLAUSE.split(text) if s.strip()]
    if level == 2:
        return text.split()
    step = max(1, len(text) // 2)
    return [text[i : i + step] for i in range(0, len(text), step)]


def split_text(
    text: str, encode: Callable[[list[str]], list[np.ndarray]], budget: int
) -> list[tuple[str, np.ndarray]]:
    """Cut `text` into pieces whose tokens (`encode`: strings -> token arrays) fit `budget`:
    at sentence ends first, a too-long sentence at commas, then between words, then between
    characters. Consecutive units are packed greedily while their token counts add up to at
    most the budget; every packed piece is encoded, and one that still has too many tokens is
    cut again. Returns (piece, tokens) in order."""
    out: list[tuple[str, np.ndarray]] = []
    _split_into(text.strip(), encode, budget, 0, out, depth=0)
    return out


def _split_into(
    text: str, encode: Callable[[list[str]], list[np.ndarray]], budget: int, level: int,
    out: list[tuple[str, np.ndarray]], depth: int,
) -> None:
    if depth > 4 * MAX_ROUNDS:
        raise SegmentError(
            f"cannot cut the text into pieces of at most {budget} tokens (near: {text[:60]!r}); "
            "raise segment.max_tokens or shorten the input"
        )
    units = _units(text, level) if level <= 3 else [text]
    if len(units) <= 1 and level < 3:
        _split_into(text, encode, budget, level + 1, out, depth + 1)
        return
    counts = [len(t) for t in encode(units)] if units else []
    pieces: list[list[str]] = []
    cur: list[str] = []
    used = 0
    for u, n in zip(units, counts, strict=True):
        if n > budget:  # one unit alone is too long: flush, then cut it finer
            if cur:
                pieces.append(cur)
                cur, used = [], 0
            pieces.append([u])
            continue
        if cur and used + n > budget:
            pieces.append(cur)
            cur, used = [], 0
        cur.append(u)
        used += n
    if cur:
        pieces.append(cur)
    joined = [" ".join(p) for p in pieces]
    toks = encode(joined)
    for p, j, t in zip(pieces, joined, toks, strict=True):
        t = np.asarray(t, dtype=np.int64).reshape(-1)
        if len(t) <= budget:
            if len(t):
                out.append((j, t))
        elif len(p) > 1:  # the units' counts did not add up (merged pieces): halve the group
            half = len(p) // 2
            for group in (p[:half], p[half:]):
                _split_into(" ".join(group), encode, budget, level, out, depth + 1)
        elif level < 3:
            _split_into(j, encode, budget, level + 1, out, depth + 1)
        else:
            _split_into(j, encode, budget, 3, out, depth + 1)


# ----------------------------------------------------------------------------------- tokens
def split_tokens(tokens: np.ndarray, budget: int) -> list[np.ndarray]:
    """Equal consecutive parts of at most `budget` tokens (no media to find better cuts in)."""
    t = np.asarray(tokens).reshape(-1)
    n = max(1, math.ceil(len(t) / max(1, budget)))
    return [p for p in np.array_split(t, n) if len(p)]


# ------------------------------------------------------------------------------------ joins
def join_texts(texts: Sequence[str]) -> str:
    """Pieces' texts joined with single spaces (empty pieces dropped)."""
    return " ".join(t.strip() for t in texts if t and t.strip())


def join_waveforms(wavs: Sequence[np.ndarray], sample_rate: int, silence_s: float = 0.25) -> np.ndarray:
    """Waveforms end to end with `silence_s` seconds of silence between neighbours."""
    gap = np.zeros(max(0, round(silence_s * sample_rate)), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, w in enumerate(wavs):
        if i:
            parts.append(gap)
        parts.append(np.asarray(w, dtype=np.float32).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def join_tokens(tokens: Sequence[np.ndarray]) -> np.ndarray:
    """Token arrays end to end."""
    arrs = [np.asarray(t, dtype=np.int64).reshape(-1) for t in tokens]
    return np.concatenate(arrs) if arrs else np.zeros(0, dtype=np.int64)
