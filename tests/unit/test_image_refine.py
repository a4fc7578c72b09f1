"""Analysis-by-synthesis encoding of the text-aligned image tokenizer (`refine_steps`): never worse
than the encoder's codes, better on average, per image, and the CLI's option with its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.unit.test_image_aligned import make_data, tiny_card
from tests.unit.test_image_tokenizer import tiny_card as tiny_vq_card
from tmt.store.manifest import write_manifest
from tmt.tokenizers.base import TokenizerError, load_tokenizer
from tmt.tokenizers.image import ImageTokenizer, to_tensor
from tmt.tokenizers.image_aligned import AlignedImageTokenizer
from tmt.tokenizers.image_fit import pixel_objective

torch.set_num_threads(1)


def objective(tok: AlignedImageTokenizer, imgs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(N,) the fit's pixel objective of each image's decoded codes."""
    h, w = tok.grid
    with torch.no_grad():
        recon = tok.model.decode(torch.from_numpy(ids).view(-1, h, w))
    return pixel_objective(recon, to_tensor(imgs), tok.acfg.train).numpy()


def tokenizer_and_images(quantizer: str, seed: int = 0, n: int = 8) -> tuple[AlignedImageTokenizer, np.ndarray]:
    """A tiny tokenizer with random weights and images decoded from random codes: a perfect code
    exists for every image, and the untrained encoder does not find it. The EMA VQ's codebook is
    all zeros until its k-means initialisation on the first batch it quantizes (every code would
    decode to the same image), so it first encodes a batch of noise images."""
    torch.manual_seed(seed)
    tok = AlignedImageTokenizer(tiny_card(quantizer, fg_weight=3.0, edge_weight=1.0))
    if quantizer == "vq":
        rng = np.random.default_rng(seed + 2)
        tok.encode_array(rng.integers(0, 256, (n, *tok.image_size, 3), dtype=np.uint8))
    codes = torch.randint(0, tok.vocab_size, (n, 32), generator=torch.Generator().manual_seed(seed + 1))
    return tok, tok.decode_array(list(codes.numpy()))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("aligned")
    tokenizer_and_images("fsq")[0].save(d)
    return d


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_refined_codes_are_never_worse_and_better_on_average(quantizer: str) -> None:
    tok, imgs = tokenizer_and_images(quantizer)
    assert len({im.tobytes() for im in imgs}) == len(imgs)  # distinct targets, each with a perfect code
    a = tok.encode_array(imgs)
    tok.refine_steps = 15
    b = tok.encode_array(imgs)
    assert b.shape == a.shape == (8, 32) and b.dtype == np.int64
    assert b.min() >= 0 and b.max() < tok.vocab_size
    la, lb = objective(tok, imgs, a), objective(tok, imgs, b)
    assert np.all(lb <= la + 1e-6)  # the encoder's own codes are among the candidates
    # FSQ reaches 0.63 of the encoder's objective in 15 steps, the EMA VQ (straight through its
    # nearest-code rounding) 0.84; both improve every image
    assert lb.mean() < 0.9 * la.mean() and (a != b).any() and np.all(lb < la)


def test_zero_steps_is_the_encoder_and_images_are_refined_independently(saved: Path) -> None:
    _, imgs = tokenizer_and_images("fsq", seed=4, n=6)
    plain = load_tokenizer(saved)
    np.testing.assert_array_equal(load_tokenizer(saved, refine_steps=0).encode_array(imgs), plain.encode_array(imgs))
    batched = load_tokenizer(saved, refine_steps=8)
    assert isinstance(batched, AlignedImageTokenizer) and batched.refine_steps == 8
    # the decoder (hence the fingerprint and the vocabulary) is the same either way
    assert batched.fingerprint == plain.fingerprint and batched.vocab_size == plain.vocab_size
    one = load_tokenizer(saved, refine_steps=8)
    one.batch_size = 1
    a, b = batched.encode_array(imgs), one.encode_array(imgs)
    # per image, batching changes nothing but float rounding: the same objective
    np.testing.assert_allclose(objective(batched, imgs, a), objective(one, imgs, b), rtol=1e-3)


def test_bad_refine_settings_are_refused() -> None:
    with pytest.raises(TokenizerError, match="refine_steps must be >= 0"):
        AlignedImageTokenizer(tiny_card(), refine_steps=-1)
    with pytest.raises(TokenizerError, match="refine_lr > 0"):
        AlignedImageTokenizer(tiny_card(), refine_lr=0.0)


def _manifest(tmp_path: Path) -> Path:
    imgs, caps = make_data(4)
    (tmp_path / "images").mkdir()
    rows = []
    for i, (im, cs) in enumerate(zip(imgs, caps, strict=True)):
        Image.fromarray(im).save(tmp_path / "images" / f"{i}.png")
        rows.append({"id": str(i), "group": str(i), "split": "train", "image": f"images/{i}.png", "speech": None,
                     "text": cs[0]})
    m = tmp_path / "m.jsonl.gz"
    write_manifest(m, rows)
    return m


def test_cli_encodes_refined_and_names_what_cannot(saved: Path, tmp_path: Path) -> None:
    from tmt.cli import cli
    from tmt.store.token_store import TokenStore

    m = _manifest(tmp_path)
    run = CliRunner().invoke
    r = run(cli, ["tokenize", "image", "encode", "--tokenizer", str(saved), "--manifest", str(m),
                  "--store", str(tmp_path / "s"), "--refine-steps", "5"])
    assert r.exit_code == 0, r.output
    assert len(TokenStore(tmp_path / "s")) == 4
    vq_dir = tmp_path / "vq"
    ImageTokenizer(tiny_vq_card()).save(vq_dir)
    r = run(cli, ["tokenize", "all", "--image", str(vq_dir), "--manifest", str(m), "--store", str(tmp_path / "t"),
                  "--image-refine-steps", "5"])
    assert r.exit_code != 0 and "'image-vq' tokenizer" in r.output and "image-aligned" in r.output
    assert not (tmp_path / "t").exists()
    r = run(cli, ["tokenize", "image", "encode", "--tokenizer", str(saved), "--manifest", str(m),
                  "--store", str(tmp_path / "u"), "--refine-steps", "-2"])
    assert r.exit_code != 0 and "--refine-steps must be >= 0" in r.output
