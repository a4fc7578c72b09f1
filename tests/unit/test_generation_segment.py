"""Long inputs: the cut-point planner, the speech and text splitters and the joins
(`tmt.generation.segment`), on synthetic signals with known pauses and stand-in encoders."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.generation.segment import (
    SegmentConfig,
    SegmentError,
    find_pauses,
    frame_energy_db,
    join_texts,
    join_tokens,
    join_waveforms,
    piece_budget,
    plan_cuts,
    split_sentences,
    split_speech,
    split_text,
    split_tokens,
)


def speech_with_pauses(n: int = 20, seed: int = 0, pause_s: float = 0.4) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Voiced stretches (modulated tones, 1.5-3.5 s) separated by quiet noise; returns the
    waveform and the pauses as sample ranges."""
    rng = np.random.default_rng(seed)
    parts, pauses, pos = [], [], 0
    for i in range(n):
        k = int(rng.uniform(1.5, 3.5) * SAMPLE_RATE)
        t = np.arange(k) / SAMPLE_RATE
        parts.append(0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))
        pos += k
        if i < n - 1:
            g = int(pause_s * SAMPLE_RATE)
            parts.append(0.002 * rng.standard_normal(g))
            pauses.append((pos, pos + g))
            pos += g
    return np.concatenate(parts).astype(np.float32), pauses


