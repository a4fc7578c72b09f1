"""`tmt tokenize speech pretrain`: the fbank HuBERT learns masked units, resumes exactly, and its
weights become a speech tokenizer's features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tmt.cli import cli as tmt_cli
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech import SpeechTokenizer, hubert_forward, load_hubert, load_speech_card
from tmt.tokenizers.speech.mfcc import log_mel_batch
from tmt.tokenizers.speech.pretrain import (
    WEIGHTS,
    PretrainConfig,
    PretrainData,
    pretrain,
)

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
BINS, UNITS = 8, 6


def _tiny(steps: int, **train: object) -> PretrainConfig:
    cfg = PretrainConfig()
    m, t = cfg.model, cfg.train
    m.num_mel_bins, m.embed_dim, m.num_layers, m.num_heads, m.ff_dim = BINS, 32, 1, 2, 64
    m.pos_conv_kernel, m.pos_conv_groups, m.final_dim, m.dropout = 8, 4, 16, 0.0
    t.steps, t.max_minutes, t.batch_seconds, t.lr, t.warmup_steps = steps, None, 4.0, 3e-3, 5
    t.checkpoint_every, t.valid_files, t.mask_prob, t.mask_length = 10, 4, 0.5, 3
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def _runs_data(n: int = 40, seed: int = 0) -> PretrainData:
    """Utterances of held units (runs of 6-12 frames); each unit has its own frame pattern plus
    noise and always comes after the same unit, so a masked span is predictable from context."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((UNITS, BINS)).astype(np.float32) * 2
    feats, units = [], []
    for _ in range(n):
        u, seq = int(rng.integers(UNITS)), []
        for _ in range(int(rng.integers(5, 9))):
            seq += [u] * int(rng.integers(6, 13))
            u = (u + 1) % UNITS
        lab = np.array(seq, np.int64)
        feats.append((means[lab] + 0.3 * rng.standard_normal((len(lab), BINS))).astype(np.float32))
        units.append(lab)
    return PretrainData(feats=feats, units=units)


def test_learns_masked_units_from_context(tmp_path: Path) -> None:
    info = pretrain(_tiny(120), _runs_data(), tmp_path / "ssl", num_units=UNITS, teacher_info={"name": "t"})
    curve = info["curve"]
    assert [p["step"] for p in curve] == list(range(10, 121, 10))
    assert curve[-1]["loss"] < 0.5 * curve[0]["loss"]
    assert info["valid_accuracy"] > 0.6  # chance: 1/6
    assert (tmp_path / "ssl" / "curves.png").stat().st_size > 0
    saved = json.loads((tmp_path / "ssl" / "pretrain.json").read_text())
    assert saved["steps"] == 120 and saved["held_out_utterances"] == 4 and saved["arch"]["fbank_bins"] == BINS


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.tokenizers.speech.pretrain as P

    data = _runs_data()
    pretrain(_tiny(30), data, tmp_path / "a", num_units=UNITS, teacher_info={"name": "t"})
    save = P._Run.checkpoint

    def killed_after_step_20(run: P._Run) -> None:
        save(run)
        if run.step == 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(P._Run, "checkpoint", killed_after_step_20)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_tiny(30), data, tmp_path / "b", num_units=UNITS, teacher_info={"name": "t"})
    monkeypatch.undo()
    assert not (tmp_path / "b" / WEIGHTS).exists()
    info = pretrain(_tiny(30), data, tmp_path / "b", num_units=UNITS, teacher_info={"name": "t"}, resume=True)
    assert info["steps"] == 30 and [p["step"] for p in info["curve"]] == [10, 20, 30]
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / WEIGHTS)), load_file(str(tmp_path / "b" / WEIGHTS))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_refusals(tmp_path: Path) -> None:
    data = _runs_data(12)
    with pytest.raises(TokenizerError, match="out of range for 4 units"):
        pretrain(_tiny(2), data, tmp_path / "x", num_units=4, teacher_info={})
    bad = _tiny(2)
    bad.model.num_heads = 3
    with pytest.raises(TokenizerError, match="num_heads"):
        pretrain(bad, data, tmp_path / "x", num_units=UNITS, teacher_info={})
    pretrain(_tiny(2), data, tmp_path / "y", num_units=UNITS, teacher_info={"name": "t"})
    other = _tiny(4, lr=1e-3)
    with pytest.raises(TokenizerError, match="another config"):
        pretrain(other, data, tmp_path / "y", num_units=UNITS, teacher_info={"name": "t"}, resume=True)
    with pytest.raises(TokenizerError, match="another teacher"):
        pretrain(_tiny(4), data, tmp_path / "y", num_units=UNITS, teacher_info={"name": "u"}, resume=True)


