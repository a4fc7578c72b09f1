"""`image_code_init`: image-token embeddings that start from the image tokenizer's code features
(FSQ levels, VQ codebook vectors), with its refusals and the training run that uses it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.test_image_aligned import tiny_card
from tests.unit.test_image_tokenizer import tiny_card as tiny_vq_card
from tests.unit.test_speech_units import _mfcc_card
from tmt import TmtError
from tmt.models.config import get_preset
from tmt.models.tmt import create_model
from tmt.tokenizers.image import ImageTokenizer
from tmt.tokenizers.image_aligned import AlignedImageTokenizer
from tmt.tokenizers.speech.tokenizer import SpeechTokenizer
from tmt.training.code_init import blend_code_rows, init_code_rows
from tmt.training.config import TrainConfig, train_preset
from tmt.training.synthetic import make_synthetic_store
from tmt.training.trainer import train
from tmt.vocab import JointVocab, TokenizerInfo

torch.set_num_threads(1)


def _square(features: np.ndarray) -> tuple[int, int, int, int]:
    """Ids of the FSQ codes (0,0,0), (1,1,0), (1,0,0), (0,1,0) in level space: a+b and c+d are the same sum of levels."""
    ids = {tuple(int(j) for j in np.flatnonzero(r)): i for i, r in enumerate(features)}
    return ids[(0, 5, 9)], ids[(1, 6, 9)], ids[(1, 5, 9)], ids[(0, 6, 9)]


def _vocab(tok: ImageTokenizer, path: Path | None, fingerprint: str | None = None) -> JointVocab:
    return JointVocab({
        "text": TokenizerInfo(name="text-tok", size=12, fingerprint="text-fp"),
        "image": TokenizerInfo(name=tok.name, size=tok.vocab_size, fingerprint=fingerprint or tok.fingerprint,
                               path=str(path) if path else None),
    })


@pytest.fixture(scope="module")
def fsq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fsq")
    torch.manual_seed(0)
    AlignedImageTokenizer(tiny_card("fsq")).save(d)  # levels [5, 4, 4]: 80 codes
    return d


def test_fsq_features_are_one_one_hot_block_per_level(fsq_dir: Path) -> None:
    tok = AlignedImageTokenizer.load(fsq_dir)
    f = tok.code_features()
    assert f.shape == (80, 5 + 4 + 4) and f.dtype == np.float32
    blocks = [f[:, :5], f[:, 5:9], f[:, 9:]]
    for block, n in zip(blocks, (5, 4, 4), strict=True):
        assert np.all(block.sum(1) == 1)  # one level per latent dimension
        assert len(np.unique(block.argmax(1))) == n
    assert len(np.unique(f, axis=0)) == 80  # every code id is a different tuple of levels
    # mixed radix: 80 / 5 codes share each level of the first dimension
    assert np.all(np.bincount(blocks[0].argmax(1)) == 16)


def test_vq_features_are_the_codebook(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tok = ImageTokenizer(tiny_vq_card())
    f = tok.code_features()
    assert f.shape == (32, 8)
    np.testing.assert_array_equal(f, tok.model.quantizer.embed.numpy())
    aligned = AlignedImageTokenizer(tiny_card("vq"))
    assert aligned.code_features().shape == (32, 8)


def test_blended_rows_add_over_levels_and_leave_other_rows(fsq_dir: Path) -> None:
    tok = AlignedImageTokenizer.load(fsq_dir)
    vocab = _vocab(tok, fsq_dir)
    s, e = vocab.range("image")
    torch.manual_seed(0)
    model = create_model(get_preset("tiny"), vocab)
    w = model.frontend.embed.weight
    before = w.detach().clone()
    blend_code_rows(model, vocab, tok.code_features(), 0.0, seed=0)
    assert torch.equal(w, before)
    blend_code_rows(model, vocab, tok.code_features(), 1.0, seed=0)
    rows = w.detach()[s:e]
    assert torch.equal(w.detach()[:s], before[:s]) and torch.equal(w.detach()[e:], before[e:])
    # fully structured rows are a sum of one vector per level: two codes that swap the levels of two
    # dimensions sum to the same as the other two corners of that square
    a, b, c, d = _square(tok.code_features())
    torch.testing.assert_close(rows[a] + rows[b], rows[c] + rows[d], atol=1e-5, rtol=0)
    assert not torch.allclose(rows[a], rows[b])
    torch.testing.assert_close(rows.pow(2).mean().sqrt(), before[s:e].pow(2).mean().sqrt(), rtol=1e-4, atol=0)


def test_init_refuses_another_tokenizer_and_a_missing_one(fsq_dir: Path, tmp_path: Path) -> None:
    tok = AlignedImageTokenizer.load(fsq_dir)
    model = create_model(get_preset("tiny"), _vocab(tok, fsq_dir))
    with pytest.raises(TmtError, match=r"not the one vocab\.json was built from.*image_tokenizer=DIR"):
        init_code_rows(model, _vocab(tok, fsq_dir, fingerprint="0" * 64), "image", 0.5, None, 0)
    with pytest.raises(TmtError, match=r"no image tokenizer at.*image_tokenizer=DIR"):
        init_code_rows(model, _vocab(tok, None), "image", 0.5, None, 0)
    with pytest.raises(TmtError, match="no image tokenizer"):
        init_code_rows(model, _vocab(tok, fsq_dir), "image", 0.5, str(tmp_path / "nowhere"), 0)
    small = create_model(get_preset("tiny"), _vocab(tok, fsq_dir))
    with pytest.raises(TmtError, match="describes 3 codes"):
        blend_code_rows(small, _vocab(tok, fsq_dir), np.eye(3, dtype=np.float32), 0.5, 0)
    with pytest.raises(TmtError, match=r"image_code_init must be in \[0, 1\]"):
        replace(TrainConfig(), image_code_init=1.5).validate()


def test_a_training_run_starts_from_the_code_rows(fsq_dir: Path, tmp_path: Path) -> None:
    tok = AlignedImageTokenizer.load(fsq_dir)
    sizes = {"text": 40, "speech": 30, "image": tok.vocab_size}
    vocab = JointVocab.from_sizes(sizes, fingerprints={"image": tok.fingerprint})
    vocab.save(tmp_path / "vocab.json")
    make_synthetic_store(tmp_path / "store", num_scenes=8, sizes=sizes, fingerprints={"image": tok.fingerprint})
    base = train_preset("tiny")
    cfg = replace(base, data=replace(base.data, vocab=str(tmp_path / "vocab.json"), stores=[str(tmp_path / "store")],
                                     max_tokens=300), max_steps=1, save_every=1, plot=False,
                  optim=replace(base.optim, lr=0.0), image_code_init=1.0, image_tokenizer=str(fsq_dir))
    train(cfg, tmp_path / "exp")
    w = torch.load(tmp_path / "exp" / "model.pt", weights_only=True)
    rows = next(v for k, v in w.items() if k.endswith("embed.weight"))
    s = vocab.range("image")[0]
    a, b, c, d = (s + i for i in _square(tok.code_features()))
    torch.testing.assert_close(rows[a] + rows[b], rows[c] + rows[d], atol=1e-5, rtol=0)  # lr 0: as initialised
    # a vocabulary (and store) made by another image tokenizer than the one named: refused before training
    other = {"image": "1" * 64}
    JointVocab.from_sizes(sizes, fingerprints=other).save(tmp_path / "vocab2.json")
    make_synthetic_store(tmp_path / "store2", num_scenes=8, sizes=sizes, fingerprints=other)
    cfg2 = replace(cfg, data=replace(cfg.data, vocab=str(tmp_path / "vocab2.json"), stores=[str(tmp_path / "store2")]))
    with pytest.raises(TmtError, match=r"not the one vocab\.json was built from"):
        train(cfg2, tmp_path / "exp2")


def test_speech_units_start_from_their_standardised_centroids(tmp_path: Path) -> None:
    """`speech_code_init`: the centroids, each dimension standardised, projected: a centroid halfway
    between two others starts halfway between their rows; the saved tokenizer is read from vocab.json's path."""
    rng = np.random.default_rng(0)
    c = rng.normal(size=(16, 6)) * np.array([1, 10, 100, 0.1, 1, 5])
    c[2] = (c[0] + c[1]) / 2
    tok = SpeechTokenizer(_mfcc_card(), c.astype(np.float32))
    f = tok.code_features()
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-4)
    tok.save(tmp_path / "speech")
    vocab = JointVocab({
        "text": TokenizerInfo(name="text-tok", size=12, fingerprint="text-fp"),
        "speech": TokenizerInfo(name=tok.name, size=16, fingerprint=tok.fingerprint, path=str(tmp_path / "speech")),
    })
    torch.manual_seed(0)
    model = create_model(get_preset("tiny"), vocab)
    before = model.frontend.embed.weight.detach().clone()
    init_code_rows(model, vocab, "speech", 1.0, None, seed=0)
    s, e = vocab.range("speech")
    rows = model.frontend.embed.weight.detach()[s:e]
    torch.testing.assert_close(rows[2], (rows[0] + rows[1]) / 2, atol=1e-5, rtol=0)
    assert torch.equal(model.frontend.embed.weight.detach()[:s], before[:s])
    with pytest.raises(TmtError, match=r"speech_code_init must be in \[0, 1\]"):
        replace(TrainConfig(), speech_code_init=-0.1).validate()
