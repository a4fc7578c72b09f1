"""Constrained decoding on a random tiny model: ranges, exact lengths, normalised scores,
batched == unbatched, fast path == generic path, and the error paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tmt.generation.constrained import LOCAL_EOS, RestrictedSeq2Seq, TargetSpace, has_fast_path
from tmt.generation.generator import (
    GenerationConfig,
    GenerationError,
    Generator,
    LengthLimit,
    LengthLimits,
)
from tmt.models.config import get_preset
from tmt.models.tmt import create_model
from tmt.vocab import BOS, EOS, JointVocab

torch.set_num_threads(1)

SIZES = {"text": 40, "speech": 30, "image": 48}
IMAGE_LEN = 8


@pytest.fixture(scope="module")
def vocab() -> JointVocab:
    return JointVocab.from_sizes(SIZES)


@pytest.fixture(scope="module")
def model(vocab: JointVocab) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(get_preset("tiny"), vocab).eval()


def _sources(n: int, modality: str, seed: int = 0, lo: int = 5, hi: int = 25) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, SIZES[modality], int(rng.integers(lo, hi))) for _ in range(n)]


def _gen(model: torch.nn.Module, vocab: JointVocab, **kw: object) -> Generator:
    return Generator(model, vocab, GenerationConfig(**kw), image_len=IMAGE_LEN)  # type: ignore[arg-type]


def test_model_takes_the_fast_path(model: torch.nn.Module) -> None:
    assert has_fast_path(model)


@pytest.mark.parametrize("strategy", ["beam", "greedy", "sample"])
def test_image_outputs_have_exact_token_count(model: torch.nn.Module, vocab: JointVocab, strategy: str) -> None:
    g = _gen(model, vocab, strategy=strategy, nbest=1 if strategy != "beam" else 5, seed=3)
    out = g.generate(_sources(4, "text"), "text", "image")
    for row in out:
        hyps = row["image"]
        assert hyps, "no hypothesis"
        for h in hyps:
            assert h.tokens.shape == (IMAGE_LEN,)
            assert h.tokens.min() >= 0 and h.tokens.max() < SIZES["image"]
            assert math.isfinite(h.score) and h.score <= 0


@pytest.mark.parametrize("tgt", ["text", "speech"])
def test_length_limits_and_target_range(model: torch.nn.Module, vocab: JointVocab, tgt: str) -> None:
    cfg = GenerationConfig(lengths=LengthLimits(**{tgt: LengthLimit(a=0.25, b=2, min_len=3)}), nbest=5)
    g = Generator(model, vocab, cfg)
    srcs = _sources(5, "image", lo=8, hi=40)
    out = g.generate(srcs, "image", tgt)
    for s, row in zip(srcs, out, strict=True):
        hi = max(3, math.floor(0.25 * len(s) + 2))
        for h in row[tgt]:
            assert 3 <= len(h.tokens) <= hi
            assert h.tokens.min() >= 0 and h.tokens.max() < SIZES[tgt]


def test_scores_are_normalised_over_target_slice(model: torch.nn.Module, vocab: JointVocab) -> None:
    """Recompute each hypothesis's log-probability with a full (non-incremental) forward pass and a
    softmax over the target slice + <eos> (banned before min_len, forced at max_len)."""
    cfg = GenerationConfig(lengths=LengthLimits(**{"text": LengthLimit(a=0.0, b=6, min_len=2)}), nbest=3)
    g = Generator(model, vocab, cfg, image_len=IMAGE_LEN)
    srcs = _sources(3, "speech", seed=1)
    out = g.generate(srcs, "speech", ["text", "image"])
    for s, row in zip(srcs, out, strict=True):
        for tgt, (lo, hi) in (("text", (2, 6)), ("image", (IMAGE_LEN, IMAGE_LEN))):
            start, end = vocab.range(tgt)
            for h in row[tgt]:
                body = torch.as_tensor(h.tokens) + start
                dec_in = torch.cat([torch.tensor([BOS[tgt]]), body])[None]
                src = torch.cat([torch.as_tensor(s) + vocab.range("speech")[0], torch.tensor([EOS])])[None]
                from fairseq2.nn import BatchLayout

                with torch.inference_mode():
                    logits = model(src, BatchLayout.of(src), dec_in, BatchLayout.of(dec_in))[0].float()
                total = 0.0
                steps = []
                for pos in range(len(body) + 1):
                    allowed = torch.zeros(vocab.size, dtype=torch.bool)
                    allowed[start:end] = True
                    allowed[EOS] = pos >= lo
                    if pos >= hi:  # forced <eos>: probability 1
                        steps.append(0.0)
                        continue
                    lp = torch.log_softmax(logits[pos].masked_fill(~allowed, -torch.inf), -1)
                    tok = int(body[pos]) if pos < len(body) else EOS
                    steps.append(float(lp[tok]))
                total = sum(steps)
                assert h.score == pytest.approx(total / (len(body) + 1), abs=1e-4)
                assert h.step_scores is not None
                np.testing.assert_allclose(h.step_scores, steps, atol=1e-4)


def test_batched_equals_unbatched(model: torch.nn.Module, vocab: JointVocab) -> None:
    srcs = _sources(5, "speech", seed=2, lo=4, hi=40)
    g = _gen(model, vocab, batch_size=16)
    batched = g.generate(srcs, "speech", ["text", "image"])
    for s, row in zip(srcs, batched, strict=True):
        single = g.generate([s], "speech", ["text", "image"])[0]
        for tgt in ("text", "image"):
            np.testing.assert_array_equal(row[tgt][0].tokens, single[tgt][0].tokens)
            assert row[tgt][0].score == pytest.approx(single[tgt][0].score, abs=1e-4)


def test_mixed_sources_and_small_batches_keep_input_order(model: torch.nn.Module, vocab: JointVocab) -> None:
    srcs = _sources(3, "text", seed=4) + _sources(3, "image", seed=5)
    mods = ["text"] * 3 + ["image"] * 3
    whole = _gen(model, vocab, batch_size=16).generate(srcs, mods, "speech")
    small = _gen(model, vocab, batch_size=2).generate(srcs, mods, "speech")
    for a, b, s, m in zip(whole, small, srcs, mods, strict=True):
        np.testing.assert_array_equal(a["speech"][0].tokens, b["speech"][0].tokens)
        alone = _gen(model, vocab).generate([s], m, "speech")[0]
        np.testing.assert_array_equal(a["speech"][0].tokens, alone["speech"][0].tokens)


def test_fast_path_matches_full_logit_path(model: torch.nn.Module, vocab: JointVocab) -> None:
    srcs = _sources(4, "image", seed=6)
    fast = _gen(model, vocab).generate(srcs, "image", ["text", "speech"])
    slow_g = _gen(model, vocab)
    slow_g.fast = False
    slow = slow_g.generate(srcs, "image", ["text", "speech"])
    for a, b in zip(fast, slow, strict=True):
        for t in ("text", "speech"):
            np.testing.assert_array_equal(a[t][0].tokens, b[t][0].tokens)
            assert a[t][0].score == pytest.approx(b[t][0].score, abs=1e-4)


def test_greedy_is_the_argmax_path(model: torch.nn.Module, vocab: JointVocab) -> None:
    [s] = _sources(1, "speech", seed=7)
    cfg = GenerationConfig(strategy="greedy", lengths=LengthLimits(**{"text": LengthLimit(a=0, b=5, min_len=1)}))
    [row] = Generator(model, vocab, cfg).generate([s], "speech", "text")
    space = TargetSpace.of(vocab, "text")
    wrapped = RestrictedSeq2Seq(model, space, torch.tensor([1]), torch.tensor([5]))
    from fairseq2.nn import BatchLayout

    src = torch.tensor(np.concatenate([vocab.to_joint("speech", s), [EOS]]))[None]
    seq = [3]  # local <bos>
    with torch.inference_mode():
        while True:
            t = torch.tensor(seq)[None]
            nxt = int(wrapped(src, BatchLayout.of(src), t, BatchLayout.of(t))[0, -1].argmax())
            if nxt == LOCAL_EOS:
                break
            seq.append(nxt)
    np.testing.assert_array_equal(row["text"][0].tokens, np.array(seq[1:]) - 4)


def test_sampling_is_reproducible_with_a_seed(model: torch.nn.Module, vocab: JointVocab) -> None:
    srcs = _sources(3, "text", seed=8)
    a = _gen(model, vocab, strategy="sample", seed=11, top_k=5).generate(srcs, "text", "speech")
    b = _gen(model, vocab, strategy="sample", seed=11, top_k=5).generate(srcs, "text", "speech")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["speech"][0].tokens, y["speech"][0].tokens)


def test_incremental_state_follows_beam_reordering(model: torch.nn.Module, vocab: JointVocab) -> None:
    """Rows with different per-row limits in one batch: each row keeps its own bound."""
    cfg = GenerationConfig(lengths=LengthLimits(**{"speech": LengthLimit(a=1.0, b=0, min_len=1)}), nbest=5)
    srcs = [np.arange(3) % 40, np.arange(9) % 40, np.arange(6) % 40]
    out = Generator(model, vocab, cfg).generate(srcs, "text", "speech")
    for s, row in zip(srcs, out, strict=True):
        assert all(1 <= len(h.tokens) <= len(s) for h in row["speech"])


# ---- error paths -------------------------------------------------------------------------------
def test_empty_source_is_named(model: torch.nn.Module, vocab: JointVocab) -> None:
    with pytest.raises(GenerationError, match="clip-7"):
        _gen(model, vocab).generate([np.array([1, 2]), np.array([], dtype=np.int64)], "speech", "text",
                                    names=["clip-6", "clip-7"])


def test_out_of_range_source_is_named(model: torch.nn.Module, vocab: JointVocab) -> None:
    with pytest.raises(GenerationError, match=r"clip-9.*speech ids"):
        _gen(model, vocab).generate([np.array([1, 999])], "speech", "text", names=["clip-9"])


def test_unknown_modality_and_missing_image_len(model: torch.nn.Module, vocab: JointVocab) -> None:
    with pytest.raises(GenerationError, match="unknown modality 'video'"):
        _gen(model, vocab).generate([np.array([1])], "speech", "video")
    with pytest.raises(GenerationError, match="tokens per image"):
        Generator(model, vocab).generate([np.array([1])], "speech", "image")
    with pytest.raises(GenerationError, match="decodes at most"):
        Generator(model, vocab, image_len=10_000).generate([np.array([1])], "speech", "image")


def test_bad_config_is_refused(model: torch.nn.Module, vocab: JointVocab) -> None:
    for kw in ({"beam_size": 0}, {"strategy": "viterbi"}, {"nbest": 6}, {"temperature": 0.0},
               {"lengths": {"text": LengthLimit(min_len=0)}}):
        with pytest.raises(GenerationError):
            Generator(model, vocab, GenerationConfig(**kw))  # type: ignore[arg-type]


def test_no_surviving_hypothesis_names_the_input(
    model: torch.nn.Module, vocab: JointVocab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fairseq2 returns empty hypothesis lists when constraints conflict (gotcha 3): we raise."""
    from fairseq2.generation import SequenceGeneratorOutput
    from fairseq2.generation.generator import GenerationCounters

    import tmt.generation.generator as gm

    class EmptyBeams:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def __call__(self, src: torch.Tensor, *a: object) -> SequenceGeneratorOutput:
            return SequenceGeneratorOutput([[] for _ in range(src.size(0))], GenerationCounters())

    monkeypatch.setattr(gm, "PatientBeamSearchSeq2SeqGenerator", EmptyBeams)
    with pytest.raises(GenerationError, match="utt-42: no text hypothesis survived"):
        _gen(model, vocab).generate([np.array([1, 2, 3])], "speech", "text", names=["utt-42"])