def test_log_mel_matches_kaldi_fbank() -> None:
    import torchaudio.compliance.kaldi as kaldi

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 0.8) / 16000
    w = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    ref = kaldi.fbank(torch.from_numpy(w)[None], frame_length=25.0, frame_shift=20.0, dither=0.0,
                      num_mel_bins=40, use_energy=False).numpy()
    raw, normed = log_mel_batch([w], 40, cmvn=False)[0], log_mel_batch([w], 40)[0]
    assert raw.shape == ref.shape == normed.shape
    np.testing.assert_allclose(raw, ref, atol=2e-3)
    np.testing.assert_allclose(normed.mean(0), 0, atol=1e-4)


def test_weights_load_as_hubert_features(tmp_path: Path) -> None:
    cfg = _tiny(3)
    pretrain(cfg, _runs_data(12), tmp_path / "ssl", num_units=UNITS, teacher_info={"name": "t"})
    model, arch = load_hubert(tmp_path / "ssl" / WEIGHTS, num_layers=1)
    assert arch["extractor_mode"] == "fbank" and arch["encoder_embed_dim"] == 32
    rng = np.random.default_rng(1)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 400)]
    batched = hubert_forward(model, wavs, 1)
    assert [len(f) for f in batched] == [len(f) for f in log_mel_batch(wavs, BINS)] == [1 + (n - 400) // 320 for n in (16000, 9000, 400)]
    for w, f in zip(wavs, batched, strict=True):
        np.testing.assert_allclose(hubert_forward(model, [w], 1)[0], f, atol=1e-4)
    with pytest.raises(TokenizerError, match="layer 2 requested but the model has 1"):
        load_hubert(tmp_path / "ssl" / WEIGHTS, num_layers=2)


def test_cli_teacher_pretrain_then_fit_the_card(tmp_path: Path) -> None:
    from tests.unit.test_speech_tokenizer import make_speech_corpus

    manifest = make_speech_corpus(tmp_path / "c", n_scenes=12)
    run = CliRunner().invoke
    teacher = tmp_path / "teacher"
    res = run(tmt_cli, ["tokenize", "speech", "fit", "--card", str(ROOT / "tokenizers" / "speech-mfcc-km200.yaml"),
                        "--manifest", str(manifest), "--split", "all", "--out", str(teacher), "--set", "clusters=20"])
    assert res.exit_code == 0, res.output
    ssl = tmp_path / "ssl"
    args = ["tokenize", "speech", "pretrain", "--teacher", str(teacher), "--manifest", str(manifest), "--split", "all",
            "--out", str(ssl), "--set", "model.embed_dim=32", "--set", "model.num_layers=2", "--set", "model.num_heads=2",
            "--set", "model.ff_dim=64", "--set", "model.pos_conv_groups=4", "--set", "model.num_mel_bins=20",
            "--set", "train.steps=4", "--set", "train.valid_files=2", "--set", "train.batch_seconds=6"]
    res = run(tmt_cli, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["steps"] == 4 and out["held_out_utterances"] == 1 and out["train_utterances"] == 11
    again = run(tmt_cli, args)
    assert again.exit_code != 0 and "--resume" in again.output
    card = ROOT / "tokenizers" / "speech-hubert-fbank-km1000.yaml"
    tok = tmp_path / "tok"
    res = run(tmt_cli, ["tokenize", "speech", "fit", "--card", str(card), "--set", f"hubert.weights={ssl / WEIGHTS}",
                        "--set", "hubert.layer=2", "--set", "clusters=8", "--manifest", str(manifest), "--split", "all",
                        "--out", str(tok)])
    assert res.exit_code == 0, res.output
    loaded = SpeechTokenizer.load(tok)
    assert loaded.feature_dim == 32 and loaded.vocab_size == 8
    assert load_speech_card(card).hubert.weights is None  # the card ships without weights
