"""The pixel caption judge: neighbour batches, fitting beside a tokenizer without changing it, loading
and its refusals, and `caption_alignment` reading it."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.unit.test_image_aligned import make_data, tiny_card
from tmt.models.aligned_vq import caption_bytes
from tmt.models.caption_judge import CaptionJudge, CaptionJudgeConfig
from tmt.tokenizers.base import TokenizerError, load_tokenizer, read_tokenizer_json
from tmt.tokenizers.image import judge_alignment
from tmt.tokenizers.image_aligned import AlignedImageTokenizer
from tmt.tokenizers.image_judge import JudgeCard, JudgeTrainConfig
from tmt.tokenizers.image_judge_fit import (
    CaptionNeighbours,
    fit_caption_judge,
    group_batch,
    reconstructions,
)

torch.set_num_threads(1)


def tiny_judge(**train: object) -> JudgeCard:
    t = {"steps": 4, "batch_size": 6, "group": 3, "warmup_steps": 1, "holdout": 0.25}
    t.update(train)
    return JudgeCard(model=CaptionJudgeConfig(width=8, stages=2, embed_dim=16, text_dim=16, max_caption_bytes=24),
                     train=JudgeTrainConfig(**t))  # type: ignore[arg-type]


def saved_tokenizer(tmp_path: Path) -> tuple[AlignedImageTokenizer, Path]:
    torch.manual_seed(0)
    tok = AlignedImageTokenizer(tiny_card())
    tok.save(tmp_path / "tok")
    return tok, tmp_path / "tok"


def test_neighbours_are_the_captions_one_word_away() -> None:
    caps = ["a red box on top", "a blue box on top", "a red star on top", "a red box on top",
            "a blue star on top", "a red box at the top", "A RED BOX ON LEFT"]
    nb = CaptionNeighbours(caps)
    assert nb(0).tolist() == [1, 2, 6]  # not itself, not its duplicate 3, not two words away (4), not longer (5)
    assert nb(4).tolist() == [1, 2] and nb(5).tolist() == []


def test_group_batches_hold_anchors_with_their_neighbours_from_the_pool() -> None:
    caps = [f"a {c} {s} here" for c in ("red", "blue", "green") for s in ("box", "star", "ring")]
    nb = CaptionNeighbours(caps)
    pool = np.arange(8)  # caption 8 is held out
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        b = group_batch(nb, pool, 12, 3, gen)
        assert len(b) == 12 and 8 not in b
        for anchor, *rest in (b[0:3], b[3:6], b[6:9], b[9:12]):
            assert all(r in nb(int(anchor)) for r in rest)
    plain = group_batch(nb, pool, 12, 1, gen)  # group 1: every index an anchor
    assert len(plain) == 12 and set(plain) <= set(pool)


def test_the_judge_learns_which_caption_an_image_shows() -> None:
    torch.manual_seed(0)
    imgs, caps = make_data(16)
    judge = CaptionJudge(tiny_judge().model.__class__(image_size=[16, 16], width=8, stages=2, embed_dim=16,
                                                      text_dim=16, max_caption_bytes=24))
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    text = [c[0] for c in caps]
    same = torch.tensor([[a == b for b in text] for a in text])
    opt = torch.optim.Adam(judge.parameters(), lr=3e-3)
    for _ in range(150):
        loss = judge.loss(x, caption_bytes(text, 24), same)
        opt.zero_grad()
        loss.backward()
        opt.step()
    judge.eval()
    right = judge_alignment(judge, imgs, text)
    wrong = judge_alignment(judge, imgs, text[4:] + text[:4])  # the same colour on the other side
    assert (right > wrong).mean() >= 0.9


def test_fit_saves_a_judge_beside_the_tokenizer_without_changing_it(tmp_path: Path) -> None:
    tok, d = saved_tokenizer(tmp_path)
    before = read_tokenizer_json(d)
    imgs, caps = make_data(24)
    stats = fit_caption_judge(tok, str(d), list(imgs), caps, tiny_judge(), progress=False)
    assert stats["steps"] == 4 and stats["pairs"] == 48 and stats["heldout_pairs"] == 12
    assert stats["neighbour_acc"] is not None and 0 <= stats["neighbour_acc"] <= 1
    info = read_tokenizer_json(d)
    assert info["fingerprint"] == before["fingerprint"] and info["judge"]["tokenizer_fingerprint"] == before["fingerprint"]
    assert info["judge"]["card"]["model"]["image_size"] == [16, 16]
    first = info["judge"]["weights"]
    assert (d / first).is_file()
    loaded = load_tokenizer(d)
    assert loaded.caption_judge == "pixel judge" and loaded.fingerprint == before["fingerprint"]
    codes = list(loaded.encode_array(imgs[:5]))
    text = [c[0] for c in caps[:5]]
    expected = judge_alignment(loaded.judge, loaded.decode_array(codes), text)
    np.testing.assert_allclose(loaded.caption_alignment(codes, text), expected)
    assert not np.allclose(expected, judge_alignment(loaded.judge, loaded.decode_array(codes), text[::-1]))
    # saving the same weights again keeps the judge; other weights drop it
    tok.save(d)
    assert read_tokenizer_json(d)["judge"]["weights"] == first
    with torch.no_grad():
        next(tok.model.parameters()).add_(1.0)
    tok.save(d)
    assert "judge" not in read_tokenizer_json(d) and load_tokenizer(d).caption_judge == "code head"
    tok = AlignedImageTokenizer.load(d)
    # a refit replaces the weights file; the old one is removed
    fit_caption_judge(tok, str(d), list(imgs), caps, tiny_judge(steps=2, seed=1), progress=False)
    second = read_tokenizer_json(d)["judge"]["weights"]
    assert second != first and not (d / first).exists() and (d / second).is_file()


def test_reconstructions_are_the_tokenizers_round_trip(tmp_path: Path) -> None:
    tok, _ = saved_tokenizer(tmp_path)
    imgs, _ = make_data(3)
    np.testing.assert_array_equal(reconstructions(tok, list(imgs), False), tok.decode_array(list(tok.encode_array(imgs))))


def test_a_judge_for_another_tokenizer_or_without_weights_is_refused(tmp_path: Path) -> None:
    tok, d = saved_tokenizer(tmp_path)
    imgs, caps = make_data(8)
    fit_caption_judge(tok, str(d), list(imgs), caps, tiny_judge(holdout=0.0), progress=False)
    info = read_tokenizer_json(d)
    (d / info["judge"]["weights"]).unlink()
    with pytest.raises(TokenizerError, match=r"caption judge cannot be loaded .* fit-judge"):
        load_tokenizer(d)
    info["judge"]["tokenizer_fingerprint"] = "0" * 64
    (d / "tokenizer.json").write_text(json.dumps(info))
    with pytest.raises(TokenizerError, match="fitted for another tokenizer"):
        load_tokenizer(d)


def test_fit_refuses_images_without_captions_and_bad_settings(tmp_path: Path) -> None:
    tok, d = saved_tokenizer(tmp_path)
    imgs, _ = make_data(4)
    with pytest.raises(TokenizerError, match="no text"):
        fit_caption_judge(tok, str(d), list(imgs), [[""]] * 4, tiny_judge(), progress=False)
    with pytest.raises(TokenizerError, match="batch_size >= 2"):
        fit_caption_judge(tok, str(d), list(imgs), [["a"]] * 4, tiny_judge(batch_size=1), progress=False)
    assert "judge" not in read_tokenizer_json(d)


def test_image_vq_tokenizer_has_no_alignment_until_a_judge_is_fitted(tmp_path: Path) -> None:
    from tmt.tokenizers.image import ImageTokenizer

    card = {"class": "image-vq", "name": "tiny-vq", "model": {"image_size": 16, "factor": 4, "channels": [8, 16],
                                                              "num_res_blocks": 1, "codebook_size": 16, "code_dim": 8}}
    tok = ImageTokenizer(card)
    tok.save(tmp_path / "vq")
    imgs, caps = make_data(8)
    codes = list(tok.encode_array(imgs))
    assert tok.caption_judge is None
    with pytest.raises(TokenizerError, match="no caption judge; fit one with `tmt tokenize image fit-judge"):
        tok.caption_alignment(codes, ["x"] * 8)
    fit_caption_judge(tok, str(tmp_path / "vq"), list(imgs), caps, tiny_judge(holdout=0.0), progress=False)
    loaded = load_tokenizer(tmp_path / "vq")
    assert loaded.caption_judge == "pixel judge" and loaded.caption_alignment(codes, ["x"] * 8).shape == (8,)


def test_cli_fit_judge(tmp_path: Path) -> None:
    from tmt.cli import cli

    _, d = saved_tokenizer(tmp_path)
    imgs, caps = make_data(8)
    (tmp_path / "img").mkdir()
    with gzip.open(tmp_path / "m.jsonl.gz", "wt") as f:
        for i, (im, cs) in enumerate(zip(imgs, caps, strict=True)):
            Image.fromarray(im).save(tmp_path / "img" / f"{i}.png")
            for k, c in enumerate(cs):
                f.write(json.dumps({"id": f"{i}_{k}", "split": "train", "image": f"img/{i}.png", "text": c}) + "\n")
    args = ["tokenize", "image", "fit-judge", "--tokenizer", str(d), "--manifest", str(tmp_path / "m.jsonl.gz"),
            "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "model.stages=2", "--set", "model.width=8"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["judge"]["steps"] == 2 and out["judge"]["images"] == 8 and out["judge"]["pairs"] == 16
    assert load_tokenizer(d).caption_judge == "pixel judge"
    r = CliRunner().invoke(cli, [*args[:-2], "--set", "model.width=12"])  # GroupNorm needs a multiple of 8
    assert r.exit_code != 0 and "multiple of 8" in r.output
