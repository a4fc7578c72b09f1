"""Classifier-free guidance, one random generator per run and self-reranking (issue 18, section 2;
speech targets: issue 19), on a random tiny model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from tmt.generation.generator import (
    GenerationConfig,
    GenerationError,
    Generator,
    Hypothesis,
    LengthLimit,
    LengthLimits,
)
from tmt.generation.guidance import GuidanceError, guided_logits, stack_null_sources
from tmt.generation.rerank import pair_logprobs, rerank_batch, rerank_directions
from tmt.generation.scoring import forced_logprobs
from tmt.models.config import get_preset
from tmt.models.tmt import TmtModel, create_model
from tmt.vocab import EOS, PAD, JointVocab

torch.set_num_threads(1)

SIZES = {"text": 40, "speech": 30, "image": 48}
IMAGE_LEN = 8


@pytest.fixture(scope="module")
def vocab() -> JointVocab:
    return JointVocab.from_sizes(SIZES)


def _model(vocab: JointVocab, null_prob: float) -> TmtModel:
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("tiny"), null_source_prob=null_prob)
    return create_model(cfg, vocab).eval()


@pytest.fixture(scope="module")
def plain(vocab: JointVocab) -> TmtModel:
    return _model(vocab, 0.0)


@pytest.fixture(scope="module")
def guided(vocab: JointVocab) -> TmtModel:
    return _model(vocab, 0.1)


def _sources(n: int, modality: str = "text", seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, SIZES[modality], int(rng.integers(4, 12))) for _ in range(n)]


def _gen(model: TmtModel, vocab: JointVocab, **kw: object) -> Generator:
    return Generator(model, vocab, GenerationConfig(**kw), image_len=IMAGE_LEN)  # type: ignore[arg-type]


def _tokens(out: list[dict[str, list[Hypothesis]]], tgt: str = "image") -> list[list[int]]:
    return [row[tgt][0].tokens.tolist() for row in out]


# ---- guidance ------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["sample", "beam"])
def test_guidance_zero_is_plain_conditional_decoding(plain: TmtModel, guided: TmtModel, vocab: JointVocab,
                                                     strategy: str) -> None:
    src = _sources(5)
    ref = _gen(plain, vocab, strategy=strategy, seed=7, top_k=8).generate(src, "text", "image")
    zero = _gen(guided, vocab, strategy=strategy, seed=7, top_k=8, guidance=0.0).generate(src, "text", "image")
    assert _tokens(ref) == _tokens(zero)  # same weights: bit-equal tokens
    assert [r["image"][0].score for r in ref] == [r["image"][0].score for r in zero]


def test_model_without_null_sources_refuses_guidance(plain: TmtModel, vocab: JointVocab) -> None:
    with pytest.raises(GuidanceError, match="null_source_prob"):
        _gen(plain, vocab, strategy="sample", guidance=2.0)


def test_guided_decoding_equals_the_mixed_logits_by_hand(guided: TmtModel, vocab: JointVocab) -> None:
    """Greedy guided decoding picks, at every step, the argmax of cond + S*(cond - uncond)
    computed from two separate teacher-forced passes (source and null source)."""
    scale = 1.5
    src = _sources(3)
    out = _gen(guided, vocab, strategy="greedy", guidance=scale).generate(src, "text", "image")
    start, _ = vocab.range("image")
    for s, row in zip(src, out, strict=True):
        toks = row["image"][0].tokens
        prefix = [vocab.bos("image"), *(toks[:-1] + start).tolist()]
        rows = [[*vocab.to_joint("text", s).tolist(), EOS], [vocab.bos("text"), EOS]]
        logits = []
        for r in rows:
            x = torch.tensor([r])
            enc, lay = guided.encode(x, _layout(x))
            y = torch.tensor([prefix])
            logits.append(guided.sliced_logits(guided.decode(enc, lay, y, _layout(y)), "image")[0].float())
        mixed = guided_logits(logits[0], logits[1], scale)
        # slice layout: <eos> first, then the image tokens; images never end early
        picked = mixed[:, 1:].argmax(-1)
        assert picked.tolist() == toks.tolist()


def _layout(x: torch.Tensor) -> object:
    from tmt.models.tmt import make_layout

    return make_layout(x, [x.size(1)] * x.size(0))


@pytest.mark.parametrize("strategy", ["sample", "beam"])
def test_guidance_changes_images_and_keeps_other_targets(guided: TmtModel, vocab: JointVocab, strategy: str) -> None:
    src = _sources(4)
    base = _gen(guided, vocab, strategy=strategy, seed=1, nbest=1).generate(src, "text", ["image", "speech"])
    g = _gen(guided, vocab, strategy=strategy, seed=1, nbest=1, guidance=3.0).generate(src, "text", ["image", "speech"])
    assert _tokens(base, "speech") == _tokens(g, "speech")  # guidance is for image targets only
    assert _tokens(base) != _tokens(g)
    for row in g:
        assert row["image"][0].tokens.shape == (IMAGE_LEN,)


def test_guided_logits_keep_masked_entries() -> None:
    cond = torch.tensor([[0.0, -torch.inf, 2.0]])
    unc = torch.tensor([[1.0, -torch.inf, 0.0]])
    out = guided_logits(cond, unc, 2.0)
    assert out[0, 1] == -torch.inf
    assert out[0, 0].item() == pytest.approx(-2.0) and out[0, 2].item() == pytest.approx(6.0)


def test_stack_null_sources_appends_one_null_row_per_source(vocab: JointVocab) -> None:
    seqs = torch.tensor([[50, 51, EOS], [60, EOS, PAD]])
    stacked, lens = stack_null_sources(seqs, [3, 2], vocab, ["text", "speech"])
    assert stacked.shape == (4, 3) and lens == [3, 2, 2, 2]
    assert stacked[2, :2].tolist() == [vocab.bos("text"), EOS]
    assert stacked[3, :2].tolist() == [vocab.bos("speech"), EOS]


# ---- one random generator per run ---------------------------------------------------
def test_one_rng_per_run_batches_differ_and_runs_repeat(plain: TmtModel, vocab: JointVocab) -> None:
    same = [_sources(1)[0]] * 4  # one source four times, one per batch
    kw = {"strategy": "sample", "seed": 5, "top_k": 40, "batch_size": 1}
    first = _tokens(_gen(plain, vocab, **kw).generate(same, "text", "image"))
    assert len({tuple(t) for t in first}) > 1  # batches no longer restart the random stream
    again = _tokens(_gen(plain, vocab, **kw).generate(same, "text", "image"))
    assert first == again  # the same seed gives the same whole run
    g = _gen(plain, vocab, **kw)
    split = _tokens(g.generate(same[:2], "text", "image")) + _tokens(g.generate(same[2:], "text", "image"))
    assert split == first  # the stream continues across calls of one run


# ---- self-reranking -----------------------------------------------------------------
def test_rerank_picks_the_best_combined_score(plain: TmtModel, vocab: JointVocab) -> None:
    g = _gen(plain, vocab, rerank=3)
    cands = [[Hypothesis(tokens=np.full(IMAGE_LEN, k), score=-1.0) for k in range(3)] for _ in range(2)]
    fwd = {0: [-1.0, -2.0, -0.5], 1: [-1.0, -1.0, -1.0]}
    rev = {0: [-3.0, -0.1, -3.0], 1: [-2.0, -0.5, -0.4]}
    # row 0: combined -4, -2.1, -3.5 -> candidate 1; row 1: -3, -1.5, -1.4 -> candidate 2

    def scorer(sources: list[np.ndarray], targets: list[np.ndarray], m: str) -> np.ndarray:
        out = []
        for s, t in zip(sources, targets, strict=True):
            if m == "image":  # forward: source row from its first token, candidate from its code
                out.append(fwd[int(s[0]) - 100][int(t[0]) - vocab.range("image")[0]])
            else:
                out.append(rev[int(t[0]) - 100][int(s[0]) - vocab.range("image")[0]])
        return np.array(out)

    srcs = [np.array([100, 7]), np.array([101, 7])]
    picked = rerank_batch(g, srcs, ["text", "text"], "image", cands, scorer=scorer)
    assert [int(p[0].tokens[0]) for p in picked] == [1, 2]
    assert picked[0][0].rerank_score == pytest.approx(-2.1)
    assert picked[1][0].rerank_score == pytest.approx(-1.4)


def test_pair_logprobs_match_forced_logprobs(plain: TmtModel, vocab: JointVocab) -> None:
    srcs = [vocab.to_joint("text", s) for s in _sources(3)]
    tgts = [vocab.to_joint("image", np.arange(k, k + IMAGE_LEN)) for k in range(3)]
    pairs = pair_logprobs(plain, srcs, tgts, "image", batch_size=2)
    full = forced_logprobs(plain, srcs, tgts, "image")
    assert np.allclose(pairs, np.diag(full), atol=1e-5)


@pytest.mark.parametrize("src_mod", ["text", "speech"])
def test_rerank_decodes_end_to_end(plain: TmtModel, vocab: JointVocab, src_mod: str) -> None:
    src = _sources(3, src_mod)
    out = _gen(plain, vocab, rerank=4, seed=2, top_k=8).generate(src, src_mod, ["image", "text"])
    for row in out:
        assert len(row["image"]) == 1 and row["image"][0].rerank_score is not None
        assert row["image"][0].tokens.shape == (IMAGE_LEN,)
        assert row["text"][0].rerank_score is None  # other targets decode as before


@pytest.mark.parametrize("scale", [0.0, 1.5])
def test_k_samples_encode_each_source_once(guided: TmtModel, vocab: JointVocab, scale: float,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """K samples per source run the encoder on each source (and its null source) once and repeat its
    output, and draw the same candidates as encoding all K copies."""
    src = _sources(3, "speech")  # different lengths: a padded batch
    kw = {"rerank": 6, "seed": 3, "top_k": 8, "guidance": scale, "rerank_forward": 0.0}
    rows: list[int] = []
    real = guided.encode

    def counting(seqs: torch.Tensor, layout: object) -> object:
        rows.append(seqs.size(0))
        return real(seqs, layout)  # type: ignore[arg-type]

    monkeypatch.setattr(guided, "encode", counting)
    halves = 2 if scale else 1
    once = _gen(guided, vocab, **kw).generate(src, "speech", "image")
    assert rows[0] == 3 * halves  # the generation's encoder pass; reranking's passes follow
    rows.clear()
    g = _gen(guided, vocab, **kw)
    monkeypatch.setattr(g, "_encode_once", lambda *a: None)  # the model encodes every fanned row itself
    each = g.generate(src, "speech", "image")
    assert rows[0] == 3 * 6 * halves
    assert _tokens(once) == _tokens(each)
    assert [r["image"][0].rerank_score for r in once] == pytest.approx([r["image"][0].rerank_score for r in each])


# ---- self-reranking of speech targets (issue 19): the beam's K best, the voice given, the text pivot ----
SHORT = LengthLimits(speech=LengthLimit(a=0.0, b=10, min_len=1))


@pytest.fixture(scope="module")
def voiced() -> tuple[TmtModel, JointVocab]:
    v = JointVocab.from_sizes(SIZES, voices=["flite:kal", "flite:slt"])
    return _model(v, 0.0), v


def _seqs(row: list[Hypothesis]) -> list[list[int]]:
    return [h.tokens.tolist() for h in row]


def test_speech_rerank_picks_the_best_combined_score(plain: TmtModel, vocab: JointVocab) -> None:
    g = _gen(plain, vocab, rerank=3, lengths=SHORT)
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
    beam = _gen(plain, vocab, beam_size=3, nbest=3, lengths=SHORT).generate(src, "text", "speech")
    reranked = _gen(plain, vocab, beam_size=3, nbest=3, rerank=3, lengths=SHORT).generate(src, "text", "speech")
    for b, r in zip(beam, reranked, strict=True):
        assert sorted(_seqs(r["speech"])) == sorted(_seqs(b["speech"]))  # the same candidates, reordered
        scores = [h.rerank_score for h in r["speech"]]
        assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
        assert b["speech"][0].rerank_score is None
    # a narrower beam is widened to the K candidates; one hypothesis is kept, from the beam of 3
    narrow = _gen(plain, vocab, beam_size=1, rerank=3, lengths=SHORT).generate(src, "text", "speech")
    for b, r in zip(reranked, narrow, strict=True):
        assert len(r["speech"]) == 1 and _seqs(r["speech"])[0] == _seqs(b["speech"])[0]


def test_sampled_speech_candidates_with_strategy_sample(plain: TmtModel, vocab: JointVocab) -> None:
    src = _sources(2)
    out = _gen(plain, vocab, strategy="sample", top_k=8, seed=3, rerank=4, lengths=SHORT).generate(src, "text", ["speech", "text"])
    again = _gen(plain, vocab, strategy="sample", top_k=8, seed=3, rerank=4, lengths=SHORT).generate(src, "text", ["speech", "text"])
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
    out = _gen(model, v, beam_size=2, rerank=2, rerank_speech=pivot, lengths=SHORT).generate(src, "image", "speech")
    beam = _gen(model, v, beam_size=2, nbest=2, lengths=SHORT).generate(src, "image", "speech")
    for row, b in zip(out, beam, strict=True):
        assert len(row["speech"]) == 1 and row["speech"][0].rerank_score is not None
        assert _seqs(row["speech"])[0] in _seqs(b["speech"])


# ---- the forward score's weight in reranking (issue 18, section 2) ----
def _table_scorer(vocab: JointVocab, fwd: dict[int, list[float]], rev: dict[int, list[float]],
                  calls: list[tuple[str, list[int]]]) -> object:
    """Forward scores by (source row, candidate code), reverse by (source row, candidate code);
    records which image codes each direction was given."""
    lo = vocab.range("image")[0]

    def scorer(sources: list[np.ndarray], targets: list[np.ndarray], m: str) -> np.ndarray:
        if m == "image":
            calls.append(("fwd", [int(t[0]) - lo for t in targets]))
            return np.array([fwd[int(s[0]) - 100][int(t[0]) - lo] for s, t in zip(sources, targets, strict=True)])
        calls.append(("rev", [int(s[0]) - lo for s in sources]))
        return np.array([rev[int(t[0]) - 100][int(s[0]) - lo] for s, t in zip(sources, targets, strict=True)])

    return scorer


def _three_candidates(rows: int) -> list[list[Hypothesis]]:
    return [[Hypothesis(tokens=np.full(IMAGE_LEN, k), score=-1.0) for k in range(3)] for _ in range(rows)]


def test_forward_weight_scales_the_forward_score_and_zero_skips_it(plain: TmtModel, vocab: JointVocab) -> None:
    fwd = {0: [-0.2, -3.0, -1.0], 1: [-1.0, -1.0, -1.0]}
    rev = {0: [-2.0, -0.1, -1.0], 1: [-2.0, -0.5, -0.4]}
    srcs = [np.array([100, 7]), np.array([101, 7])]
    picks = {}
    for w in (1.0, 0.5, 0.0):
        calls: list[tuple[str, list[int]]] = []
        out = rerank_batch(_gen(plain, vocab, rerank=3, rerank_forward=w), srcs, ["text", "text"], "image",
                           _three_candidates(2), scorer=_table_scorer(vocab, fwd, rev, calls))
        picks[w] = ([int(p[0].tokens[0]) for p in out], [p[0].rerank_score for p in out])
        assert any(c[0] == "fwd" for c in calls) == (w > 0)  # weight 0: no forward pass at all
    # row 0: w 1 -> -2.2, -3.1, -2.0 (cand 2); w 0.5 -> -2.1, -1.6, -1.5 (cand 2); w 0 -> cand 1
    assert picks[1.0][0] == [2, 2] and picks[1.0][1] == pytest.approx([-2.0, -1.4])
    assert picks[0.5][0] == [2, 2] and picks[0.5][1] == pytest.approx([-1.5, -0.9])
    assert picks[0.0][0] == [1, 2] and picks[0.0][1] == pytest.approx([-0.1, -0.4])


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_a_bad_forward_weight_is_refused(weight: float) -> None:
    with pytest.raises(GenerationError, match="rerank_forward must be a finite weight >= 0"):
        GenerationConfig(rerank_forward=weight).check()
