"""Speech tokenizer end to end on a small scenes-like corpus: fit, encode (sharded), CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from tmt.cli import cli as tmt_cli
from tmt.store.manifest import write_manifest
from tmt.store.ops import validate_store
from tmt.store.token_store import TokenStore
from tmt.tokenizers.base import load_tokenizer
from tmt.tokenizers.speech import (
    SpeechTokenizer,
    expand_runs,
    load_speech_card,
)

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
MFCC_CARD = ROOT / "tokenizers" / "speech-mfcc-km200.yaml"
COLORS = ["red", "green", "blue", "yellow", "purple"]
SHAPES = ["circle", "square", "triangle", "star"]
RELS = ["left of", "right of", "above", "below"]


def _tone_speech(text: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Fallback when espeak-ng is missing: one formant-like tone pair per word."""
    out = []
    for w in text.split():
        f1, f2 = 300 + 40 * (hash(w) % 15), 900 + 90 * (hash(w[::-1]) % 15)
        t = np.arange(int(sr * (0.12 + 0.03 * len(w)))) / sr
        out.append(0.3 * np.sin(2 * np.pi * f1 * t) + 0.2 * np.sin(2 * np.pi * f2 * t))
        out.append(np.zeros(int(sr * 0.05)))
    return (np.concatenate(out) + 0.003 * rng.standard_normal(sum(map(len, out)))).astype(np.float32)


def make_speech_corpus(root: Path, n_scenes: int = 20, seed: int = 0) -> Path:
    """A scenes-like raw manifest: one spoken caption per scene (espeak-ng at 22.05 kHz when
    installed, else tones at 22.05 kHz), one stereo 44.1 kHz file; splits train/valid."""
    rng = np.random.default_rng(seed)
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True)
    espeak = shutil.which("espeak-ng")
    rows: list[dict[str, Any]] = []
    for i in range(n_scenes):
        a, b = rng.choice(COLORS, 2), rng.choice(SHAPES, 2)
        text = f"a {a[0]} {b[0]} {rng.choice(RELS)} a {a[1]} {b[1]}"
        path = wav_dir / f"s{i:03d}.wav"
        if espeak:
            subprocess.run([espeak, "-s", "170", "-w", str(path), text], check=True, capture_output=True)
        else:
            sf.write(path, _tone_speech(text, rng, 22050), 22050)
        if i == 1:  # stereo 44.1 kHz
            mono, sr = sf.read(path)
            stereo = np.stack([mono, 0.5 * mono], axis=1)
            sf.write(path, stereo, 44100 if sr == 22050 else sr)
        rows.append({"id": f"scene{i:03d}-0", "group": f"scene{i:03d}", "split": "train" if i < 16 else "valid",
                     "image": None, "speech": f"wav/{path.name}", "text": text, "scene": {"idx": i}})
    manifest = root / "manifest.jsonl.gz"
    write_manifest(manifest, rows)
    return manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_corpus(tmp_path_factory.mktemp("speech-corpus"))


