"""The text-aligned image tokenizer: shapes, round trip, alignment term, resumable fit, fingerprint, CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tmt.core.device import autocast
from tmt.models.aligned_vq import AlignedVQ, caption_bytes
from tmt.tokenizers.base import TokenizerError, load_tokenizer
from tmt.tokenizers.image_aligned import AlignedImageTokenizer, parse_card
from tmt.tokenizers.image_aligned_fit import fit_aligned_tokenizer

torch.set_num_threads(1)

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 230), "yellow": (230, 220, 40)}


QUERIES = {"layout": "queries", "factor": 4, "num_queries": 6, "query_dim": 16, "query_layers": 1}
"""The 1-D layout on the tiny card: a 4x4 feature map read by 6 learned queries."""


def tiny_card(quantizer: str = "fsq", model: dict[str, Any] | None = None, **train: Any) -> dict[str, Any]:
    t = {"steps": 20, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "sample_every": 10, "checkpoint_every": 10,
         "usage_images": 16, "contrastive_weight": 0.5}
    t.update(train)
    m = {"image_size": 16, "factor": [4, 2], "channels": [8, 16], "num_res_blocks": 1, "code_dim": 8,
         "quantizer": quantizer, "fsq_levels": [5, 4, 4], "codebook_size": 32, "embed_dim": 16,
         "text_dim": 16, "max_caption_bytes": 24}
    m.update(model or {})
    return {"class": "image-aligned", "name": "tiny-aligned", "model": m, "train": t}


def make_data(n: int = 16, size: int = 16, seed: int = 0) -> tuple[np.ndarray, list[list[str]]]:
    """Coloured squares on white, each with two captions naming the colour and the side."""
    rng = np.random.default_rng(seed)
    imgs = np.full((n, size, size, 3), 255, np.uint8)
    caps = []
    names = list(COLOURS)
    for i in range(n):
        c = names[i % len(names)]
        left = (i // len(names)) % 2 == 0  # the first 8 images: every colour x side once
        x = int(rng.integers(0, 3)) if left else int(rng.integers(size // 2, size - 6))
        y = int(rng.integers(0, size - 6))
        imgs[i, y:y + 6, x:x + 6] = COLOURS[c]
        side = "left" if left else "right"
        caps.append([f"a {c} square on the {side}", f"{side}: one {c} box"])
    return imgs, caps


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_encode_decode_shapes_and_round_trip(quantizer: str) -> None:
    torch.manual_seed(0)
    tok = AlignedImageTokenizer(tiny_card(quantizer))
    imgs, _ = make_data(6)
    ids = tok.encode(list(imgs))
    assert tok.tokens_per_image == 32 and tok.grid == (4, 8)
    assert tok.vocab_size == (80 if quantizer == "fsq" else 32)
    assert all(a.shape == (32,) and a.dtype == np.int64 for a in ids)
    assert all(a.min() >= 0 and a.max() < tok.vocab_size for a in ids)
    out = tok.decode_array(ids)
    assert out.shape == (6, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, tok.decode_array(ids))  # decoding is deterministic
    np.testing.assert_array_equal(np.stack(ids), np.stack(tok.encode(list(imgs))))
    # decode(encode(x)) then encode again: the codes of a decoded image are stable under a re-run
    np.testing.assert_array_equal(tok.decode_array(tok.encode(list(out))), tok.decode_array(tok.encode(list(out))))
    with pytest.raises(TokenizerError, match="exactly 32"):
        tok.decode([np.zeros(31, np.int64)])
    with pytest.raises(TokenizerError, match="ids must be in"):
        tok.decode([np.full(32, tok.vocab_size, np.int64)])


def test_queries_layout_shapes_round_trip_and_whole_image_tokens() -> None:
    torch.manual_seed(0)
    tok = AlignedImageTokenizer(tiny_card(model=QUERIES))
    imgs, _ = make_data(5)
    ids = tok.encode(list(imgs))
    assert tok.tokens_per_image == 6 and tok.grid == (1, 6) and tok.vocab_size == 80
    assert all(a.shape == (6,) for a in ids)
    out = tok.decode_array(ids)
    assert out.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(np.stack(ids), np.stack(tok.encode(list(imgs))))
    with pytest.raises(TokenizerError, match="exactly 6"):
        tok.decode([np.zeros(32, np.int64)])
    # a grid token sees only its neighbourhood; each 1-D token reads the whole image
    for layout in (QUERIES, {}):
        m = AlignedVQ(parse_card(tiny_card(model=layout)).model)
        x = torch.randn(1, 3, 16, 16, requires_grad=True)
        m._latents(x)[:, 0].sum().backward()  # the first token (grid: the top-left cell)
        assert x.grad is not None
        far = float(x.grad[..., 12:].abs().sum())  # the image's right quarter
        assert (far > 0) == bool(layout), (layout, far)


def test_card_limits_tokens_and_names_problems() -> None:
    card = tiny_card()
    card["model"]["factor"] = [2, 2]  # 8x8 = 64 tokens
    with pytest.raises(TokenizerError, match="max_tokens=32"):
        parse_card(card)
    card = tiny_card()
    card["class"] = "image-vq"
    with pytest.raises(TokenizerError, match="expected 'image-aligned'"):
        parse_card(card)
    with pytest.raises(TokenizerError, match=r"train\.augment is not supported"):
        parse_card(tiny_card(augment=True))
    with pytest.raises(TokenizerError, match="max_tokens=32"):
        parse_card(tiny_card(model=QUERIES | {"num_queries": 33}))
    with pytest.raises(TokenizerError, match="query_dim divisible by 4"):
        parse_card(tiny_card(model=QUERIES | {"query_dim": 18}))


@pytest.mark.parametrize("layout", ["grid", "queries"])
def test_contrastive_term_decreases_on_fixed_batch(layout: str) -> None:
    torch.manual_seed(0)
    model = AlignedVQ(parse_card(tiny_card(model=QUERIES if layout == "queries" else {})).model)
    imgs, caps = make_data(8)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    text = caption_bytes([c[0] for c in caps], 24)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3 if layout == "grid" else 1e-3)  # transformers: lower
    losses = []
    # the fitting loss: reconstruction spreads the codes, InfoNCE aligns them (after ~100 steps
    # at chance level while both sides start near-constant)
    for _ in range(150):
        o = model(x)
        nce = model.contrastive_loss(o.image_embedding, text)
        loss = (o.recon - x).abs().mean() + nce
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(nce.detach()))
    assert losses[0] > 0.9 * np.log(8)  # chance level at the start
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses


VARIANTS = {
    "plain": {},
    # the 1-D layout, a continuous warm-up that ends before the cut (step 10), hard negatives and the
    # patch-GAN from step 5 (its discriminator must resume too)
    "queries-warmup-negatives-gan": {"model": QUERIES, "warmup_continuous": 0.3, "hard_negatives": True,
                                     "gan_weight": 0.1, "gan_start": 5},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fit_resume_equals_continuing_and_fingerprint(tmp_path: Path, variant: str) -> None:
    imgs, caps = make_data(16)
    opts = dict(VARIANTS[variant])

    def card(**extra: Any) -> dict[str, Any]:
        return tiny_card(**(opts | extra))

    full = fit_aligned_tokenizer(card(), imgs, caps, tmp_path / "full", progress=False)

    class Stop(Exception):
        pass

    def interrupt(step: int, _: dict[str, float]) -> None:
        if step == 10:
            raise Stop

    with pytest.raises(Stop):
        fit_aligned_tokenizer(card(), imgs, caps, tmp_path / "cut", progress=False, on_step=interrupt)
    assert (tmp_path / "cut" / "checkpoints" / "last.pt").is_file()
    resumed = fit_aligned_tokenizer(card(), imgs, caps, tmp_path / "cut", progress=False)
    assert resumed.stats["steps"] == full.stats["steps"] == 20
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.fingerprint == full.fingerprint
    info = json.loads((tmp_path / "full" / "tokenizer.json").read_text())
    assert info["class"] == "image-aligned" and info["fingerprint"] == full.fingerprint
    assert info["tokens_per_image"] == (6 if opts else 32) and 0 <= info["stats"]["usage"]["entropy_bits"] <= np.log2(80)
    assert opts or info["stats"]["usage"]["entropy_bits"] > 0  # 20 steps: the plain grid uses several codes
    loaded = load_tokenizer(tmp_path / "full")
    assert isinstance(loaded, AlignedImageTokenizer) and loaded.fingerprint == full.fingerprint
    np.testing.assert_array_equal(np.stack(loaded.encode(list(imgs))), np.stack(full.encode(list(imgs))))
    with pytest.raises(TokenizerError, match="different card"):
        fit_aligned_tokenizer(card(lr=1e-3), imgs, caps, tmp_path / "full", progress=False)


def test_compile_without_a_compiler_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imgs, caps = make_data(16)
    monkeypatch.setenv("CXX", "no-such-cxx")
    with pytest.raises(TokenizerError, match=r"no-such-cxx.*train\.compile=false"):
        fit_aligned_tokenizer(tiny_card(compile=True), imgs, caps, tmp_path / "t", progress=False)
    assert not (tmp_path / "t").exists()  # refused before anything is written


def test_compiled_fit_matches_eager(tmp_path: Path) -> None:
    imgs, caps = make_data(16)
    torch.manual_seed(0)
    model = AlignedVQ(parse_card(tiny_card()).model)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def grads(forward: Any) -> list[torch.Tensor]:
        o = forward(x)
        loss = (o.recon - x).abs().mean() + o.image_embedding.square().mean()
        return list(torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True,
                                        materialize_grads=True))

    for a, b in zip(grads(model), grads(torch.compile(model)), strict=True):  # fused kernels: rounding only
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    graphs = {}
    for name, extra in (("eager", {}), ("compiled", {"compile": True})):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        fit_aligned_tokenizer(tiny_card(steps=3, **extra), imgs, caps, tmp_path / name, progress=False,
                              on_step=lambda _, m, name=name: losses[name].append(m["loss"]))
        graphs[name] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs["eager"] == 0 < graphs["compiled"]  # the fit's forward went through dynamo
    np.testing.assert_allclose(losses["compiled"], losses["eager"], rtol=1e-3)
    assert json.loads((tmp_path / "compiled" / "tokenizer.json").read_text())["stats"]["steps"] == 3


def test_continuous_warmup_is_fsq_without_rounding() -> None:
    torch.manual_seed(0)
    model = AlignedVQ(parse_card(tiny_card()).model)
    fsq = model.quantizer
    fsq.project_out = torch.nn.Identity()  # compare the bounded latents themselves
    seq = torch.randn(4, 32, 8) * 2
    half_width = (fsq._levels // 2).float()
    with torch.no_grad():
        model.eval()
        cont = model._continuous(seq)
        quant, _, _ = model._quantize(seq)
        model.train()  # in training: plus uniform noise of at most half a step
        noisy = model._continuous(seq)
    torch.testing.assert_close(torch.round(cont * half_width) / half_width, quant)
    assert not torch.equal(cont, quant)  # but the decoder sees the unrounded values
    assert float(((noisy - cont) * half_width).abs().max()) <= 0.5 and not torch.equal(noisy, cont)
    fresh = AlignedVQ(parse_card(tiny_card()).model)
    out = fresh(torch.zeros(2, 3, 16, 16), quantize=False)
    assert out.recon.shape == (2, 3, 16, 16) and out.indices.abs().sum() == 0


def test_word_swap_negatives_change_one_word_from_another_caption() -> None:
    from tmt.models.aligned_vq import word_swap_negatives

    caps = ["a small red circle on the left", "a large blue star on the right", "one green box"]
    neg = word_swap_negatives(caps, torch.Generator().manual_seed(0))
    for c, n in zip(caps[:2], neg[:2], strict=True):
        diff = [(a, b) for a, b in zip(c.split(), n.split(), strict=True) if a != b]
        assert len(diff) == 1  # one word replaced ...
        other = caps[1] if c == caps[0] else caps[0]  # ... by the same-length caption's word at that place
        assert diff[0][1] in other.split()
    assert len(neg[2].split()) == 3 and neg[2] != caps[2]
    assert word_swap_negatives(["same words", "same words"]) == ["same words", "same words"]  # nothing differs


def test_fit_refuses_images_without_captions(tmp_path: Path) -> None:
    imgs, caps = make_data(4)
    caps[2] = [""]
    with pytest.raises(TokenizerError, match="no caption"):
        fit_aligned_tokenizer(tiny_card(), imgs, caps, tmp_path / "t", progress=False)


def test_cli_fit_with_captions_and_encode(tmp_path: Path) -> None:
    import yaml

    from tmt.cli import cli

    imgs, caps = make_data(8)
    rows = []
    (tmp_path / "images").mkdir()
    for i, (im, cs) in enumerate(zip(imgs, caps, strict=True)):
        Image.fromarray(im).save(tmp_path / "images" / f"{i}.png")
        rows += [{"id": f"{i}_{k}", "split": "train", "image": f"images/{i}.png", "text": c} for k, c in enumerate(cs)]
    manifest = tmp_path / "train.jsonl.gz"
    with gzip.open(manifest, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump(tiny_card()))
    out = tmp_path / "tok"
    r = CliRunner().invoke(cli, ["tokenize", "image", "fit", "--card", str(card), "--manifest", str(manifest),
                                  "--out", str(out), "--set", "train.steps=4"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["tokens_per_image"] == 32 and res["steps"] == 4 and res["fingerprint"]
    assert load_tokenizer(out).fingerprint == res["fingerprint"]


@pytest.mark.parametrize("card", ["image-aligned-32tok.yaml", "image-aligned-1d-32tok.yaml"])
def test_shipped_cards_are_32_tokens(card: str) -> None:
    from tmt.tokenizers.base import load_card

    root = Path(__file__).resolve().parents[2] / "tokenizers"
    tok = AlignedImageTokenizer(load_card(root / card))
    assert (tok.tokens_per_image, tok.vocab_size, tok.image_size) == (32, 1000, (64, 64))
    assert not tok.acfg.train.augment  # flips would contradict the captions' left/right/above/below
    assert tok.acfg.train.dtype != "bfloat16"  # emulated on CPUs without bf16 units: `auto` or float32
    ids = tok.encode([np.full((64, 64, 3), 110, np.uint8)])
    assert ids[0].shape == (32,) and tok.decode_array(ids).shape == (1, 64, 64, 3)


def test_bfloat16_fit_autocasts_the_forward_and_keeps_float32_weights(tmp_path: Path) -> None:
    imgs, caps = make_data(16)
    card = parse_card(tiny_card(dtype="bfloat16"))
    model = AlignedVQ(card.model)
    x = torch.from_numpy(imgs[:4]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    with autocast("cpu", card.train.resolved_dtype()):
        assert model(x).recon.dtype == torch.bfloat16
    assert model(x).recon.dtype == torch.float32  # outside the context: the card's float32 path
    bf = fit_aligned_tokenizer(tiny_card(dtype="bfloat16", steps=6), imgs, caps, tmp_path / "bf", progress=False)
    fp = fit_aligned_tokenizer(tiny_card(steps=6), imgs, caps, tmp_path / "fp", progress=False)
    a, b = bf.model.state_dict(), fp.model.state_dict()
    assert all(v.dtype != torch.bfloat16 for v in a.values())
    assert all(torch.isfinite(v.float()).all() for v in a.values())
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # the dtype reached the fit
    assert bf.stats["steps"] == 6 and np.isfinite(bf.stats["final_recon_loss"])


def test_auto_dtype_fits_in_float32_on_a_cpu_that_emulates_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """`dtype: auto` (the shipped card's) fits exactly as float32 where bf16 is only emulated, and says so in
    the stats; asking for bfloat16 there warns with the fix."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    imgs, caps = make_data(16)
    auto = fit_aligned_tokenizer(tiny_card(dtype="auto", steps=4), imgs, caps, tmp_path / "auto", progress=False)
    fp = fit_aligned_tokenizer(tiny_card(dtype="float32", steps=4), imgs, caps, tmp_path / "fp", progress=False)
    a, b = auto.model.state_dict(), fp.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert auto.stats["dtype"] == "float32" and "emulates" not in caplog.text
    with caplog.at_level("WARNING", logger="tmt.tokenizers.image_aligned_fit"):
        bf = fit_aligned_tokenizer(tiny_card(dtype="bfloat16", steps=2), imgs, caps, tmp_path / "bf", progress=False)
    assert bf.stats["dtype"] == "bfloat16"
    assert "without bf16 units" in caplog.text and "train.dtype=auto or float32" in caplog.text
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # a CPU with AMX: auto is bf16
    assert parse_card(tiny_card(dtype="auto")).train.resolved_dtype() == "bfloat16"