def units_per_40ms(wavs: list[np.ndarray]) -> list[np.ndarray]:
    """A stand-in speech tokenizer: one unit per two frames (25 units/s, as deduplicated units)."""
    return [np.arange(len(w) // (2 * FRAME_HOP)) % 50 for w in wavs]


def words(texts: list[str]) -> list[np.ndarray]:
    """A stand-in text tokenizer: one token per word, two for words longer than 8 letters."""
    return [np.array([0 if len(w) <= 8 else 1 for w in t.split() for _ in range(1 + (len(w) > 8))]) for t in texts]


def test_piece_budget_fits_source_and_target() -> None:
    assert piece_budget(511) == 511
    # speech targets: a 77-token piece may grow to 4 * 77 + 200 = 508 <= 510 units
    assert piece_budget(511, target_cap=510, length_rule=(4.0, 200)) == 77
    assert piece_budget(511, target_cap=510, length_rule=(0.5, 32)) == 511
    assert piece_budget(511, target_cap=510, length_rule=(4.0, 200), max_tokens=50) == 50
    assert piece_budget(511, target_cap=100, length_rule=(4.0, 200)) == 16  # tiny decoder: the floor
    with pytest.raises(SegmentError, match="max_tokens"):
        SegmentConfig(max_tokens=1).check()


def test_vad_finds_the_pauses() -> None:
    wav, pauses = speech_with_pauses(8)
    found = find_pauses(frame_energy_db(wav), min_pause_frames=8)
    assert len(found) == len(pauses)
    for (a, b), (pa, pb) in zip(found, pauses, strict=True):
        assert abs(a * FRAME_HOP - pa) <= 2 * FRAME_HOP and abs(b * FRAME_HOP - pb) <= 2 * FRAME_HOP
    assert find_pauses(frame_energy_db(wav), min_pause_frames=40) == []  # 0.4 s < 0.8 s
    assert find_pauses(np.full(100, -20.0)) == []  # one level: nothing to tell apart


def test_planner_cuts_inside_pauses_and_pieces_fit() -> None:
    wav, pauses = speech_with_pauses(20)
    energy = frame_energy_db(wav)
    cuts = plan_cuts(energy, 500)
    bounds = [0, *cuts, len(energy)]
    assert all(0 < b - a <= 500 for a, b in pairwise(bounds))
    assert all(b - a >= 250 for a, b in pairwise(bounds[:-1]))  # only the last is short
    for c in cuts:
        assert any(pa <= c * FRAME_HOP < pb for pa, pb in pauses), c
    assert plan_cuts(energy, 500) == cuts  # deterministic
    assert plan_cuts(energy, len(energy)) == []


def test_planner_without_pauses_cuts_at_the_quietest_frame() -> None:
    e = np.minimum(0.0, np.abs(np.arange(300) - 170) - 30.0)  # a dip, deepest at frame 170
    assert plan_cuts(e, 200, pauses=[]) == [170]
    assert plan_cuts(e, 100, pauses=[]) == [100, 170, 270]  # quietest frame of each window


def test_split_speech_covers_the_recording() -> None:
    wav, pauses = speech_with_pauses(20)  # ~ 62 s, ~1560 units
    seen: list[int] = []

    def enc(ws: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(len(ws))
        return units_per_40ms(ws)

    pieces = split_speech(wav, enc, 300)
    assert 5 <= len(pieces) <= 8
    assert all(len(t) <= 300 for _, t in pieces)
    spans = [s for s, _ in pieces]
    assert spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(a[1] == b[0] for a, b in pairwise(spans))  # nothing lost, no overlap
    for s, _ in spans[1:]:
        assert any(pa <= s < pb for pa, pb in pauses)
    assert [s for s, _ in split_speech(wav, units_per_40ms, 300)] == spans  # deterministic


def test_split_speech_resplits_pieces_that_encode_too_long() -> None:
    wav, _ = speech_with_pauses(12)

    def bursty(ws: list[np.ndarray]) -> list[np.ndarray]:  # the second half yields 3x the units
        out = []
        for w in ws:
            n = len(w) // (2 * FRAME_HOP)
            out.append(np.zeros(n if len(w) < len(wav) // 2 else 3 * n, dtype=np.int64))
        return out

    whole = np.zeros(len(wav) // (2 * FRAME_HOP), dtype=np.int64)  # the estimate: 25 units/s
    pieces = split_speech(wav, bursty, 200, tokens=whole)
    assert all(len(t) <= 200 for _, t in pieces)
    assert pieces[-1][0][1] == len(wav)


def test_split_speech_drops_silent_pieces() -> None:
    voiced, _ = speech_with_pauses(2)
    wav = np.concatenate([voiced, np.zeros(20 * SAMPLE_RATE, np.float32), voiced])
    pieces = split_speech(wav, units_per_40ms, 200)
    assert all(float(np.abs(wav[a:b]).max()) > 0 for (a, b), _ in pieces)
    assert sum(len(t) for _, t in pieces) < len(wav) // (2 * FRAME_HOP)


def test_sentence_splitter() -> None:
    text = 'A dog runs. Two children play?  "Yes!" she said.\nA new line without a stop\n\nEnd...'
    assert split_sentences(text) == [
        "A dog runs.", "Two children play?", '"Yes!"', "she said.", "A new line without a stop", "End...",
    ]
    assert split_sentences("3.5 kg, no split") == ["3.5 kg, no split"]
    assert split_sentences("  ") == []


def test_split_text_packs_sentences_then_clauses_then_words() -> None:
    sents = [" ".join(f"w{i}{j}" for j in range(12)) + "." for i in range(80)]  # 80 sentences of 12 words
    text = " ".join(sents)
    pieces = split_text(text, words, 50)
    assert all(len(t) <= 50 for _, t in pieces)
    assert all(p.endswith(".") for p, _ in pieces)  # cut at sentence ends only
    assert [len(p.split(". ")) for p, _ in pieces[:-1]] == [4] * (len(pieces) - 1)
    assert " ".join(p for p, _ in pieces) == text  # every word, in order
    assert [p for p, _ in split_text(text, words, 50)] == [p for p, _ in pieces]  # deterministic

    long_sentence = ", ".join(" ".join(f"c{i}{j}" for j in range(7)) for i in range(10)) + "."
    pieces = split_text(long_sentence, words, 20)
    assert all(len(t) <= 20 for _, t in pieces) and len(pieces) == 5  # two 7-word clauses each
    assert all(p.endswith((",", ".")) for p, _ in pieces)
    assert " ".join(p for p, _ in pieces) == long_sentence

    run_on = " ".join(f"x{i}" for i in range(95))
    pieces = split_text(run_on, words, 30)
    assert [len(t) for _, t in pieces] == [30, 30, 30, 5]
    assert split_text("a" * 200, lambda ts: [np.zeros(len(t) // 10) for t in ts], 6)[0][0] == "a" * 50


def test_split_tokens_and_joins() -> None:
    parts = split_tokens(np.arange(10), 4)
    assert [len(p) for p in parts] == [4, 3, 3]
    np.testing.assert_array_equal(join_tokens(parts), np.arange(10))
    assert join_texts(["a dog ", "", " runs"]) == "a dog runs"
    w = join_waveforms([np.ones(100), np.ones(50)], 1000, 0.02)
    assert len(w) == 170 and w.dtype == np.float32 and not w[100:120].any()
