"""Reranking image candidates by the image tokenizer's own caption alignment (`rerank_align`):
the combined score, where the caption comes from, the refusals, and the tokenizer's cosine."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.unit.test_image_aligned import make_data, tiny_card
from tmt.generation.generator import GenerationConfig, GenerationError, Generator, Hypothesis
from tmt.generation.rerank import pair_logprobs, rerank_batch
from tmt.generation.translator import TranslateError, Translator
from tmt.models.config import get_preset
from tmt.models.tmt import TmtModel, create_model
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.image_aligned import AlignedImageTokenizer
from tmt.vocab import JointVocab, TokenizerInfo

torch.set_num_threads(1)

SIZES = {"text": 40, "speech": 30, "image": 48}
IMAGE_LEN = 8


@pytest.fixture(scope="module")
def vocab() -> JointVocab:
    return JointVocab({m: TokenizerInfo(name=f"stand-in-{m}", size=n, fingerprint=f"fp-{m}") for m, n in SIZES.items()})


@pytest.fixture(scope="module")
def model(vocab: JointVocab) -> TmtModel:
    torch.manual_seed(0)
    return create_model(get_preset("tiny"), vocab).eval()


class StandInText:
    """Words w0..w39 <-> ids 0..39."""

    modality, vocab_size, fingerprint, name = "text", SIZES["text"], "fp-text", "stand-in-text"

    def encode(self, batch: Sequence[str]) -> list[np.ndarray]:
        return [np.array([int(w[1:]) for w in t.split()]) for t in batch]

    def decode(self, tokens: Sequence[np.ndarray]) -> list[str]:
        return [" ".join(f"w{int(i)}" for i in t) for t in tokens]


class StandInImage:
    """An image tokenizer whose caption alignment is the first code / 100, recording what it was asked."""

    modality, vocab_size, fingerprint, name = "image", SIZES["image"], "fp-image", "stand-in-image"
    tokens_per_image = IMAGE_LEN
    caption_judge = "code head"

    def __init__(self) -> None:
        self.asked: list[tuple[list[int], str]] = []

    def caption_alignment(self, codes: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        self.asked += [(np.asarray(c).tolist(), t) for c, t in zip(codes, captions, strict=True)]
        return np.array([int(c[0]) / 100 for c in codes])

    def decode(self, tokens: Sequence[np.ndarray]) -> list[Any]:
        return [None for _ in tokens]


class PlainImage(StandInImage):
    """An image tokenizer without a caption judge (an image-vq card with no judge fitted, say)."""

    caption_judge = None  # type: ignore[assignment]


def _gen(model: TmtModel, vocab: JointVocab, **kw: Any) -> Generator:
    return Generator(model, vocab, GenerationConfig(**kw), image_len=IMAGE_LEN)


def _candidates(rows: int) -> list[list[Hypothesis]]:
    return [[Hypothesis(tokens=np.full(IMAGE_LEN, k), score=-1.0) for k in (10, 20, 30)] for _ in range(rows)]


def _recording_aligner(seen: list[tuple[list[int], list[int]]]) -> Any:
    """Alignment = first code / 100; records the (image, caption) local ids it was given."""

    def aligner(images: Sequence[np.ndarray], captions: Sequence[np.ndarray]) -> np.ndarray:
        seen.extend((np.asarray(i).tolist(), np.asarray(c).tolist()) for i, c in zip(images, captions, strict=True))
        return np.array([int(i[0]) / 100 for i in images])

    return aligner


def test_the_alignment_term_is_added_with_its_weight_and_reads_the_caption(model: TmtModel, vocab: JointVocab) -> None:
    lo = vocab.range("image")[0]
    rev = {10: -1.0, 20: -1.05, 30: -1.25}  # by candidate code; alignment adds code / 100 x weight

    def scorer(sources: list[np.ndarray], targets: list[np.ndarray], m: str) -> np.ndarray:
        assert m == "text"  # forward weight 0: only the reverse direction is asked
        return np.array([rev[int(s[0]) - lo] for s in sources])

    srcs = [vocab.to_joint("text", np.array([3, 4])), vocab.to_joint("text", np.array([5]))]
    picks = {}
    for a in (0.0, 1.0, 10.0):
        g = _gen(model, vocab, rerank=3, rerank_forward=0.0, rerank_align=a)
        seen: list[tuple[list[int], list[int]]] = []
        g.aligner = _recording_aligner(seen)
        out = rerank_batch(g, srcs, ["text", "text"], "image", _candidates(2), scorer=scorer)
        picks[a] = [(int(r[0].tokens[0]), r[0].rerank_score) for r in out]
        # the aligner sees tokenizer-local ids: the candidates' codes and each row's own caption
        assert seen == ([] if a == 0 else [([k] * IMAGE_LEN, cap) for cap in ([3, 4], [5]) for k in (10, 20, 30)])
    assert picks[0.0] == [(10, pytest.approx(-1.0))] * 2
    assert picks[1.0] == [(20, pytest.approx(-0.85))] * 2  # -0.9, -0.85, -0.95
    assert picks[10.0] == [(30, pytest.approx(1.75))] * 2


def test_alignment_needs_an_aligner_and_a_caption(model: TmtModel, vocab: JointVocab) -> None:
    def scorer(sources: list[np.ndarray], targets: list[np.ndarray], m: str) -> np.ndarray:
        return np.zeros(len(sources))

    text = [vocab.to_joint("text", np.array([3]))]
    with pytest.raises(GenerationError, match="image-aligned card"):
        rerank_batch(_gen(model, vocab, rerank=3, rerank_align=1.0), text, ["text"], "image", _candidates(1),
                     scorer=scorer)
    g = _gen(model, vocab, rerank=3, rerank_align=1.0, rerank_speech="speech")
    g.aligner = lambda images, captions: np.zeros(len(images))
    speech = [vocab.to_joint("speech", np.array([1, 2, 3]))]
    with pytest.raises(GenerationError, match=r"text pivot \(rerank_speech: text\)"):
        rerank_batch(g, speech, ["speech"], "image", _candidates(1), scorer=scorer)


@pytest.mark.parametrize(("kw", "message"), [
    ({"rerank": 4, "rerank_align": -1.0}, "rerank_align must be a finite weight >= 0"),
    ({"rerank": 4, "rerank_align": float("nan")}, "rerank_align must be a finite weight >= 0"),
    ({"rerank": 0, "rerank_align": 1.0}, "give rerank K > 0 too"),
])
def test_bad_alignment_settings_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(GenerationError, match=message):
        GenerationConfig(**kw).check()


def test_translator_scores_candidates_against_the_decoded_caption(model: TmtModel, vocab: JointVocab) -> None:
    image = StandInImage()
    cfg = GenerationConfig(rerank=4, rerank_forward=0.0, rerank_align=2.0, seed=1, top_k=8, nbest=4)
    tr = Translator(model, vocab, tokenizers={"text": StandInText(), "image": image}, config=cfg)
    [r] = tr.translate(["w3 w7"], src="text", tgt="image", detokenize=False)
    assert {t for _, t in image.asked} == {"w3 w7"} and len(image.asked) == 4
    caption = vocab.to_joint("text", np.array([3, 7]))
    for h in r.nbest:  # every kept candidate: reverse score + 2 x the tokenizer's alignment
        rev = pair_logprobs(model, [vocab.to_joint("image", h.tokens)], [caption], "text")[0]
        assert h.rerank_score == pytest.approx(rev + 2.0 * int(h.tokens[0]) / 100, abs=1e-5)
    scores = [h.rerank_score for h in r.nbest]
    assert scores == sorted(scores, reverse=True)


def test_translator_refuses_alignment_without_an_aligned_image_tokenizer(model: TmtModel, vocab: JointVocab) -> None:
    cfg = GenerationConfig(rerank=2, rerank_align=1.0, seed=1)
    tr = Translator(model, vocab, tokenizers={"text": StandInText(), "image": PlainImage()}, config=cfg)
    with pytest.raises(TranslateError, match=r"--rerank-align 1.0 .* 'stand-in-image' does not have .* fit-judge.* --rerank-align 0"):
        tr.translate(["w3"], src="text", tgt="image", detokenize=False)


def test_aligned_tokenizer_cosine_is_the_contrastive_terms_cosine() -> None:
    tok = AlignedImageTokenizer(tiny_card())
    imgs, caps = make_data(6)
    captions = [c[0] for c in caps]
    codes = list(tok.encode_array(imgs))
    got = tok.caption_alignment(codes, captions)
    assert got.shape == (6,) and np.all(np.abs(got) <= 1 + 1e-6)
    from tmt.models.aligned_vq import caption_bytes

    m = tok.model
    with torch.no_grad():  # the same embeddings the fit's InfoNCE compares, from the images themselves
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        a = torch.nn.functional.normalize(m(x).image_embedding, dim=-1)
        b = torch.nn.functional.normalize(m.text(caption_bytes(captions, m.cfg.max_caption_bytes)), dim=-1)
    np.testing.assert_allclose(got, (a * b).sum(-1).numpy(), atol=1e-5)
    # another caption per image gives other numbers; a count mismatch and bad ids are refused
    assert not np.allclose(got, tok.caption_alignment(codes, captions[::-1]))
    with pytest.raises(TokenizerError, match="6 code sequences for 5 captions"):
        tok.caption_alignment(codes, captions[:5])
    with pytest.raises(TokenizerError, match="ids must be in"):
        tok.caption_alignment([np.full_like(codes[0], tok.vocab_size)], ["x"])


def test_cli_takes_the_alignment_weight() -> None:
    from tmt.cli import cli

    r = CliRunner().invoke(cli, ["translate", "-m", "unused", "--to", "image", "--rerank", "8", "--rerank-align", "0.5",
                                 "--dump-config"])
    assert r.exit_code == 0, r.output
    assert "rerank_align: 0.5" in r.output
    r = CliRunner().invoke(cli, ["translate", "-m", "unused", "--to", "image", "--rerank-align", "0.5", "--dump-config"])
    assert r.exit_code != 0 and "give rerank K > 0 too" in r.output


def test_back_translation_hands_the_image_generator_the_tokenizers_alignment(model: TmtModel, vocab: JointVocab) -> None:
    import tmt.backtranslation as bt
    from tmt.backtranslation import BacktranslateConfig

    class NoImages:  # a store without image rows: the image length comes from the tokenizer
        streams: dict[str, int] = {}

    image = StandInImage()
    tr = Translator(model, vocab, tokenizers={"text": StandInText(), "image": image})
    gens = bt._make_generator(BacktranslateConfig(rerank=2, rerank_align=0.5), tr, NoImages())  # type: ignore[arg-type]
    img, txt = gens.for_target("image"), gens.for_target("text")
    assert img.config.rerank_align == 0.5 and txt.config.rerank_align == 0.0 and txt.aligner is None
    assert img.aligner is not None
    np.testing.assert_allclose(img.aligner([np.full(IMAGE_LEN, 7)], [np.array([1, 2])]), [0.07])
    assert image.asked == [([7] * IMAGE_LEN, "w1 w2")]
    plain = Translator(model, vocab, tokenizers={"text": StandInText(), "image": PlainImage()})
    with pytest.raises(TranslateError, match="does not have"):
        bt._make_generator(BacktranslateConfig(rerank=2, rerank_align=0.5), plain, NoImages())  # type: ignore[arg-type]


def test_a_speech_source_is_judged_against_the_caption_the_model_hears(model: TmtModel, vocab: JointVocab) -> None:
    image = StandInImage()
    cfg = GenerationConfig(rerank=3, rerank_forward=0.0, rerank_align=1.0, seed=1, top_k=8)
    tr = Translator(model, vocab, tokenizers={"text": StandInText(), "image": image}, config=cfg)
    speech = np.array([1, 2, 3, 4, 5])
    [r] = tr.translate_tokens([speech], src="speech", tgt="image", detokenize=False)
    # the pivot: the caption the model's speech->text beam decodes, plain (no reranking, no alignment)
    pivot = Generator(model, vocab, GenerationConfig(strategy="beam", nbest=1))
    caption = pivot.generate([speech], "speech", "text")[0]["text"][0].tokens
    heard = StandInText().decode([caption])[0]
    assert len(image.asked) == 3 and {t for _, t in image.asked} == {heard}
    rev = pair_logprobs(model, [vocab.to_joint("image", r.tokens)], [vocab.to_joint("text", caption)], "text")[0]
    assert r.nbest[0].rerank_score == pytest.approx(rev + int(r.tokens[0]) / 100, abs=1e-5)
