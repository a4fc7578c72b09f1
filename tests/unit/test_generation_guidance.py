"""Classifier-free guidance, one random generator per run and self-reranking (issue 18, section 2),
on a random tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tmt.generation.generator import GenerationConfig, Generator, Hypothesis
from tmt.generation.guidance import GuidanceError, guided_logits, stack_null_sources
from tmt.generation.rerank import pair_logprobs, rerank_batch
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