@pytest.mark.parametrize(("strategy", "want"), [("beam", (5, 2.5)), ("greedy", (1, 1.0))])
def test_beam_patience_reaches_beam_search_but_not_greedy(
    model: torch.nn.Module, vocab: JointVocab, monkeypatch: pytest.MonkeyPatch, strategy: str, want: tuple[int, float]
) -> None:
    """The configured patience goes to the beam search; greedy search keeps fairseq's rule, so it
    stays the argmax path (more finished hypotheses would let it pick a different one)."""
    import tmt.generation.generator as gm

    seen: list[tuple[int, float]] = []

    class Spy(gm.PatientBeamSearchSeq2SeqGenerator):  # type: ignore[misc]
        def __init__(self, *a: object, beam_size: int, patience: float, **k: object) -> None:
            seen.append((beam_size, patience))
            super().__init__(*a, beam_size=beam_size, patience=patience, **k)

    monkeypatch.setattr(gm, "PatientBeamSearchSeq2SeqGenerator", Spy)
    _gen(model, vocab, strategy=strategy, beam_patience=2.5).generate([np.array([1, 2, 3])], "speech", "text")
    assert seen == [want]


def test_nan_scores_raise_naming_the_batch(vocab: JointVocab) -> None:
    class NanModel(torch.nn.Module):
        max_source_seq_len = 64
        max_target_seq_len = 64

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, s, sl, t, tl, *, state_bag=None):  # type: ignore[no-untyped-def]
            return torch.full((t.size(0), t.size(1), vocab.size), float("nan"))

    with pytest.raises(GenerationError, match="clip-1"):
        Generator(NanModel(), vocab).generate([np.array([1, 2])], "speech", "text", names=["clip-1"])


