"""The image tokenizer: loading any image, fit (loss falls, resumable), encode/decode, save/load, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tmt.tokenizers.base import TokenizerError, load_tokenizer
from tmt.tokenizers.image import ImageTokenizer, load_image, parse_card
from tmt.tokenizers.image_fit import fit_image_tokenizer

torch.set_num_threads(1)


def tiny_card(**train: Any) -> dict[str, Any]:
    t = {"steps": 40, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "sample_every": 20, "checkpoint_every": 20,
         "usage_images": 16}
    t.update(train)
    return {
        "class": "image-vq", "name": "tiny-vq",
        "model": {"image_size": 16, "factor": [4, 2], "channels": [8, 16], "num_res_blocks": 1,
                  "codebook_size": 32, "code_dim": 8},
        "train": t,
    }


def make_images(n: int = 24, size: int = 16, seed: int = 0) -> np.ndarray:
    """Coloured squares on white, fixed seed."""
    rng = np.random.default_rng(seed)
    imgs = np.full((n, size, size, 3), 255, np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 6, 2)
        imgs[i, y:y + 6, x:x + 6] = rng.integers(0, 256, 3)
    return imgs


# ------------------------------------------------------------------ loading


def test_load_any_mode_and_size(tmp_path: Path) -> None:
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    rgb[:, 20:] = (0, 0, 255)
    files = {
        "rgb.png": Image.fromarray(rgb),
        "gray.png": Image.fromarray(rgb[:, :, 0]),
        "pal.gif": Image.fromarray(rgb).convert("P"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((30, 40), 255, np.uint8)])),
        "i16.png": Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
    }
    for name, im in files.items():
        im.save(tmp_path / name)
        a = load_image(tmp_path / name, (16, 16))
        assert a.shape == (16, 16, 3) and a.dtype == np.uint8, name
    # 16-bit grayscale keeps its contrast (not clipped to white)
    a16 = load_image(tmp_path / "i16.png", (16, 16))
    assert a16[8, 1, 0] > 200 and a16[8, 14, 0] < 50
    # center crop keeps the aspect ratio: 40x30 -> crop 30x30 from the middle -> both halves visible
    c = load_image(tmp_path / "rgb.png", (16, 16), center_crop=True)
    assert c[8, 1, 0] > 200 and c[8, 14, 2] > 200
    # stretch vs crop: a 16x32 target keeps more of the picture without cropping
    s = load_image(tmp_path / "rgb.png", (8, 32), center_crop=False)
    assert s.shape == (8, 32, 3) and s[4, 0, 0] > 200 and s[4, 31, 2] > 200


def test_alpha_is_composited_on_the_background() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    a = load_image(Image.fromarray(rgba, "RGBA"), (8, 8), background=(10, 200, 30))
    assert (a == np.array([10, 200, 30], np.uint8)).all()


def test_arrays_and_float_arrays() -> None:
    f = np.ones((8, 8, 3), np.float32) * 0.5
    assert load_image(f, (4, 4))[0, 0, 0] in (127, 128)
    with pytest.raises(TokenizerError, match="shape"):
        load_image(np.zeros((8, 8, 5), np.uint8), (4, 4))


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(TokenizerError, match=r"cannot read image .*broken\.png"):
        load_image(bad, (16, 16))
    txt = tmp_path / "notes.jpg"
    txt.write_text("hello")
    with pytest.raises(TokenizerError, match=r"notes\.jpg"):
        load_image(txt, (16, 16))
    with pytest.raises(TokenizerError, match=r"image not found: .*missing\.png"):
        load_image(tmp_path / "missing.png", (16, 16))


# ------------------------------------------------------------------ fit / encode / decode


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageTokenizer, Path, list[float]]:
    out = tmp_path_factory.mktemp("vq")
    losses: list[float] = []
    tok = fit_image_tokenizer(tiny_card(), make_images(), out, progress=False,
                              on_step=lambda s, m: losses.append(m["recon"]))
    return tok, out, losses


def test_fit_loss_falls_and_reports_usage(fitted: tuple[ImageTokenizer, Path, list[float]]) -> None:
    tok, out, losses = fitted
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    u = tok.stats["usage"]
    assert 1 <= u["codes_used"] <= 32 and u["perplexity"] >= 1.0
    assert u["codes_used_pct"] == pytest.approx(100 * u["codes_used"] / 32)
    assert (out / "samples" / "step000020.png").is_file() and (out / "samples" / "final.png").is_file()
    assert (out / "checkpoints" / "last.pt").is_file()
    info = json.loads((out / "tokenizer.json").read_text())
    assert info["kind"] == "image" and info["class"] == "image-vq" and info["vocab_size"] == 32
    assert info["grid"] == [4, 8] and info["tokens_per_image"] == 32


def test_encode_decode_round_trip_shapes(fitted: tuple[ImageTokenizer, Path, list[float]], tmp_path: Path) -> None:
    tok, _, _ = fitted
    assert tok.grid == (4, 8) and tok.tokens_per_image == 32
    p = tmp_path / "big.png"
    Image.fromarray(make_images(1, 50)[0]).save(p)  # another size: resized on the way in
    ids = tok.encode([p, make_images(2)[1], Image.fromarray(make_images(3)[2]).convert("L")])
    assert [a.shape for a in ids] == [(32,)] * 3
    assert all(a.dtype == np.int64 and a.min() >= 0 and a.max() < 32 for a in ids)
    imgs = tok.decode(ids)
    assert [im.size for im in imgs] == [(16, 16)] * 3 and imgs[0].mode == "RGB"
    # decoding then re-encoding a decoded image is stable for most tokens
    again = tok.encode(imgs)
    assert np.mean([np.mean(a == b) for a, b in zip(ids, again, strict=True)]) > 0.5
    with pytest.raises(TokenizerError, match="exactly 32"):
        tok.decode([np.zeros(31, np.int64)])
    with pytest.raises(TokenizerError, match=r"\[0, 32\)"):
        tok.decode([np.full(32, 32)])


def test_save_load_same_tokens_and_fingerprint(fitted: tuple[ImageTokenizer, Path, list[float]]) -> None:
    tok, out, _ = fitted
    again = load_tokenizer(out)
    assert isinstance(again, ImageTokenizer)
    assert again.fingerprint == tok.fingerprint and len(tok.fingerprint) == 64
    imgs = make_images(4, seed=3)
    assert all((a == b).all() for a, b in zip(tok.encode(list(imgs)), again.encode(list(imgs)), strict=True))


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    imgs = make_images(16)
    card = tiny_card(steps=6, checkpoint_every=3, sample_every=0)
    full = fit_image_tokenizer(card, imgs, tmp_path / "full", progress=False)

    class Crash(Exception):
        pass

    def crash(step: int, _: dict[str, float]) -> None:
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        fit_image_tokenizer(card, imgs, tmp_path / "resumed", progress=False, on_step=crash)
    assert not (tmp_path / "resumed" / "tokenizer.json").exists()  # nothing half-written
    recorded_path = tmp_path / "resumed" / "checkpoints" / "card.json"
    recorded = json.loads(recorded_path.read_text())
    recorded_path.write_text(json.dumps(recorded | {"train": recorded["train"] | {"removed_setting": 1}}))
    with pytest.raises(TokenizerError, match="different card"):  # a setting this version no longer has
        fit_image_tokenizer(card, imgs, tmp_path / "resumed", progress=False)
    del recorded["train"]["fg_dilate"], recorded["train"]["edge_weight"]
    recorded_path.write_text(json.dumps(recorded))  # made before those settings existed: their defaults
    resumed = fit_image_tokenizer(card, imgs, tmp_path / "resumed", progress=False)
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert full.fingerprint == resumed.fingerprint
    # a checkpoint from another architecture is refused
    other = tiny_card(steps=6)
    other["model"]["code_dim"] = 4
    with pytest.raises(TokenizerError, match="different card"):
        fit_image_tokenizer(other, imgs, tmp_path / "resumed", progress=False)


def test_card_errors() -> None:
    with pytest.raises(TokenizerError, match=r"unknown config key 'model\.codes'"):
        parse_card({"class": "image-vq", "model": {"codes": 3}})
    with pytest.raises(TokenizerError, match="no images"):
        fit_image_tokenizer(tiny_card(), [], "/nonexistent/never", progress=False)


def test_patch_gan_and_foreground_weight_options_train(tmp_path: Path) -> None:
    tok = fit_image_tokenizer(tiny_card(steps=4, gan_weight=0.1, gan_start=2, fg_weight=2.0, edge_weight=1.0,
                                        augment=True, sample_every=0), make_images(8), tmp_path / "a", progress=False)
    assert tok.stats["steps"] == 4 and np.isfinite(tok.stats["final_recon_loss"])


def test_dihedral_augmentation_flips_whole_images() -> None:
    from tmt.tokenizers.image_fit import _dihedral

    torch.manual_seed(0)
    x = torch.rand(32, 3, 5, 5)
    y = _dihedral(x)
    variants = []
    for img in x:
        vs = []
        for t in (img, img.transpose(1, 2)):
            vs += [t, t.flip(2), t.flip(1), t.flip(1).flip(2)]
        variants.append(vs)
    # every output is one of the 8 flips/rotations of its own input, and several differ from the input
    assert all(any(torch.equal(o, v) for v in vs) for o, vs in zip(y, variants, strict=True))
    assert sum(not torch.equal(o, i) for o, i in zip(y, x, strict=True)) >= 16


def test_continuous_warmup_then_kmeans_codebook(tmp_path: Path) -> None:
    seen: list[float] = []
    tok = fit_image_tokenizer(tiny_card(steps=8, warmup_continuous=0.5, sample_every=0), make_images(16),
                              tmp_path, progress=False, on_step=lambda s, m: seen.append(m["ppl"]))
    assert seen[:4] == [0.0] * 4 and all(p >= 1.0 for p in seen[4:])  # no codes during the warm-up
    assert bool(tok.model.quantizer.initialized)
    assert tok.stats["usage"]["codes_used"] > 1


def test_time_budget_compresses_the_schedule() -> None:
    from tmt.core.budget import TimeBudget
    from tmt.tokenizers.image import VQTrainConfig
    from tmt.tokenizers.image_fit import _lr_at, _pixel_weights, _progress

    t = VQTrainConfig(steps=1000, warmup_steps=10, lr=1.0, min_lr_ratio=0.0, max_minutes=1.0)
    now = [0.0]
    budget = TimeBudget(t.max_minutes, 0.0, clock=lambda: now[0])
    now[0] = 30.0
    assert _progress(100, budget, t) == 0.5  # half the time is half the budget even at step 100
    assert _lr_at(100, 0.5, t) == pytest.approx(0.5 * (1 + np.cos(np.pi * (0.5 - 0.01) / 0.99)))
    now[0] = 61.0
    assert _progress(5, budget, t) == 1.0
    assert _progress(500, TimeBudget(None, 1e6), t) == 0.5  # no limit: progress by steps only
    x = torch.full((1, 3, 4, 4), -0.5)
    x[0, :, 0, 0] = 0.9  # one "object" pixel on a flat background
    w = _pixel_weights(x, VQTrainConfig(fg_weight=3.0))
    assert w is not None and float(w[0, 0, 0, 0]) > 3 * float(w[0, 0, 1, 1])
    assert float(w.mean()) == pytest.approx(1.0)
    x = torch.full((1, 3, 9, 9), -0.5)
    x[0, :, 4, 4] = 0.9  # one object pixel in the middle: dilated by 2, the 5x5 block around it is "object"
    w = _pixel_weights(x, VQTrainConfig(fg_weight=3.0, fg_dilate=2))
    assert w is not None
    near, far = w[0, 0, 2:7, 2:7], torch.cat([w[0, 0, :2].flatten(), w[0, 0, 7:].flatten(), w[0, 0, 2:7, :2].flatten()])
    assert torch.allclose(near, near[2, 2].expand_as(near)) and torch.allclose(far, far[0].expand_as(far))
    assert float(near[0, 0]) == pytest.approx(4 * float(far[0]))  # 1 + fg_weight against 1


def test_repo_cards_parse() -> None:
    from tmt.tokenizers.base import load_card

    root = Path(__file__).resolve().parents[2] / "tokenizers"
    f8 = ImageTokenizer(load_card(root / "image-vq-f8-512.yaml"))
    assert f8.tokens_per_image == 64 and f8.grid == (8, 8) and f8.vocab_size == 512
    t32 = ImageTokenizer(load_card(root / "image-vq-32tok.yaml"))
    assert t32.tokens_per_image == 32 and t32.grid == (4, 8)
    local = ImageTokenizer(load_card(root / "image-vq-f8-512-local.yaml"))
    assert local.tokens_per_image == 64 and local.cfg.model.encoder_code_kernel == 1


# ------------------------------------------------------------------ CLI


def test_cli_fit_encode_decode(tmp_path: Path) -> None:
    import yaml

    from tmt.cli import cli
    from tmt.store.manifest import write_manifest
    from tmt.store.token_store import TokenStore

    (tmp_path / "img").mkdir()
    rows = []
    for i, a in enumerate(make_images(12)):
        Image.fromarray(a).save(tmp_path / "img" / f"{i}.png")
        rows.append({"id": f"r{i}", "group": f"g{i}", "split": "train" if i < 10 else "test",
                     "image": f"img/{i}.png", "speech": None, "text": None})
    (tmp_path / "img" / "bad.png").write_bytes(b"garbage")
    rows.append({"id": "bad", "group": "bad", "split": "test", "image": "img/bad.png", "speech": None, "text": None})
    manifest = tmp_path / "m.jsonl.gz"
    write_manifest(manifest, rows)
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump(tiny_card(steps=10)))
    r = CliRunner()
    tok_dir = tmp_path / "tok"
    res = r.invoke(cli, ["tokenize", "image", "fit", "--card", str(card), "--manifest", str(manifest),
                         "--out", str(tok_dir), "--set", "train.steps=6"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["steps"] == 6 and out["train_images"] == 10 and out["tokens_per_image"] == 32
    store = tmp_path / "store"
    res = r.invoke(cli, ["tokenize", "image", "encode", "--tokenizer", str(tok_dir), "--manifest", str(manifest),
                         "--store", str(store), "--split", "test"])
    assert res.exit_code == 1 and "bad.png" in res.output
    assert not (store / "index.json").exists() or len(TokenStore(store)) == 0  # no partial rows
    res = r.invoke(cli, ["tokenize", "image", "encode", "--tokenizer", str(tok_dir), "--manifest", str(manifest),
                         "--store", str(store), "--split", "test", "--skip-bad"])
    assert res.exit_code == 0, res.output
    st = TokenStore(store)
    assert len(st) == 2 and st.tokens(0, "image").shape == (32,)
    png = tmp_path / "png"
    res = r.invoke(cli, ["tokenize", "image", "decode", "--tokenizer", str(tok_dir), "--store", str(store),
                         "--out-dir", str(png)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in png.iterdir()) == ["r10.png", "r11.png"]
    assert Image.open(png / "r10.png").size == (16, 16)
    ids = " ".join(map(str, st.tokens(0, "image").tolist()))
    res = r.invoke(cli, ["tokenize", "image", "decode", "--tokenizer", str(tok_dir), "--tokens", "-",
                         "--out-dir", str(png)], input=f"x1\t{ids}\n")
    assert res.exit_code == 0 and (png / "x1.png").is_file()
    res = r.invoke(cli, ["tokenize", "image", "decode", "--tokenizer", str(tok_dir), "--tokens", "-",
                         "--out-dir", str(png)], input="1 2 3\n")
    assert res.exit_code == 1 and "exactly 32" in res.output


def _fake_clock(monkeypatch: pytest.MonkeyPatch, seconds_per_call: float = 1.0) -> None:
    import tmt.core.budget as budget

    now = [0.0]

    def tick() -> float:
        now[0] += seconds_per_call
        return now[0]

    monkeypatch.setattr(budget.time, "monotonic", tick)


def test_time_budget_spans_resumed_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch)  # one second per clock reading
    imgs = make_images(8)
    card = tiny_card(steps=200, max_minutes=0.5, sample_every=0, checkpoint_every=0, usage_images=4)
    first = fit_image_tokenizer(card, imgs, tmp_path / "a", progress=False)
    assert first.stats["stopped_early"] and 1 <= first.stats["steps"] < 200
    assert torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["elapsed"] >= 30.0
    # the same budget again: spent before the resume, so no further step
    again = fit_image_tokenizer(card, imgs, tmp_path / "a", progress=False)
    assert again.stats["steps"] == first.stats["steps"]
    # twice the budget: only the difference is trained
    more = fit_image_tokenizer(tiny_card(**{**card["train"], "max_minutes": 1.0}), imgs, tmp_path / "a", progress=False)
    fresh = fit_image_tokenizer(tiny_card(**{**card["train"], "max_minutes": 1.0}), imgs, tmp_path / "b", progress=False)
    assert first.stats["steps"] < more.stats["steps"] and more.stats["steps"] - first.stats["steps"] < fresh.stats["steps"]


def test_max_minutes_zero_is_deprecated_and_old_runs_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="tmt.core.budget"):
        assert parse_card(tiny_card(max_minutes=0)).train.max_minutes is None
    assert "max_minutes=0 for 'no time limit' is deprecated" in caplog.text
    with pytest.raises(TokenizerError, match=r"tiny-vq.*train\.max_minutes must be > 0"):
        parse_card(tiny_card(max_minutes=-1))
    # a run checkpointed by a version that wrote max_minutes: 0.0 resumes under null
    imgs = make_images(8)
    card = tiny_card(steps=4, sample_every=0, checkpoint_every=2, usage_images=4)
    fit_image_tokenizer(tiny_card(steps=2, sample_every=0, checkpoint_every=2, usage_images=4), imgs, tmp_path, progress=False)
    saved = tmp_path / "checkpoints" / "card.json"
    old = json.loads(saved.read_text())
    old["train"]["max_minutes"] = 0.0
    saved.write_text(json.dumps(old))
    tok = fit_image_tokenizer(card, imgs, tmp_path, progress=False)
    assert tok.stats["steps"] == 4
    # and a tokenizer saved with 0.0 loads quietly, reading it as no limit
    info = json.loads((tmp_path / "tokenizer.json").read_text())
    info["card"]["train"]["max_minutes"] = 0.0
    (tmp_path / "tokenizer.json").write_text(json.dumps(info))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert ImageTokenizer.load(tmp_path).cfg.train.max_minutes is None
    assert "deprecated" not in caplog.text
