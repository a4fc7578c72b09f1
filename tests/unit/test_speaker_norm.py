"""Per-speaker feature normalisation before k-means (speech card `speaker_norm`, issue 19 s2):
the statistics, fitting through the CLI, saving/loading with the fingerprint, encoding with a
row's voice, and unchanged fingerprints for cards without the option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tmt.cli import cli as tmt_cli
from tmt.store.manifest import write_manifest
from tmt.testing.fixtures import make_wav
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech import SpeechTokenizer, load_speech_card
from tmt.tokenizers.speech.card import _fingerprint_card, card_from_dict, card_to_dict
from tmt.tokenizers.speech.fit import fit_speech_tokenizer
from tmt.tokenizers.speech.speaker_norm import SpeakerStats

torch.set_num_threads(1)

CARD = Path(__file__).resolve().parents[2] / "tokenizers" / "speech-mfcc-km200.yaml"


def test_stats_normalise_each_speaker_and_fall_back_for_unknown() -> None:
    rng = np.random.default_rng(0)
    a = [rng.normal(3.0, 2.0, (50, 4)) for _ in range(3)]
    b = [rng.normal(-1.0, 0.5, (40, 4)) for _ in range(2)]
    stats = SpeakerStats.fit(a + b + [rng.normal(size=(5, 4))], ["a"] * 3 + ["b"] * 2 + [None])
    assert stats.names == ["a", "b"]
    za = np.concatenate([stats.normalize(f, "a") for f in a])
    np.testing.assert_allclose(za.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(za.std(0), 1.0, atol=1e-3)
    own = stats.normalize(b[0], "stranger")  # unknown speaker: the utterance's own statistics
    np.testing.assert_allclose(own.mean(0), 0.0, atol=1e-4)
    with pytest.raises(TokenizerError, match="no row names one"):
        SpeakerStats.fit(a, [None] * 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 'voices': low tones and high tones."""
    root = tmp_path_factory.mktemp("spk")
    rows = []
    for i in range(8):
        voice = ["flite:kal", "espeak-ng:en"][i % 2]
        freq = (180.0 if i % 2 == 0 else 420.0) + 15 * i
        make_wav(root / f"w{i}.wav", 0.6, freq=freq, seed=i)
        rows.append({"id": f"u{i}", "split": "train", "speech": f"w{i}.wav", "text": "x",
                     "tts": {"engine": voice.split(":")[0], "voice": voice.split(":")[1]}})
    write_manifest(root / "m.jsonl.gz", rows)
    return root


def test_fit_save_load_and_encode_with_the_rows_voice(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    r = CliRunner().invoke(tmt_cli, ["tokenize", "speech", "fit", "--card", str(CARD), "--manifest",
                                     str(corpus / "m.jsonl.gz"), "--out", str(out), "--set", "clusters=6",
                                     "--set", "speaker_norm=true"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    tok = SpeechTokenizer.load(out)  # verifies the fingerprint over centroids + speaker statistics
    assert tok.cfg.speaker_norm and tok.speaker_stats is not None
    assert tok.speaker_stats.names == ["espeak-ng:en", "flite:kal"]
    assert json.loads((out / "tokenizer.json").read_text())["card"]["speaker_norm"] is True
    back = card_from_dict(card_to_dict(tok.cfg))
    assert back == tok.cfg  # the card round-trips with the option
    wav = str(corpus / "w1.wav")
    rows = [{"id": "u1", "speech": wav, "tts": {"engine": "espeak-ng", "voice": "en"}}]
    enc = tok.make_encoder()(rows)[0]
    assert enc is not None
    np.testing.assert_array_equal(enc["speech"], tok.encode([wav], voices=["espeak-ng:en"])[0])
    # the stats file is part of the tokenizer: tampering is caught
    stats = SpeakerStats.load(out / "speaker_stats.safetensors")
    SpeakerStats(stats.names, stats.mean + 1.0, stats.std).save(out / "speaker_stats.safetensors")
    with pytest.raises(TokenizerError, match="fingerprint"):
        SpeechTokenizer.load(out)


def test_speaker_norm_needs_voices_and_keeps_old_fingerprints(corpus: Path) -> None:
    card = load_speech_card(CARD, {"clusters": 4, "speaker_norm": True})
    with pytest.raises(TokenizerError, match="speaker of every audio"):
        fit_speech_tokenizer(card, [str(corpus / "w0.wav")])
    plain = load_speech_card(CARD)
    assert "speaker_norm" not in _fingerprint_card(plain) and _fingerprint_card(card)["speaker_norm"] is True