def test_config_overrides_are_nested() -> None:
    from tmt.config import resolve

    cfg = resolve(GenerationConfig(), None, ["lengths.text.b=3", "strategy=greedy"])
    assert (cfg.lengths.text.a, cfg.lengths.text.b, cfg.strategy) == (0.5, 3, "greedy")
    assert cfg.lengths.speech == LengthLimits().speech


def _repeats(tokens: np.ndarray, n: int) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_no_repeat_ngram_blocks_loops_but_not_images(model: torch.nn.Module, vocab: JointVocab, strategy: str) -> None:
    srcs = _sources(6, "text", seed=5)
    lengths = LengthLimits(speech=LengthLimit(a=0, b=60, min_len=40))  # long outputs: an untrained model loops
    plain = _gen(model, vocab, strategy=strategy, seed=2, top_k=3, lengths=lengths).generate(srcs, "text", "speech")
    assert any(_repeats(r["speech"][0].tokens, 2) for r in plain), "fixture should loop without blocking"
    blocked = _gen(model, vocab, strategy=strategy, seed=2, top_k=3, lengths=lengths, speech_no_repeat_ngram_size=2)
    for r in blocked.generate(srcs, "text", "speech"):
        assert len(r["speech"][0].tokens) >= 40 and not _repeats(r["speech"][0].tokens, 2)
    # the text setting leaves speech targets alone (real unit sequences repeat short n-grams)
    text_only = _gen(model, vocab, strategy=strategy, seed=2, top_k=3, lengths=lengths, no_repeat_ngram_size=2)
    for x, y in zip(plain, text_only.generate(srcs, "text", "speech"), strict=True):
        np.testing.assert_array_equal(x["speech"][0].tokens, y["speech"][0].tokens)
    # image codes are exempt: the same images with and without the setting
    a = _gen(model, vocab, strategy="greedy").generate(srcs, "text", "image")
    b = _gen(model, vocab, strategy="greedy", no_repeat_ngram_size=2).generate(srcs, "text", "image")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"][0].tokens, y["image"][0].tokens)
    with pytest.raises(GenerationError, match="no_repeat_ngram_size"):
        _gen(model, vocab, no_repeat_ngram_size=-1).generate(srcs, "text", "speech")
