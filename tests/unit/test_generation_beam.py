"""Beam search with a patience factor: patience 1 is fairseq2's search exactly; more patience lets
a longer, better-scored hypothesis finish after a short one has met fairseq2's quota."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fairseq2.data.tokenizers import VocabularyInfo
from fairseq2.generation.beam_search import BeamSearchSeq2SeqGenerator
from fairseq2.nn import BatchLayout

from tmt.generation.beam import PatientBeamSearchSeq2SeqGenerator
from tmt.generation.generator import GenerationConfig, GenerationError

BOS, EOS, PAD, A, B, C = range(6)
VOCAB = VocabularyInfo(size=6, unk_idx=None, bos_idx=BOS, eos_idx=EOS, pad_idx=PAD)


class Markov(torch.nn.Module):
    """A seq2seq stand-in whose next-token distribution depends only on the last token."""

    max_source_seq_len = 16
    max_target_seq_len = 16

    def __init__(self, table: dict[int, dict[int, float]]) -> None:
        super().__init__()
        probs = torch.full((6, 6), 1e-6)
        for prev, row in table.items():
            for nxt, p in row.items():
                probs[prev, nxt] = p
        self.register_buffer("logp", (probs / probs.sum(1, keepdim=True)).log())

    def forward(self, src, src_layout, seqs, seqs_layout, *, state_bag=None):  # type: ignore[no-untyped-def]
        return self.logp[seqs]  # (N, S, V): the prompt is one token, so no prefill and S == 1


# after `a`, <eos> is the single most likely token, but `a c <eos>` has the better per-token score
TABLE = {BOS: {A: 0.9, B: 0.1}, A: {EOS: 0.5, C: 0.45, B: 0.05}, B: {EOS: 0.9, A: 0.1}, C: {EOS: 0.99, B: 0.01}}


def _decode(gen: BeamSearchSeq2SeqGenerator, n: int = 1) -> list[list[tuple[list[int], float]]]:
    src = torch.zeros((n, 3), dtype=torch.int64)
    prompt = torch.full((n, 1), BOS, dtype=torch.int64)
    out = gen(src, BatchLayout.of(src), prompt, BatchLayout.of(prompt))
    return [[(h.seq.tolist(), float(h.score)) for h in row] for row in out.hypotheses]


def _kw(beam: int) -> dict[str, object]:
    return {"beam_size": beam, "max_gen_len": (0.0, 8), "normalize_scores": True}


def test_patience_one_is_fairseq2s_search() -> None:
    rng = np.random.default_rng(0)
    table = {p: {t: float(x) for t, x in enumerate(rng.dirichlet(np.ones(6)))} for p in (BOS, A, B, C)}
    model = Markov(table)
    for beam in (1, 2, 4):
        stock = _decode(BeamSearchSeq2SeqGenerator(model, VOCAB, **_kw(beam)), n=2)  # type: ignore[arg-type]
        ours = _decode(PatientBeamSearchSeq2SeqGenerator(model, VOCAB, patience=1.0, **_kw(beam)), n=2)
        assert ours == stock


def test_patience_lets_the_better_longer_hypothesis_finish() -> None:
    model = Markov(TABLE)
    stock = _decode(BeamSearchSeq2SeqGenerator(model, VOCAB, **_kw(1)))[0]  # type: ignore[arg-type]
    assert [seq for seq, _ in stock] == [[A, EOS]]  # fairseq2: done after one finished hypothesis
    patient = _decode(PatientBeamSearchSeq2SeqGenerator(model, VOCAB, patience=3.0, **_kw(1)))[0]
    assert len(patient) == 3
    best_seq, best_score = patient[0]
    assert best_seq == [A, C, EOS]
    want = (math.log(0.9) + math.log(0.45) + math.log(0.99)) / 3  # per generated token, <eos> included
    assert best_score == pytest.approx(want, abs=1e-4)
    assert best_score > stock[0][1]
    assert [s for _, s in patient] == sorted((s for _, s in patient), reverse=True)


def test_fractional_patience_rounds_the_quota_up() -> None:
    gen = PatientBeamSearchSeq2SeqGenerator(Markov(TABLE), VOCAB, patience=1.5, **_kw(3))
    assert gen.quota == 5
    assert len(_decode(gen)[0]) == 5


def test_patience_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="patience"):
        PatientBeamSearchSeq2SeqGenerator(Markov(TABLE), VOCAB, patience=0.5, **_kw(2))
    with pytest.raises(GenerationError, match="beam_patience must be >= 1"):
        GenerationConfig(beam_patience=0.9).check()
