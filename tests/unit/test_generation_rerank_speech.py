"""Self-reranking of speech targets (issue 19): the beam's K best kept by forward + reverse
score, the voice token given while scoring, and the text pivot between image and speech;
on a random tiny model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from tmt.generation.generator import (
    GenerationConfig,
    Generator,
    Hypothesis,
    LengthLimit,
    LengthLimits,
)
from tmt.generation.rerank import pair_logprobs, rerank_batch, rerank_directions
from tmt.generation.scoring import forced_logprobs
from tmt.models.config import get_preset
from tmt.models.tmt import TmtModel, create_model
from tmt.vocab import JointVocab

torch.set_num_threads(1)

SIZES = {"text": 40, "speech": 30, "image": 48}
IMAGE_LEN = 8
SHORT = LengthLimits(speech=LengthLimit(a=0.0, b=10, min_len=1))


def _model(vocab: JointVocab) -> TmtModel:
    torch.manual_seed(0)
    return create_model(dataclasses.replace(get_preset("tiny"), null_source_prob=0.0), vocab).eval()


@pytest.fixture(scope="module")
def vocab() -> JointVocab:
    return JointVocab.from_sizes(SIZES)


@pytest.fixture(scope="module")
def plain(vocab: JointVocab) -> TmtModel:
    return _model(vocab)


@pytest.fixture(scope="module")
def voiced() -> tuple[TmtModel, JointVocab]:
    v = JointVocab.from_sizes(SIZES, voices=["flite:kal", "flite:slt"])
    return _model(v), v


def _sources(n: int, modality: str = "text", seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, SIZES[modality], int(rng.integers(4, 9))) for _ in range(n)]


def _gen(model: TmtModel, vocab: JointVocab, **kw: object) -> Generator:
    cfg = GenerationConfig(lengths=SHORT, **kw)  # type: ignore[arg-type]
    return Generator(model, vocab, cfg, image_len=IMAGE_LEN)


def _seqs(row: list[Hypothesis]) -> list[list[int]]:
    return [h.tokens.tolist() for h in row]


def test_speech_rerank_picks_the_best_combined_score(plain: TmtModel, vocab: JointVocab) -> None:
    g = _gen(plain, vocab, rerank=3)
    cands = [[Hypothesis(tokens=np.array([k, 5, 6]), score=-1.0) for k in range(3)] for _ in range(2)]
    fwd = {0: [-0.2, -1.0, -0.9], 1: [-1.0, -1.2, -0.1]}
    rev = {0: [-2.0, -0.3, -0.5], 1: [-0.5, -0.2, -2.0]}
    # row 0: combined -2.2, -1.3, -1.4 -> candidate 1; row 1: -1.5, -1.4, -2.1 -> candidate 1
    s0 = vocab.range("speech")[0]

    def scorer(sources: Sequence[np.ndarray], targets: Sequence[np.ndarray], m: str) -> np.ndarray:
        if m == "speech":  # forward: the text source's row from its first token, the candidate from its first unit
            return np.array([fwd[int(s[0]) - 100][int(t[0]) - s0] for s, t in zip(sources, targets, strict=True)])
        assert m == "text"  # reverse: speech -> text explains the caption itself
        return np.array([rev[int(t[0]) - 100][int(s[0]) - s0] for s, t in zip(sources, targets, strict=True)])

    picked = rerank_batch(g, [np.array([100, 7]), np.array([101, 7])], ["text", "text"], "speech", cands, scorer=scorer)
    assert [int(p[0].tokens[0]) for p in picked] == [1, 1]
    assert [p[0].rerank_score for p in picked] == pytest.approx([-1.3, -1.4])


def test_rerank_directions_for_speech_targets() -> None:
    text, direct = GenerationConfig(rerank=2), GenerationConfig(rerank=2, rerank_speech="speech")
    assert rerank_directions(text, "text", "speech") == ["s2t"]
    assert rerank_directions(text, "image", "speech") == ["i2t", "s2t"]  # the caption decoded from the image
    assert rerank_directions(direct, "image", "speech") == ["s2i"]
    assert rerank_directions(text, "speech", "image") == ["s2t", "i2t"]  # unchanged for image targets
    assert rerank_directions(text, "image", "text") == []  # text targets are not reranked
    assert rerank_directions(GenerationConfig(), "text", "speech") == []


def test_speech_candidates_are_the_beams_best(plain: TmtModel, vocab: JointVocab) -> None:
    src = _sources(3)
    beam = _gen(plain, vocab, beam_size=3, nbest=3).generate(src, "text", "speech")
    reranked = _gen(plain, vocab, beam_size=3, nbest=3, rerank=3).generate(src, "text", "speech")
    for b, r in zip(beam, reranked, strict=True):
        assert sorted(_seqs(r["speech"])) == sorted(_seqs(b["speech"]))  # the same candidates, reordered
        scores = [h.rerank_score for h in r["speech"]]
        assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
        assert b["speech"][0].rerank_score is None
    # a narrower beam is widened to the K candidates; one hypothesis is kept, from the beam of 3
    narrow = _gen(plain, vocab, beam_size=1, rerank=3).generate(src, "text", "speech")
    for b, r in zip(reranked, narrow, strict=True):
        assert len(r["speech"]) == 1 and _seqs(r["speech"])[0] == _seqs(b["speech"])[0]


def test_sampled_speech_candidates_with_strategy_sample(plain: TmtModel, vocab: JointVocab) -> None:
    src = _sources(2)
    out = _gen(plain, vocab, strategy="sample", top_k=8, seed=3, rerank=4).generate(src, "text", ["speech", "text"])
    again = _gen(plain, vocab, strategy="sample", top_k=8, seed=3, rerank=4).generate(src, "text", ["speech", "text"])
    for row, row2 in zip(out, again, strict=True):
        assert len(row["speech"]) == 1 and row["speech"][0].rerank_score is not None
        assert _seqs(row["speech"]) == _seqs(row2["speech"])  # seeded: the same pick
        assert row["text"][0].rerank_score is None  # text targets decode as before


def test_pair_logprobs_give_the_voice_token_unscored(voiced: tuple[TmtModel, JointVocab]) -> None:
    model, v = voiced
    srcs = [v.to_joint("text", s) for s in _sources(3)]
    tgts = [v.to_joint("speech", np.arange(k, k + 6)) for k in range(3)]
    voice = v.voice_token()
    assert voice is not None
    pairs = pair_logprobs(model, srcs, tgts, "speech", batch_size=2, prefix=voice)
    assert np.allclose(pairs, np.diag(forced_logprobs(model, srcs, tgts, "speech")), atol=1e-5)
    plain = pair_logprobs(model, srcs, tgts, "speech")  # without the voice: another distribution
    assert not np.allclose(pairs, plain, atol=1e-4)


@pytest.mark.parametrize("pivot", ["text", "speech"])
def test_image_to_speech_reranks_end_to_end(voiced: tuple[TmtModel, JointVocab], pivot: str) -> None:
    model, v = voiced
    src = _sources(2, "image")
    out = _gen(model, v, beam_size=2, rerank=2, rerank_speech=pivot).generate(src, "image", "speech")
    beam = _gen(model, v, beam_size=2, nbest=2).generate(src, "image", "speech")
    for row, b in zip(out, beam, strict=True):
        assert len(row["speech"]) == 1 and row["speech"][0].rerank_score is not None
        assert _seqs(row["speech"])[0] in _seqs(b["speech"])