@pytest.fixture(scope="module")
def fitted(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "speech"
    res = CliRunner().invoke(tmt_cli, ["tokenize", "speech", "fit", "--card", str(MFCC_CARD), "--manifest",
                                       str(corpus), "--split", "all", "--out", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["vocab_size"] == 200 and info["feature_dim"] == 39 and info["frames"] > 1000
    return out


def test_fit_writes_a_loadable_tokenizer(fitted: Path) -> None:
    assert sorted(p.name for p in fitted.iterdir()) == ["centroids.safetensors", "tokenizer.json"]
    tok = load_tokenizer(fitted)
    assert isinstance(tok, SpeechTokenizer)
    assert tok.vocab_size == 200 and tok.modality == "speech" and tok.name == "speech-mfcc-km200"
    assert tok.fingerprint == json.loads((fitted / "tokenizer.json").read_text())["fingerprint"]
    with pytest.raises(Exception, match="tmt vocoder synthesize"):
        tok.decode([np.array([1, 2])])


def test_encode_store_decodes_back_to_the_same_units(corpus: Path, fitted: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "store" / "all"
    for k in range(2):
        res = runner.invoke(tmt_cli, ["tokenize", "speech", "encode", "--tokenizer", str(fitted), "--manifest",
                                      str(corpus), "--store", str(store), "--shard", f"{k}/2", "--batch-size", "4"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["written"] == 10
    # rerunning a finished part is a no-op
    res = runner.invoke(tmt_cli, ["tokenize", "speech", "encode", "--tokenizer", str(fitted), "--manifest",
                                  str(corpus), "--store", str(store), "--shard", "1/2"])
    assert res.exit_code == 0 and json.loads(res.stdout)["already_complete"] is True
    res = runner.invoke(tmt_cli, ["tokenize", "speech", "merge", "--store", str(store), "--parts", "2"])
    assert res.exit_code == 0, res.output
    validate_store(store)
    st = TokenStore(store)
    tok = SpeechTokenizer.load(fitted)
    assert len(st) == 20 and st.fingerprints == {"speech": tok.fingerprint}
    assert st.index["tokenizers"]["speech"]["name"] == "speech-mfcc-km200"
    paths = [str(corpus.parent / m["speech_path"]) for m in st.iter_meta()]
    direct = tok.encode_with_durations(paths)
    frames = tok.frame_units(paths, batched=False)
    used = set()
    for i, ((units, runs), fr) in enumerate(zip(direct, frames, strict=True)):
        su, sd = st.tokens(i, "speech"), st.tokens(i, "durations")
        assert su.tolist() == units.tolist() and sd.tolist() == runs.tolist()
        assert expand_runs(su, sd).tolist() == fr.tolist()  # run lengths restore the 50 Hz units
        assert np.all(su[1:] != su[:-1]) and sd.min() >= 1
        meta = st.meta(i)
        assert abs(meta["duration_s"] - len(fr) / 50) < 0.05  # 50 Hz frames cover the audio
        assert meta["scene"] == {"idx": i} and meta["text"]
        used.update(su.tolist())
    assert len(used) > 50  # the units are spread over the codebook, not collapsed


def test_same_audio_same_units_and_split(corpus: Path, fitted: Path, tmp_path: Path) -> None:
    tok = SpeechTokenizer.load(fitted)
    wav, sr = sf.read(corpus.parent / "wav" / "s000.wav", dtype="float32")
    from tmt.core.audio import load_audio

    a = tok.encode([corpus.parent / "wav" / "s000.wav"])[0]
    b = tok.encode([load_audio(corpus.parent / "wav" / "s000.wav")])[0]
    c = tok.encode([(wav, sr)])[0]
    assert a.tolist() == b.tolist() == c.tolist()
    res = CliRunner().invoke(tmt_cli, ["tokenize", "speech", "encode", "--tokenizer", str(fitted), "--manifest",
                                       str(corpus), "--split", "valid", "--store", str(tmp_path / "valid")])
    assert res.exit_code == 0, res.output
    assert [m["split"] for m in TokenStore(tmp_path / "valid").iter_meta()] == ["valid"] * 4


def test_bad_audio_error_or_skip(corpus: Path, fitted: Path, tmp_path: Path) -> None:
    from tmt.store.manifest import read_manifest

    rows = read_manifest(corpus)[:5]
    for r in rows:
        r["speech"] = str(corpus.parent / r["speech"])
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    rows[2]["speech"] = str(tmp_path / "broken.wav")
    man = tmp_path / "m.jsonl.gz"
    write_manifest(man, rows)
    runner = CliRunner()
    args = ["tokenize", "speech", "encode", "--tokenizer", str(fitted), "--manifest", str(man), "--store"]
    res = runner.invoke(tmt_cli, [*args, str(tmp_path / "s1")])
    assert res.exit_code == 1 and "broken.wav" in res.output and "Traceback" not in res.output
    res = runner.invoke(tmt_cli, [*args, str(tmp_path / "s2"), "--skip-bad"])
    assert res.exit_code == 0, res.output
    counts = json.loads(res.stdout)
    assert counts["written"] == 4 and counts["skipped_bad"] == 1
    validate_store(tmp_path / "s2")


def test_fit_refuses_existing_and_hubert_without_weights(corpus: Path, fitted: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(tmt_cli, ["tokenize", "speech", "fit", "--card", str(MFCC_CARD), "--manifest", str(corpus),
                                  "--out", str(fitted)])
    assert res.exit_code == 1 and "--overwrite" in res.output
    card = ROOT / "tokenizers" / "speech-hubert-base-l6-km200.yaml"
    res = runner.invoke(tmt_cli, ["tokenize", "speech", "fit", "--card", str(card), "--manifest", str(corpus),
                                  "--out", str(fitted.parent / "h")])
    assert res.exit_code == 1 and "hubert.weights" in res.output
    res = runner.invoke(tmt_cli, ["tokenize", "speech", "fit", "--card", str(card), "--manifest", str(corpus),
                                  "--out", "x", "--set", "clusters=50", "--dump-config"])
    assert res.exit_code == 0 and "clusters: 50" in res.output and "layer: 6" in res.output


def test_shipped_cards() -> None:
    cards = {p.stem: load_speech_card(p) for p in sorted((ROOT / "tokenizers").glob("speech-*.yaml"))}
    assert set(cards) == {"speech-mfcc-km200", "speech-mfcc-km1000", "speech-mfcc-km2000",
                          "speech-hubert-base-l6-km200", "speech-hubert-base-l6-km1000", "speech-hubert-fbank-km1000"}
    assert cards["speech-mfcc-km200"].features == "mfcc" and cards["speech-mfcc-km200"].clusters == 200
    assert cards["speech-hubert-base-l6-km1000"].clusters == 1000 and cards["speech-mfcc-km1000"].clusters == 1000
    assert cards["speech-mfcc-km2000"].clusters == 2000
    # the same features, finer clusters
    assert cards["speech-mfcc-km1000"].mfcc == cards["speech-mfcc-km200"].mfcc == cards["speech-mfcc-km2000"].mfcc
    assert all(c.hubert.layer == 6 for n, c in cards.items() if "hubert-base" in n)
    assert cards["speech-hubert-fbank-km1000"].features == "hubert" and cards["speech-hubert-fbank-km1000"].clusters == 1000
    assert all(c.name == n for n, c in cards.items())


def test_tokenize_all_command(corpus: Path, fitted: Path, tmp_path: Path) -> None:
    from tmt.cli.tokenize_all import cli as all_cli

    runner = CliRunner()
    res = runner.invoke(all_cli, ["--manifest", str(corpus), "--store", str(tmp_path / "s")])
    assert res.exit_code != 0 and "at least one of --speech" in str(res.exception or res.output)
    res = runner.invoke(all_cli, ["--speech", str(fitted), "--manifest", str(corpus), "--split", "train",
                                  "--store", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    st = TokenStore(tmp_path / "s")
    assert len(st) == 16 and set(st.streams) == {"speech", "durations"}
    res = runner.invoke(all_cli, ["--image", str(fitted), "--manifest", str(corpus), "--store", str(tmp_path / "x")])
    assert res.exit_code != 0 and "is a speech tokenizer" in str(res.exception or res.output)


def test_scenes_fixture_fit_encode(tmp_path: Path) -> None:
    """The 20-scene corpus of tmt.testing: fit on train, encode train into a valid store whose
    speech rows give back the tokenizer's run-length units."""
    fixtures = pytest.importorskip("tmt.testing.fixtures")
    from tmt.corpora.tts import available_engines

    if not available_engines():
        pytest.skip("no TTS engine (espeak-ng / flite) for the scenes speech")
    corpus = fixtures.make_scenes_corpus(tmp_path, 20)
    manifest = corpus / "train.jsonl.gz"
    runner = CliRunner()
    tok_dir = tmp_path / "tok"
    res = runner.invoke(tmt_cli, ["tokenize", "speech", "fit", "--card", str(MFCC_CARD), "--manifest", str(manifest),
                                  "--out", str(tok_dir)])
    assert res.exit_code == 0, res.output
    store = tmp_path / "store"
    res = runner.invoke(tmt_cli, ["tokenize", "speech", "encode", "--tokenizer", str(tok_dir), "--manifest",
                                  str(manifest), "--store", str(store)])
    assert res.exit_code == 0, res.output
    validate_store(store)
    from tmt.store.manifest import media_path, read_manifest

    rows = {r["id"]: r for r in read_manifest(manifest)}
    st = TokenStore(store)
    tok = SpeechTokenizer.load(tok_dir)
    speech_rows = [i for i in range(len(st)) if "speech" in st.meta(i)["modalities"]]
    assert len(speech_rows) == sum(1 for r in rows.values() if r.get("speech")) > 20
    for i in speech_rows[:12]:
        row = rows[st.meta(i)["id"]]
        units, runs = tok.encode_with_durations([media_path(manifest, row["speech"])])[0]
        assert st.tokens(i, "speech").tolist() == units.tolist()
        assert st.tokens(i, "durations").tolist() == runs.tolist()
